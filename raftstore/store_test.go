package raftstore

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
)

// testLogWriter sends log lines to tb.Log until the test ends; raft's
// goroutines must not log into a finished test.
type testLogWriter struct {
	mu   sync.Mutex
	tb   testing.TB
	done bool
}

func (w *testLogWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.tb.Log(strings.TrimSuffix(string(p), "\n"))
	}
	return len(p), nil
}

// testLogger returns a logger writing to tb.Log. Make it before the stores
// that use it: cleanups run last-in first-out, so it outlives them.
func testLogger(tb testing.TB, level slog.Level) *slog.Logger {
	w := &testLogWriter{tb: tb}
	tb.Cleanup(func() {
		w.mu.Lock()
		w.done = true
		w.mu.Unlock()
	})
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))
}

// testStoreConfig is a single-node, self-bootstrapping store in dir with
// short timers.
func testStoreConfig(tb testing.TB, dir string, level slog.Level) Config {
	return Config{
		NodeID:             "n1",
		Dir:                dir,
		BindAddr:           "127.0.0.1:0",
		Bootstrap:          true,
		HeartbeatTimeout:   100 * time.Millisecond,
		ElectionTimeout:    100 * time.Millisecond,
		LeaderLeaseTimeout: 100 * time.Millisecond,
		Logger:             testLogger(tb, level),
	}
}

// openStore opens a store (closed at cleanup) and waits until it leads.
func openStore(tb testing.TB, s *Store) *Store {
	tb.Helper()
	if err := s.Open(); err != nil {
		tb.Fatalf("Open: %v", err)
	}
	tb.Cleanup(func() {
		if err := s.Close(); err != nil {
			tb.Errorf("Close: %v", err)
		}
	})
	eventually(tb, 10*time.Second, "leadership", s.IsLeader)
	return s
}

func mustStoreApply(tb testing.TB, s *Store, cmd *pb.Command) uint64 {
	tb.Helper()
	rev, err := s.Apply(context.Background(), cmd)
	if err != nil {
		tb.Fatalf("Apply(%v): %v", cmd, err)
	}
	return rev
}

// waitState polls until f holds want (the revision may have moved on).
func waitState(tb testing.TB, f *FSM, want registryState) {
	tb.Helper()
	var diff string
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := stateOf(f)
		if got.revision >= want.revision {
			got.revision = want.revision
			if diff = diffStates(want, got); diff == "" {
				return
			}
		} else {
			diff = fmt.Sprintf("revision %d, want %d", got.revision, want.revision)
		}
		if time.Now().After(deadline) {
			tb.Fatalf("state not restored after 10s:\n%s", diff)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestStoreApplyAndRead(t *testing.T) {
	cfg := testStoreConfig(t, t.TempDir(), slog.LevelInfo)
	s := New(cfg)
	ready := make(chan struct{})
	var once sync.Once
	s.OnLeader(func(ctx context.Context) { once.Do(func() { close(ready) }) })
	openStore(t, s)

	rev1 := mustStoreApply(t, s, sessionCreateCmd("s1", "n1"))
	in := withSession(testInstance("api", "1", "n1"), "s1")
	rev2 := mustStoreApply(t, s, registerCmd(in))
	if rev2 <= rev1 {
		t.Errorf("revisions %d then %d, want increasing", rev1, rev2)
	}
	// Apply returns once the local FSM has applied the entry.
	got := s.FSM().Instance("api", "1")
	if got == nil || got.ModRevision != rev2 || got.CreateRevision != rev2 || got.HealthSince == 0 || got.Address != in.Address {
		t.Fatalf("after Apply: %v, want the instance at revision %d with health_since set by the leader", got, rev2)
	}
	if r := s.FSM().Revision(); r < rev2 {
		t.Errorf("FSM revision %d < applied revision %d", r, rev2)
	}
	// The FSM's rejections come back to the proposer as they are.
	if _, err := s.Apply(context.Background(), deregisterCmd("api", "nope")); !errors.Is(err, ErrNotFound) {
		t.Errorf("deregister unknown: %v, want ErrNotFound", err)
	}
	if _, err := s.Apply(context.Background(), registerCmd(withSession(testInstance("api", "2", "n1"), "ghost"))); !errors.Is(err, ErrSessionRequired) {
		t.Errorf("register on an unknown session: %v, want ErrSessionRequired", err)
	}
	expired, cancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel()
	if _, err := s.Apply(expired, registerCmd(testInstance("api", "3", "n1"))); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Apply with an expired context: %v, want DeadlineExceeded", err)
	}

	select {
	case <-ready:
	case <-time.After(10 * time.Second):
		t.Fatal("OnLeader function did not run")
	}
	if addr, id := s.Leader(); id != "n1" || addr != s.RaftAddr() {
		t.Errorf("Leader() = %q, %q; want %q, n1", addr, id, s.RaftAddr())
	}
	if err := s.WaitLeader(context.Background()); err != nil {
		t.Errorf("WaitLeader: %v", err)
	}
	tests := []struct {
		c    pb.Consistency
		want error
	}{
		{pb.Consistency_STALE, nil},
		{pb.Consistency_DEFAULT, nil},
		{pb.Consistency_CONSISTENT, nil},
		{pb.Consistency(42), ErrInvalidArgument},
	}
	for _, tc := range tests {
		if err := s.CheckRead(tc.c); !errors.Is(err, tc.want) || (tc.want == nil && err != nil) {
			t.Errorf("CheckRead(%v) = %v, want %v", tc.c, err, tc.want)
		}
	}
}

// countConfigEntries counts the configuration entries in a store's log.
func countConfigEntries(t *testing.T, logs raft.LogStore) int {
	t.Helper()
	first, err := logs.FirstIndex()
	if err != nil {
		t.Fatal(err)
	}
	last, err := logs.LastIndex()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for i := first; i <= last && i > 0; i++ {
		var l raft.Log
		if err := logs.GetLog(i, &l); err != nil {
			t.Fatalf("GetLog(%d): %v", i, err)
		}
		if l.Type == raft.LogConfiguration {
			n++
		}
	}
	return n
}

func TestStoreRestartKeepsWrites(t *testing.T) {
	cfg := testStoreConfig(t, t.TempDir(), slog.LevelInfo)
	s := openStore(t, New(cfg))
	revs := make(map[*pb.InstanceRef]uint64)
	for i := range 200 {
		ref := instRef([]string{"api", "db"}[i%2], fmt.Sprintf("%03d", i))
		revs[ref] = mustStoreApply(t, s, registerCmd(testInstance(ref.Service, ref.Id, "n1")))
	}
	mustStoreApply(t, s, nodeUpsertCmd(&pb.Node{Name: "n1", GrpcAddress: "127.0.0.1:1"}))
	mustStoreApply(t, s, sessionCreateCmd("s1", "n1"))
	want := stateOf(s.FSM())
	configs := countConfigEntries(t, s.logs)
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	// Bootstrap is still set: a store with state must not bootstrap again.
	s2 := openStore(t, New(cfg))
	waitState(t, s2.FSM(), want)
	for ref, rev := range revs {
		if got := s2.FSM().Instance(ref.Service, ref.Id); got.GetCreateRevision() != rev || got.GetModRevision() != rev {
			t.Errorf("%s/%s after restart: revisions %d/%d, want %d", ref.Service, ref.Id, got.GetCreateRevision(), got.GetModRevision(), rev)
		}
	}
	if n := countConfigEntries(t, s2.logs); n != configs {
		t.Errorf("%d configuration entries after restart, %d before: the store bootstrapped again", n, configs)
	}
	if srv := s2.raft.GetConfiguration(); srv.Error() != nil || len(srv.Configuration().Servers) != 1 {
		t.Errorf("configuration after restart: %v, %v", srv.Configuration(), srv.Error())
	}
	// And it takes writes again.
	rev := mustStoreApply(t, s2, registerCmd(testInstance("api", "after", "n1")))
	if rev <= want.revision {
		t.Errorf("write after restart at revision %d, not after %d", rev, want.revision)
	}
}

func TestStoreSnapshotRestore(t *testing.T) {
	dir := t.TempDir()
	cfg := testStoreConfig(t, dir, slog.LevelInfo)
	cfg.SnapshotThreshold = 64
	cfg.TrailingLogs = 16
	s := openStore(t, New(cfg))
	mustStoreApply(t, s, nodeUpsertCmd(&pb.Node{Name: "n1"}))
	mustStoreApply(t, s, sessionCreateCmd("s1", "n1"))
	mustStoreApply(t, s, sessionCreateCmd("s2", "n1"))
	for i := range 500 {
		id := fmt.Sprint(i % 300) // later writes re-register
		var cmd *pb.Command
		switch {
		case i%50 == 49:
			cmd = deregisterCmd("api", fmt.Sprint(i%300-10))
		case i%10 == 3:
			cmd = setHealthCmd(pb.Health_CRITICAL, "down", instRef("api", fmt.Sprint(i%300-3)))
		default:
			cmd = registerCmd(withSession(testInstance("api", id, "n1"), []string{"", "s1", "s2"}[i%3]))
		}
		mustStoreApply(t, s, cmd)
	}
	snapRev := s.FSM().Revision()
	if err := s.raft.Snapshot().Error(); err != nil {
		t.Fatalf("snapshot: %v", err)
	}
	// Entries after the snapshot are replayed from the log.
	mustStoreApply(t, s, sessionDestroyCmd("s2"))
	mustStoreApply(t, s, registerCmd(testInstance("db", "tail", "n1")))
	want := stateOf(s.FSM())
	if first, err := s.logs.FirstIndex(); err != nil || first <= 1 {
		t.Fatalf("log first index %d, %v: the snapshot did not compact the log", first, err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s2 := New(cfg)
	if err := s2.Open(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s2.Close() })
	// raft restores the latest snapshot inside Open, before any election.
	if r := s2.FSM().Revision(); r < snapRev {
		t.Errorf("revision right after Open is %d, want the snapshot's %d", r, snapRev)
	}
	eventually(t, 10*time.Second, "leadership", s2.IsLeader)
	waitState(t, s2.FSM(), want)
	checkInvariants(t, s2.FSM())
}

// TestStoreOnLeaderStopsOnClose: the leader functions start once the store
// leads, their context ends on Close, and Close waits until they return.
func TestStoreOnLeaderStopsOnClose(t *testing.T) {
	cfg := testStoreConfig(t, t.TempDir(), slog.LevelInfo)
	s := New(cfg)
	started, cancelled, release := make(chan struct{}), make(chan struct{}), make(chan struct{})
	var startOnce, cancelOnce sync.Once
	s.OnLeader(func(ctx context.Context) {
		startOnce.Do(func() { close(started) })
		<-ctx.Done()
		cancelOnce.Do(func() { close(cancelled) })
		<-release // a slow cleanup
	})
	if err := s.Open(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	waitClosed(t, started, "OnLeader function to run after Open")
	if !s.IsLeader() {
		t.Error("OnLeader ran on a store that is not leader")
	}
	select {
	case <-cancelled:
		t.Fatal("OnLeader context ended while still leader")
	default:
	}

	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	waitClosed(t, cancelled, "Close to cancel the OnLeader context")
	// Close must now be stuck behind the leader function: watchLeadership
	// waits for it while Close waits for watchLeadership.
	eventually(t, 10*time.Second, "Close to wait for the leader function", func() bool {
		select {
		case err := <-closed:
			t.Fatalf("Close returned (%v) while a leader function was still running", err)
		default:
		}
		return goroutinesIn("", "raftstore.(*Store).watchLeadership(", "sync.(*WaitGroup).Wait(") == 1
	})
	close(release)
	select {
	case err := <-closed:
		if err != nil {
			t.Fatalf("Close: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return after the leader function did")
	}
}

func waitClosed(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatalf("timed out after 10s waiting for %s", what)
	}
}

func TestStoreClosed(t *testing.T) {
	cfg := testStoreConfig(t, t.TempDir(), slog.LevelInfo)
	s := openStore(t, New(cfg))
	mustStoreApply(t, s, registerCmd(testInstance("api", "1", "n1")))
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if s.IsLeader() {
		t.Error("IsLeader after Close")
	}
	// The replica stays readable.
	if s.FSM().Instance("api", "1") == nil {
		t.Error("FSM lost its state on Close")
	}
	// Closing a store that never opened is fine too.
	if err := New(cfg).Close(); err != nil {
		t.Errorf("Close of an unopened store: %v", err)
	}
}

// TestStoreApplyAfterClose: a write proposed after Close must fail with
// ErrShuttingDown, not wait forever. raft with BatchApplyCh may accept an
// entry into its buffered apply channel after shutdown and never answer
// its future (hashicorp/raft#498); each such Apply has even odds of taking
// that path, so several run at once and none may block.
func TestStoreApplyAfterClose(t *testing.T) {
	cfg := testStoreConfig(t, t.TempDir(), slog.LevelInfo)
	s := openStore(t, New(cfg))
	mustStoreApply(t, s, registerCmd(testInstance("api", "1", "n1")))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	const n = 16
	errs := make(chan error, n)
	for i := range n {
		go func() {
			_, err := s.Apply(context.Background(), registerCmd(testInstance("api", fmt.Sprint("after-", i), "n1")))
			errs <- err
		}()
	}
	deadline := time.After(10 * time.Second)
	for range n {
		select {
		case err := <-errs:
			if !errors.Is(err, ErrShuttingDown) {
				t.Errorf("Apply after Close: %v, want ErrShuttingDown", err)
			}
		case <-deadline:
			t.Fatal("Apply after Close still blocked after 10s")
		}
	}
}

// TestStoreApplyRacingClose closes a store under concurrent writes: every
// Apply returns (with one of the API's errors once the store is closing),
// and every acknowledged write is there after a restart.
func TestStoreApplyRacingClose(t *testing.T) {
	cfg := testStoreConfig(t, t.TempDir(), slog.LevelInfo)
	s := openStore(t, New(cfg))
	const writers = 8
	type result struct {
		acked []string
		err   error
	}
	results := make(chan result, writers)
	for w := range writers {
		go func() {
			var res result
			defer func() { results <- res }()
			for i := 0; ; i++ {
				id := fmt.Sprintf("w%d-%d", w, i)
				if _, err := s.Apply(context.Background(), registerCmd(testInstance("api", id, "n1"))); err != nil {
					res.err = err
					return
				}
				res.acked = append(res.acked, id)
			}
		}()
	}
	eventually(t, 10*time.Second, "writes under way", func() bool { return s.FSM().Revision() > 100 })
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	var acked []string
	deadline := time.After(10 * time.Second)
	for range writers {
		select {
		case res := <-results:
			if !errors.Is(res.err, ErrShuttingDown) && !errors.Is(res.err, ErrNoLeader) && !errors.Is(res.err, ErrNotLeader) {
				t.Errorf("Apply during Close: %v, want ErrShuttingDown, ErrNoLeader or ErrNotLeader", res.err)
			}
			acked = append(acked, res.acked...)
		case <-deadline:
			t.Fatal("Apply still blocked 10s after Close")
		}
	}

	s2 := openStore(t, New(cfg))
	eventually(t, 10*time.Second, "every acknowledged write replayed", func() bool {
		for _, id := range acked {
			if s2.FSM().Instance("api", id) == nil {
				return false
			}
		}
		return true
	})
	t.Logf("%d acknowledged writes survived the restart", len(acked))
}

func TestStoreOpenFails(t *testing.T) {
	tests := []struct {
		name  string
		edit  func(cfg *Config)
		setup func(t *testing.T, dir string) // prepares the data dir, which Open must then leave as it is
		want  error                          // nil: any error
	}{
		{name: "no node id", edit: func(c *Config) { c.NodeID = "" }, want: ErrInvalidArgument},
		{name: "raft.db is random bytes", setup: func(t *testing.T, dir string) {
			writeRandomFile(t, filepath.Join(dir, "raft.db"), 64<<10)
		}, want: ErrCorruptStore},
		{name: "raft.db is empty", setup: func(t *testing.T, dir string) {
			writeRandomFile(t, filepath.Join(dir, "raft.db"), 0)
		}, want: ErrCorruptStore},
		{name: "unspecified bind address without advertise address", edit: func(c *Config) { c.BindAddr = "0.0.0.0:0" }, want: ErrInvalidArgument},
		{name: "bad advertise address", edit: func(c *Config) { c.AdvertiseAddr = "no port" }, want: ErrInvalidArgument},
		{name: "missing dir", edit: func(c *Config) { c.Dir = filepath.Join(c.Dir, "missing") }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			cfg := testStoreConfig(t, dir, slog.LevelInfo)
			if tc.edit != nil {
				tc.edit(&cfg)
			}
			if tc.setup != nil {
				tc.setup(t, dir)
			}
			before := snapshotDir(t, dir)
			s := New(cfg)
			err := s.Open()
			if err == nil || (tc.want != nil && !errors.Is(err, tc.want)) {
				_ = s.Close()
				t.Fatalf("Open = %v, want an error wrapping %v", err, tc.want)
			}
			if err := s.Close(); err != nil {
				t.Errorf("Close after a failed Open: %v", err)
			}
			if after := snapshotDir(t, dir); tc.setup != nil && !maps.Equal(before, after) {
				t.Errorf("a failed Open changed the data dir: before %v, after %v",
					slices.Sorted(maps.Keys(before)), slices.Sorted(maps.Keys(after)))
			}
		})
	}
}

func writeRandomFile(t *testing.T, path string, n int) {
	t.Helper()
	b := make([]byte, n)
	_, _ = rand.Read(b)
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// snapshotDir reads every regular file under dir.
func snapshotDir(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := make(map[string]string)
	err := filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		out[path] = string(b)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// ---- benchmarks ----

// openBenchStore opens a leader store with fsync on and quiet logs.
func openBenchStore(b *testing.B) *Store {
	b.Helper()
	cfg := testStoreConfig(b, b.TempDir(), slog.LevelError)
	return openStore(b, New(cfg))
}

// benchInstance is a registration of about 200 bytes.
func benchInstance(service string, i int64) *pb.Instance {
	return &pb.Instance{
		Id:       fmt.Sprintf("instance-%08d", i),
		Service:  service,
		Node:     "n1",
		Address:  fmt.Sprintf("10.%d.%d.%d:8080", i>>16&0xff, i>>8&0xff, i&0xff),
		Weight:   100,
		Zone:     "eu-west-1a",
		Version:  "v1.24.3",
		Tags:     []string{"primary", "grpc", "canary"},
		Metadata: map[string]string{"owner": "payments-team", "build": "2024-05-01T10:00:00Z", "region": "eu-west-1", "commit": "9f1c2e7a4b6d"},
		Health:   pb.Health_PASSING,
	}
}

// BenchmarkApplyParallel measures committed registrations per second with
// 1, 16 and 64 concurrent proposers on one fsynced node. The proposers are
// plain goroutines rather than RunParallel, whose goroutine count is a
// multiple of GOMAXPROCS.
func BenchmarkApplyParallel(b *testing.B) {
	for _, c := range []int{1, 16, 64} {
		b.Run(fmt.Sprintf("c%d", c), func(b *testing.B) {
			s := openBenchStore(b)
			if size := proto.Size(registerCmd(benchInstance("bench", 1))); size < 190 || size > 230 {
				b.Fatalf("register command is %d bytes, want about 200", size)
			}
			var next atomic.Int64
			errs := make(chan error, c)
			var wg sync.WaitGroup
			b.ResetTimer()
			for range c {
				wg.Go(func() {
					for {
						i := next.Add(1)
						if i > int64(b.N) {
							return
						}
						if _, err := s.Apply(context.Background(), registerCmd(benchInstance("bench", i))); err != nil {
							errs <- err
							return
						}
					}
				})
			}
			wg.Wait()
			b.StopTimer()
			close(errs)
			for err := range errs {
				b.Fatal(err)
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "writes/s")
		})
	}
}

// BenchmarkWatchLatency measures, for sequential registrations on one
// fsynced node, the time from just before Apply to a watcher receiving the
// event.
func BenchmarkWatchLatency(b *testing.B) {
	s := openBenchStore(b)
	ctx, cancel := context.WithCancel(context.Background())
	w := s.FSM().Watch("latency", 0)
	if _, err := w.Next(ctx); err != nil { // the initial snapshot
		b.Fatal(err)
	}
	type arrival struct {
		id string
		at time.Time
	}
	arrivals := make(chan arrival, 64)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			resp, err := w.Next(ctx)
			if err != nil {
				return
			}
			now := time.Now()
			for _, e := range resp.Events {
				select {
				case arrivals <- arrival{e.Instance.Id, now}:
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	defer func() {
		cancel()
		<-done
	}()

	latencies := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := range b.N {
		inst := benchInstance("latency", int64(i))
		start := time.Now()
		if _, err := s.Apply(context.Background(), registerCmd(inst)); err != nil {
			b.Fatal(err)
		}
		for got := false; !got; {
			select {
			case a := <-arrivals:
				if a.id == inst.Id {
					latencies = append(latencies, a.at.Sub(start))
					got = true
				}
			case <-time.After(10 * time.Second):
				b.Fatalf("watcher did not receive %s", inst.Id)
			}
		}
	}
	b.StopTimer()
	slices.Sort(latencies)
	pct := func(p int) float64 {
		i := min(len(latencies)-1, len(latencies)*p/100)
		return float64(latencies[i].Nanoseconds()) / 1e3
	}
	b.ReportMetric(pct(50), "p50-us")
	b.ReportMetric(pct(99), "p99-us")
}
