package node

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/zrpcio/zrpc/internal/diskspace"
	"github.com/zrpcio/zrpc/node/grpcapi"
	"github.com/zrpcio/zrpc/raftstore"
	"github.com/zrpcio/zrpc/snapshot"
)

// snapshotsDirName is the directory of the data dir that holds scheduled
// snapshot files and the files being restored.
const snapshotsDirName = "snapshots"

// restoreTempPattern names a file the Snapshot service receives to
// restore; it is removed once the restore is done.
const restoreTempPattern = "restore-*.snap.tmp"

// openSnapshotsDir creates <data_dir>/snapshots and removes what a write
// or a restore cut short by a crash left in it.
func (n *Node) openSnapshotsDir() error {
	dir := filepath.Join(n.dir.path, snapshotsDirName)
	if err := ensureDir(dir); err != nil {
		return err
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("read %s: %w", dir, err)
	}
	for _, e := range entries {
		restoring, _ := filepath.Match(restoreTempPattern, e.Name())
		if restoring || snapshot.IsTemporary(e.Name()) {
			if err := os.Remove(filepath.Join(dir, e.Name())); err != nil {
				return fmt.Errorf("remove the unfinished snapshot file %s: %w", e.Name(), err)
			}
		}
	}
	return nil
}

// newSnapshots is the agent's Snapshot service.
func (n *Node) newSnapshots() *grpcapi.Snapshots {
	return grpcapi.NewSnapshots(grpcapi.SnapshotConfig{
		Agent: n.cfg.Name, Snapshots: apiSnapshots{n}, Cluster: apiCluster{n},
		TempDir: filepath.Join(n.dir.path, snapshotsDirName), RestorePattern: restoreTempPattern, Logger: n.log,
		FreeBytes: func() (uint64, error) { return diskspace.Free(n.dir.path) },
	})
}

// apiSnapshots is this agent's Raft store as the Snapshot service uses it.
type apiSnapshots struct{ n *Node }

func (a apiSnapshots) WriteSnapshot(ctx context.Context, w io.Writer) (snapshot.Header, error) {
	return a.n.store.WriteSnapshot(ctx, w)
}

func (a apiSnapshots) RestoreSnapshot(ctx context.Context, f io.ReadSeeker) (uint64, error) {
	return a.n.store.RestoreSnapshot(ctx, f)
}

func (a apiSnapshots) CheckSnapshotFile(f io.ReadSeeker) (snapshot.Header, error) {
	return raftstore.CheckSnapshotFileWithin(f, a.n.restoreLimits())
}

// restoreLimits are what a snapshot restored through the API must fit:
// the registry's limits, counted as registrations are, bootstrapped ACLs
// where this agent enforces them, and, under a soft
// memory limit, half of it for the state it loads (as
// raftstore.RestoreLimits estimates it, above the heap it takes), since
// the agent holds its state beside the one it loads until the restore
// is done.
func (n *Node) restoreLimits() raftstore.RestoreLimits {
	q := n.cfg.quota()
	q.RegistryOverheads = true // a check on this agent, not a command every replica applies
	limits := raftstore.RestoreLimits{Quota: q, ACL: n.cfg.ACL}
	if mem := debug.SetMemoryLimit(-1); mem < math.MaxInt64 {
		limits.HeapBytes = mem / 2
	}
	return limits
}

// Scheduled snapshots: every snapshot_interval each agent writes a
// snapshot file of its own replica to <data_dir>/snapshots, not only the
// leader. Every agent holds a full replica, so its copy is as complete as
// the leader's (up to replication lag), costs no network transfer, and
// the backups survive the loss of any one machine, the leader's included;
// Consul's snapshot agent, by contrast, saves from the leader to one place.

// scheduledName matches the files the scheduler writes:
// <UTC time>-<raft index>.snap, which sort by time.
var scheduledName = regexp.MustCompile(`^\d{8}T\d{6}\.\d{3}Z-\d+\.snap$`)

// snapshotScheduler writes, verifies and rotates scheduled snapshots. It
// runs in one goroutine the node owns (run).
type snapshotScheduler struct {
	dir      string
	interval time.Duration
	retain   int
	// save writes a snapshot file of the replica (raftstore.Store).
	save func(ctx context.Context, w io.Writer) (snapshot.Header, error)
	// check verifies a written file (hash and scratch load).
	check   func(f io.ReadSeeker) (snapshot.Header, error)
	metrics *snapshotMetrics
	log     *slog.Logger
}

func (n *Node) newSnapshotScheduler() *snapshotScheduler {
	return &snapshotScheduler{
		dir: filepath.Join(n.dir.path, snapshotsDirName), interval: n.cfg.SnapshotInterval, retain: n.cfg.SnapshotRetain,
		save: n.store.WriteSnapshot, check: raftstore.CheckSnapshotFile, metrics: n.metrics.snapshots, log: n.log,
	}
}

// run takes a snapshot every interval until ctx ends.
func (s *snapshotScheduler) run(ctx context.Context) {
	t := time.NewTicker(s.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if _, err := s.take(ctx); err != nil && ctx.Err() == nil {
				s.log.Warn("scheduled snapshot failed; the previous ones are kept", "dir", s.dir, "err", err)
			}
		}
	}
}

// take writes one verified snapshot file, then deletes the oldest beyond
// retain, and returns the new file's path.
func (s *snapshotScheduler) take(ctx context.Context) (string, error) {
	path, err := snapshot.WriteFileIn(s.dir,
		func(w io.Writer) (snapshot.Header, error) { return s.save(ctx, w) },
		func(h snapshot.Header) string {
			return fmt.Sprintf("%s-%d.snap", h.Created.UTC().Format("20060102T150405.000Z"), h.Index)
		},
		func(tmp string) error {
			f, err := os.Open(tmp)
			if err != nil {
				return err
			}
			defer f.Close()
			_, err = s.check(f)
			return err
		})
	var unsynced *snapshot.DirSyncError
	switch {
	case errors.As(err, &unsynced):
		// The file is there, complete and verified; only the rename may
		// not survive a power loss yet. It counts, and rotation goes on.
		s.log.Warn("wrote a scheduled snapshot, but could not sync its directory", "path", path, "err", unsynced.Err)
	case err != nil:
		s.metrics.observe(false, 0)
		return "", err
	}
	var size int64
	if fi, err := os.Stat(path); err == nil {
		size = fi.Size()
	}
	s.metrics.observe(true, size)
	s.log.Info("wrote a scheduled snapshot", "path", path, "bytes", size)
	return path, s.rotate()
}

// rotate deletes the oldest scheduled snapshots beyond retain.
func (s *snapshotScheduler) rotate() error {
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return fmt.Errorf("list %s: %w", s.dir, err)
	}
	var names []string
	for _, e := range entries {
		if e.Type().IsRegular() && scheduledName.MatchString(e.Name()) {
			names = append(names, e.Name())
		}
	}
	// Oldest by Raft index, which only grows on this agent, rather than
	// by the time in the name: after the clock is set back a new file
	// sorts before the old ones, and would be the one deleted.
	slices.SortFunc(names, func(a, b string) int {
		return cmp.Or(cmp.Compare(scheduledIndex(a), scheduledIndex(b)), strings.Compare(a, b))
	})
	var errs []string
	for len(names) > s.retain {
		if err := os.Remove(filepath.Join(s.dir, names[0])); err != nil {
			errs = append(errs, err.Error())
		}
		names = names[1:]
	}
	if len(errs) > 0 {
		return fmt.Errorf("delete old snapshots: %s", strings.Join(errs, "; "))
	}
	return nil
}

// scheduledIndex is the Raft index in a name scheduledName matches.
func scheduledIndex(name string) uint64 {
	name = strings.TrimSuffix(name, ".snap")
	index, _ := strconv.ParseUint(name[strings.LastIndexByte(name, '-')+1:], 10, 64)
	return index
}

// snapshotMetrics count the scheduled snapshots.
type snapshotMetrics struct {
	saves       *prometheus.CounterVec
	lastSuccess prometheus.Gauge
	lastBytes   prometheus.Gauge
	now         func() time.Time
}

func newSnapshotMetrics() *snapshotMetrics {
	m := &snapshotMetrics{
		saves: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "zrpc_snapshot_saves_total",
			Help: "Scheduled snapshots this agent attempted, by outcome (success: written and verified; failure: nothing kept).",
		}, []string{"outcome"}),
		lastSuccess: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "zrpc_snapshot_last_success_timestamp_seconds",
			Help: "Unix time of this agent's last verified scheduled snapshot (0: none since start).",
		}),
		lastBytes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "zrpc_snapshot_last_bytes",
			Help: "Size in bytes of this agent's last verified scheduled snapshot file.",
		}),
		now: time.Now,
	}
	m.saves.WithLabelValues("success")
	m.saves.WithLabelValues("failure")
	return m
}

func (m *snapshotMetrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.saves, m.lastSuccess, m.lastBytes}
}

// observe records one scheduled snapshot; m may be nil.
func (m *snapshotMetrics) observe(ok bool, bytes int64) {
	if m == nil {
		return
	}
	if !ok {
		m.saves.WithLabelValues("failure").Inc()
		return
	}
	m.saves.WithLabelValues("success").Inc()
	m.lastSuccess.Set(float64(m.now().UnixNano()) / 1e9)
	m.lastBytes.Set(float64(bytes))
}
