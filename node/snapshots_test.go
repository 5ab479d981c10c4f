package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/internal/testlog"
	"github.com/zrpcio/zrpc/snapshot"
)

// fakeSnapshots is a scheduler over a fake replica: each save writes a
// file at the next index, a minute after the last.
type fakeSnapshots struct {
	index   uint64
	created time.Time
}

func (f *fakeSnapshots) save(_ context.Context, w io.Writer) (snapshot.Header, error) {
	f.index += 10
	f.created = f.created.Add(time.Minute)
	state := []byte(fmt.Sprintf("state at %d", f.index))
	sw, err := snapshot.NewWriter(w, snapshot.Header{Index: f.index, Term: 1, Revision: f.index, Created: f.created, Size: uint64(len(state))})
	if err != nil {
		return snapshot.Header{}, err
	}
	if _, err := sw.Write(state); err != nil {
		return snapshot.Header{}, err
	}
	return sw.Header(), sw.Close()
}

func verifyOnly(f io.ReadSeeker) (snapshot.Header, error) {
	h, _, err := snapshot.Verify(f)
	return h, err
}

func newTestScheduler(t *testing.T, retain int) (*snapshotScheduler, *fakeSnapshots) {
	fake := &fakeSnapshots{created: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	return &snapshotScheduler{
		dir: t.TempDir(), interval: time.Hour, retain: retain,
		save: fake.save, check: verifyOnly, metrics: newSnapshotMetrics(), log: testlog.New(t, "n1"),
	}, fake
}

func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	slices.Sort(names)
	return names
}

// Scheduled snapshots are named by time and index, verified, and the
// oldest beyond retain are deleted.
func TestSnapshotSchedulerWritesVerifiesAndRotates(t *testing.T) {
	s, _ := newTestScheduler(t, 3)
	for range 5 {
		if _, err := s.take(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	want := []string{"20260102T030705.000Z-30.snap", "20260102T030805.000Z-40.snap", "20260102T030905.000Z-50.snap"}
	if got := dirNames(t, s.dir); !slices.Equal(got, want) {
		t.Fatalf("snapshots dir holds %v, want %v", got, want)
	}
	for _, name := range want {
		f, err := os.Open(filepath.Join(s.dir, name))
		if err != nil {
			t.Fatal(err)
		}
		_, _, err = snapshot.Verify(f)
		f.Close()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
	if n := metricValue(t, s.metrics.saves.WithLabelValues("success")); n != 5 {
		t.Fatalf("zrpc_snapshot_saves_total{outcome=success} = %v, want 5", n)
	}
	fi, _ := os.Stat(filepath.Join(s.dir, want[2]))
	if b := metricValue(t, s.metrics.lastBytes); b != float64(fi.Size()) {
		t.Fatalf("zrpc_snapshot_last_bytes = %v, want %d", b, fi.Size())
	}
	if ts := metricValue(t, s.metrics.lastSuccess); ts < float64(time.Now().Add(-time.Minute).Unix()) {
		t.Fatalf("zrpc_snapshot_last_success_timestamp_seconds = %v, not recent", ts)
	}
}

// After the clock is set back, the files written since sort before the
// older ones by name: rotation still deletes the oldest by Raft index and
// keeps the newest.
func TestSnapshotSchedulerKeepsTheNewestAfterTheClockGoesBack(t *testing.T) {
	s, fake := newTestScheduler(t, 2)
	for range 2 {
		if _, err := s.take(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	fake.created = fake.created.Add(-time.Hour)
	newest, err := s.take(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"20260102T020705.000Z-30.snap", "20260102T030605.000Z-20.snap"}
	if got := dirNames(t, s.dir); !slices.Equal(got, want) {
		t.Fatalf("snapshots dir holds %v, want %v (the newest is %s)", got, want, filepath.Base(newest))
	}
}

// A snapshot that fails verification is not kept, does not push an older
// one out, and is counted as a failure.
func TestSnapshotSchedulerKeepsOldFilesWhenANewOneFailsVerification(t *testing.T) {
	s, _ := newTestScheduler(t, 1)
	if _, err := s.take(context.Background()); err != nil {
		t.Fatal(err)
	}
	before := dirNames(t, s.dir)
	s.check = func(io.ReadSeeker) (snapshot.Header, error) {
		return snapshot.Header{}, errors.New("state does not load")
	}
	if _, err := s.take(context.Background()); err == nil || !strings.Contains(err.Error(), "state does not load") {
		t.Fatalf("take = %v, want the verification's error", err)
	}
	if got := dirNames(t, s.dir); !slices.Equal(got, before) {
		t.Fatalf("after a failed snapshot the dir holds %v, want %v", got, before)
	}
	if n := metricValue(t, s.metrics.saves.WithLabelValues("failure")); n != 1 {
		t.Fatalf("zrpc_snapshot_saves_total{outcome=failure} = %v, want 1", n)
	}
}

// run takes snapshots every interval until its context ends, and returns.
func TestSnapshotSchedulerRunsEveryIntervalUntilStopped(t *testing.T) {
	s, _ := newTestScheduler(t, 2)
	s.interval = 5 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.run(ctx)
	}()
	waitFor(t, 10*time.Second, "three scheduled snapshots", func() bool {
		return metricValue(t, s.metrics.saves.WithLabelValues("success")) >= 3
	})
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("run did not return after its context ended")
	}
	if got := dirNames(t, s.dir); len(got) != 2 {
		t.Fatalf("retain 2 left %v", got)
	}
}

// An agent's scheduler saves its real replica: the file loads and counts
// the instances registered.
func TestScheduledSnapshotOfARealAgentHoldsItsRegistry(t *testing.T) {
	n := startNode(t, testConfig(t))
	_, c := dial(t, n.GRPCAddr())
	for i := range 30 {
		if _, err := c.Register(ctxT(t), &pb.RegisterRequest{Instance: inst("api", fmt.Sprint(i), fmt.Sprintf("127.0.0.1:%d", 9000+i))}); err != nil {
			t.Fatal(err)
		}
	}
	s := n.newSnapshotScheduler()
	path, err := s.take(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(path, filepath.Join(n.cfg.DataDir, snapshotsDirName)) {
		t.Fatalf("snapshot written to %s, not under the data dir's snapshots/", path)
	}
	info, err := snapshot.InspectFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if info.Instances != 30 || info.Services != 1 || info.Revision == 0 {
		t.Fatalf("scheduled snapshot holds %+v, want 30 instances of 1 service", info)
	}
	// A leftover of a write cut short is removed at the next start.
	leftover := filepath.Join(filepath.Dir(path), ".snapshot.tmp-123")
	if err := os.WriteFile(leftover, []byte("partial"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := n.openSnapshotsDir(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(leftover); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the unfinished file is still there (%v)", err)
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("the finished snapshot is gone: %v", err)
	}
}

// metricValue reads a counter's or gauge's value.
func metricValue(t *testing.T, m prometheus.Collector) float64 {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(m)
	families, err := reg.Gather()
	if err != nil || len(families) != 1 || len(families[0].GetMetric()) != 1 {
		t.Fatalf("gather %v: %d families (%v)", m, len(families), err)
	}
	v := families[0].GetMetric()[0]
	if c := v.GetCounter(); c != nil {
		return c.GetValue()
	}
	return v.GetGauge().GetValue()
}

// TestDataDirFreeBytesIsTheFileSystemsFreeSpace: the metric is the free
// space statfs reports for the data dir's file system (within what other
// writers change between the two reads), and a data dir that is gone
// fails the scrape naming it rather than reporting 0 free.
func TestDataDirFreeBytesIsTheFileSystemsFreeSpace(t *testing.T) {
	dir := t.TempDir()
	c := &freeSpaceCollector{dir: dir, desc: prometheus.NewDesc("zrpc_data_dir_free_bytes", "free", nil, nil)}
	got := metricValue(t, c)
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	want := float64(st.Bavail) * float64(st.Bsize)
	if got <= 0 || math.Abs(got-want) > 64<<20 {
		t.Fatalf("free bytes %.0f, statfs says %.0f", got, want)
	}

	c.dir = filepath.Join(dir, "gone")
	reg := prometheus.NewRegistry()
	reg.MustRegister(c)
	if _, err := reg.Gather(); err == nil || !strings.Contains(err.Error(), "gone") {
		t.Fatalf("scrape with the data dir gone: %v, want an error naming it", err)
	}
}
