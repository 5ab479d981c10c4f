package raftstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	walfs "github.com/hashicorp/raft-wal/fs"
	waltypes "github.com/hashicorp/raft-wal/types"

	"github.com/zrpcio/zrpc/internal/testwait"
)

// holdDisk is the operating system's file system whose fsyncs can be
// held (until released) or failed, and which remembers what was written
// since each file's last fsync (what a power loss may take).
type holdDisk struct {
	waltypes.VFS
	mu       sync.Mutex
	hold     chan struct{}         // when set, a Sync waits until it is closed
	held     chan struct{}         // closed once a Sync waits
	fail     error                 // when set, Sync fails with it
	off      bool                  // powered off: writes and fsyncs fail
	syncs    atomic.Int64          // fsyncs that reached the disk
	unsynced map[string][][2]int64 // path: offset and length of each write since its last fsync
}

func newHoldDisk() *holdDisk {
	d := &holdDisk{unsynced: map[string][][2]int64{}}
	d.VFS = filesFS{walfs.New(), func(path string, f waltypes.WritableFile) waltypes.WritableFile { return holdFile{f, d, path} }}
	return d
}

// tearUnsynced does to every file what a power loss may: of each write
// since the file's last fsync, the first half never reached the disk
// (zeros), the rest did.
func (d *holdDisk) tearUnsynced(t *testing.T) (torn int) {
	t.Helper()
	d.mu.Lock()
	defer d.mu.Unlock()
	for path, writes := range d.unsynced {
		f, err := os.OpenFile(path, os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, w := range writes {
			if _, err := f.WriteAt(make([]byte, w[1]/2), w[0]); err != nil {
				t.Fatal(err)
			}
			torn++
		}
		f.Close()
	}
	clear(d.unsynced)
	return torn
}

// arm holds the next fsyncs; the channel it returns is closed once one
// waits.
func (d *holdDisk) arm() <-chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.hold, d.held = make(chan struct{}), make(chan struct{})
	return d.held
}

// release lets the held fsyncs (and later ones) through.
func (d *holdDisk) release() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.hold != nil {
		close(d.hold)
		d.hold = nil
	}
}

func (d *holdDisk) failWith(err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.fail = err
}

// errPowerOff is what a powered-off disk answers.
var errPowerOff = errors.New("power lost")

// powerOff does what a power loss does to the disk: of each write since
// its file's last fsync only the second half remains (tearUnsynced), and
// nothing written or fsynced later reaches it. Held fsyncs are released
// and fail. It returns how many writes it tore.
func (d *holdDisk) powerOff(t *testing.T) (torn int) {
	t.Helper()
	d.mu.Lock()
	d.off = true
	d.fail = errPowerOff
	d.mu.Unlock()
	torn = d.tearUnsynced(t)
	d.release()
	return torn
}

type holdFile struct {
	waltypes.WritableFile
	d    *holdDisk
	path string
}

func (f holdFile) WriteAt(p []byte, off int64) (int, error) {
	f.d.mu.Lock()
	if f.d.off {
		f.d.mu.Unlock()
		return 0, errPowerOff
	}
	f.d.mu.Unlock()
	n, err := f.WritableFile.WriteAt(p, off)
	f.d.mu.Lock()
	f.d.unsynced[f.path] = append(f.d.unsynced[f.path], [2]int64{off, int64(n)})
	f.d.mu.Unlock()
	return n, err
}

func (f holdFile) Sync() error {
	d := f.d
	d.mu.Lock()
	hold, held, fail := d.hold, d.held, d.fail
	if hold != nil && held != nil {
		close(held)
		d.held = nil
	}
	d.mu.Unlock()
	if hold != nil {
		<-hold
		d.mu.Lock()
		fail = d.fail
		d.mu.Unlock()
	}
	if fail != nil {
		return fail
	}
	d.syncs.Add(1)
	d.mu.Lock()
	delete(d.unsynced, f.path) // before the fsync: a write during it stays unsynced
	d.mu.Unlock()
	return f.WritableFile.Sync()
}

func commandLogs(from, to uint64) []*raft.Log {
	var logs []*raft.Log
	for i := from; i <= to; i++ {
		logs = append(logs, &raft.Log{Index: i, Term: 1, Type: raft.LogCommand, Data: []byte("entry")})
	}
	return logs
}

// async runs f in a goroutine; the channel gets its result.
func async(f func() error) <-chan error {
	c := make(chan error, 1)
	go func() { c <- f() }()
	return c
}

// notYet fails t if c delivers within d.
func notYet[T any](t *testing.T, c <-chan T, d time.Duration, what string) {
	t.Helper()
	select {
	case v := <-c:
		t.Fatalf("%s: done (%v) while the fsync was held", what, v)
	case <-time.After(d):
	}
}

func recvWithin[T any](t *testing.T, c <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-c:
		return v
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: not done after 10 s", what)
	}
	var zero T
	return zero
}

// TestLeaderLogStoreReturnsBeforeItsFsync: a leader's batch of commands
// is written and StoreLogs returns while its fsync is still running; the
// log counts as durable up to it only once the fsync ends, and the next
// batch waits for that fsync before it is written. A follower's batch, or
// a leader's configuration entry, returns only once fsynced.
func TestLeaderLogStoreReturnsBeforeItsFsync(t *testing.T) {
	disk := newHoldDisk()
	l, err := openLog(logOptions{Dir: t.TempDir(), SegmentSize: 64 << 10, fs: disk})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		disk.release()
		l.Close()
	}()
	var leading atomic.Bool
	l.ahead.setLeader(leading.Load)
	if err := l.StoreLogs(commandLogs(1, 2)); err != nil {
		t.Fatal(err)
	}
	if got := l.ahead.durableIndex(); got != 2 {
		t.Fatalf("durable index %d after a follower's store of 1-2, want 2", got)
	}

	// A follower's store waits for its fsync.
	held := disk.arm()
	follower := async(func() error { return l.StoreLogs(commandLogs(3, 3)) })
	<-held
	notYet(t, follower, 100*time.Millisecond, "a follower's StoreLogs")
	disk.release()
	if err := recvWithin(t, follower, "a follower's StoreLogs"); err != nil {
		t.Fatal(err)
	}

	// The leader's does not.
	leading.Store(true)
	held = disk.arm()
	if err := recvWithin(t, async(func() error { return l.StoreLogs(commandLogs(4, 5)) }), "the leader's StoreLogs"); err != nil {
		t.Fatal(err)
	}
	<-held // its fsync runs now
	if got, _ := l.LastIndex(); got != 5 {
		t.Fatalf("last index %d, want 5: the batch is readable once written", got)
	}
	if got := l.ahead.durableIndex(); got != 3 {
		t.Fatalf("durable index %d while 4-5's fsync is held, want 3", got)
	}
	durable := async(func() error {
		if !l.ahead.waitDurable(5) {
			return errors.New("waitDurable(5) = false")
		}
		return nil
	})
	next := async(func() error { return l.StoreLogs(commandLogs(6, 6)) })
	notYet(t, durable, 100*time.Millisecond, "waitDurable(5)")
	notYet(t, next, 10*time.Millisecond, "the next StoreLogs")
	disk.release()
	if err := recvWithin(t, durable, "waitDurable(5)"); err != nil {
		t.Fatal(err)
	}
	if err := recvWithin(t, next, "the next StoreLogs"); err != nil {
		t.Fatal(err)
	}
	if !l.ahead.waitDurable(6) {
		t.Fatal("waitDurable(6) = false")
	}

	// A configuration entry is fsynced before StoreLogs returns, leader
	// or not.
	held = disk.arm()
	conf := async(func() error {
		return l.StoreLogs([]*raft.Log{{Index: 7, Term: 1, Type: raft.LogConfiguration}})
	})
	<-held
	notYet(t, conf, 100*time.Millisecond, "the leader's StoreLogs of a configuration entry")
	disk.release()
	if err := recvWithin(t, conf, "the leader's StoreLogs of a configuration entry"); err != nil {
		t.Fatal(err)
	}
	if got := l.ahead.durableIndex(); got != 7 {
		t.Fatalf("durable index %d, want 7", got)
	}
}

// TestFailedBackgroundFsyncIsNeverCountedDurable: when the leader's
// background fsync fails, the log is not durable past the batch before,
// waiting for it ends with false (the FSM applies nothing of it), the
// store is told, and the next append fails with the disk's error.
func TestFailedBackgroundFsyncIsNeverCountedDurable(t *testing.T) {
	disk := newHoldDisk()
	l, err := openLog(logOptions{Dir: t.TempDir(), SegmentSize: 64 << 10, fs: disk})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	l.ahead.setLeader(func() bool { return true })
	failed := make(chan error, 1)
	l.ahead.onFail = func(err error) { failed <- err }
	if err := l.StoreLogs(commandLogs(1, 2)); err != nil {
		t.Fatal(err)
	}
	if !l.ahead.waitDurable(2) {
		t.Fatal("waitDurable(2) = false with a healthy disk")
	}
	eio := errors.New("input/output error")
	disk.failWith(eio)
	if err := l.StoreLogs(commandLogs(3, 3)); err != nil {
		t.Fatalf("the leader's StoreLogs returned %v before its fsync ran", err)
	}
	if err := recvWithin(t, failed, "the store told of the failed fsync"); !errors.Is(err, eio) {
		t.Fatalf("onFail got %v, want the disk's error", err)
	}
	if l.ahead.waitDurable(3) {
		t.Fatal("waitDurable(3) = true after its fsync failed")
	}
	if got := l.ahead.durableIndex(); got != 2 {
		t.Fatalf("durable index %d, want 2", got)
	}
	if err := l.StoreLogs(commandLogs(4, 4)); !errors.Is(err, eio) {
		t.Fatalf("the next StoreLogs = %v, want the failed fsync's error", err)
	}
}

// recordedFile and recordedMeta note, in order, the fsyncs and meta
// commits they see.
type recordedFile struct {
	waltypes.WritableFile
	seen *[]string
}

func (f recordedFile) Sync() error { *f.seen = append(*f.seen, "fsync segment"); return nil }

type recordedMeta struct {
	waltypes.MetaStore
	seen *[]string
}

func (m recordedMeta) CommitState(waltypes.PersistentState) error {
	*m.seen = append(*m.seen, "commit meta")
	return nil
}

// TestMetaCommitFsyncsDeferredSegmentsFirst: raft-wal records a rotation
// (the old segment sealed) in its meta store; a segment whose fsync was
// deferred is fsynced before that commit, so the meta never names a seal
// that a power loss could take back.
func TestMetaCommitFsyncsDeferredSegmentsFirst(t *testing.T) {
	var seen []string
	a := newSyncAhead(0)
	f := &aheadFile{WritableFile: recordedFile{seen: &seen}, a: a}
	a.deferring.Store(true)
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	a.deferring.Store(false)
	if len(seen) != 0 {
		t.Fatalf("a deferred Sync reached the file: %v", seen)
	}
	m := aheadMeta{MetaStore: recordedMeta{seen: &seen}, a: a}
	if err := m.CommitState(waltypes.PersistentState{}); err != nil {
		t.Fatal(err)
	}
	if want := []string{"fsync segment", "commit meta"}; fmt.Sprint(seen) != fmt.Sprint(want) {
		t.Fatalf("saw %v, want %v", seen, want)
	}
}

// TestLeaderLogRotatesAndReopensWhole: a leader's appends, fsynced in the
// background, across many segment rotations; the log closes and reopens
// (passing the start-up check) with every entry.
func TestLeaderLogRotatesAndReopensWhole(t *testing.T) {
	dir := t.TempDir()
	l, err := openLog(logOptions{Dir: dir, SegmentSize: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	l.ahead.setLeader(func() bool { return true })
	const batches, per = 200, 5
	payload := bytes.Repeat([]byte("x"), 600)
	for b := range uint64(batches) {
		logs := commandLogs(b*per+1, b*per+per)
		for _, e := range logs {
			e.Data = payload
		}
		if err := l.StoreLogs(logs); err != nil {
			t.Fatalf("batch %d: %v", b, err)
		}
	}
	if !l.ahead.waitDurable(batches * per) {
		t.Fatal("waitDurable = false")
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	segs, _ := filepath.Glob(filepath.Join(dir, "*"+walSegmentExt))
	if len(segs) < 5 {
		t.Fatalf("%d segment files, want the appends to have rotated several times", len(segs))
	}
	l, err = openLog(logOptions{Dir: dir, SegmentSize: 64 << 10})
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	defer l.Close()
	first, _ := l.FirstIndex()
	last, _ := l.LastIndex()
	if first != 1 || last != batches*per {
		t.Fatalf("reopened log holds %d-%d, want 1-%d", first, last, batches*per)
	}
	var e raft.Log
	for i := first; i <= last; i++ {
		if err := l.GetLog(i, &e); err != nil || !bytes.Equal(e.Data, payload) {
			t.Fatalf("entry %d: %v (%d bytes)", i, err, len(e.Data))
		}
	}
	if got := l.ahead.durableIndex(); got != last {
		t.Fatalf("reopened log durable to %d, want %d", got, last)
	}
}

// TestNothingIsAppliedBeforeTheLeadersFsync: three agents; the leader's
// fsync of a write is held. The followers still receive and store the
// entry, and raft on the leader counts it committed (leader and
// followers, in parallel, as etcd does); yet no replica applies it, no
// follower is told a commit index that covers it, none reports it as
// committed to a restarting peer (commit_seen), and the write is not
// answered, until the leader's fsync ends. Then every replica applies it.
func TestNothingIsAppliedBeforeTheLeadersFsync(t *testing.T) {
	disks := make([]*holdDisk, 3)
	stores := openCluster(t, 3, func(i int, cfg *Config) {
		disks[i] = newHoldDisk()
		cfg.logFS = disks[i]
		// No election while the fsync is held on a loaded machine.
		cfg.HeartbeatTimeout, cfg.ElectionTimeout, cfg.LeaderLeaseTimeout = time.Second, time.Second, 500*time.Millisecond
	})
	leader := leaderOf(t, stores)
	mustStoreApply(t, leader, registerCmd(testInstance("api", "warm", "n1")))
	var disk *holdDisk
	for i, s := range stores {
		if s == leader {
			disk = disks[i]
		}
	}
	held := disk.arm()
	defer disk.release()
	write := async(func() error {
		_, err := leader.Apply(t.Context(), registerCmd(testInstance("api", "held", "n1")))
		return err
	})
	recvWithin(t, held, "the leader's fsync of the write")
	idx, err := leader.logs.LastIndex()
	if err != nil {
		t.Fatal(err)
	}
	testwait.For(t, 10*time.Second, "the followers store the entry and raft commits it", func() bool {
		if leader.raft.CommitIndex() < idx {
			return false
		}
		for _, s := range stores {
			if last, _ := s.logs.LastIndex(); last < idx {
				return false
			}
		}
		return true
	})
	// Long enough for raft to tell the followers its commit index
	// (CommitTimeout) several times over.
	notYet(t, write, 3*leader.cfg.CommitTimeout, "the write")
	for _, s := range stores {
		if rev := s.FSM().Revision(); rev >= idx {
			t.Errorf("%s applied through %d before the leader's fsync of %d ended", s.cfg.NodeID, rev, idx)
		}
		if s != leader && s.raft.CommitIndex() >= idx {
			t.Errorf("follower %s was told commit index %d before the leader's fsync of %d ended", s.cfg.NodeID, s.raft.CommitIndex(), idx)
		}
		if seen := s.Status().CommitSeen; seen >= idx {
			t.Errorf("%s tells a restarting peer commit_seen %d before the leader's fsync of %d ended", s.cfg.NodeID, seen, idx)
		}
	}
	if !leader.IsLeader() {
		t.Fatal("leadership moved while the fsync was held; the checks above are void")
	}
	disk.release()
	if err := recvWithin(t, write, "the write"); err != nil {
		t.Fatal(err)
	}
	testwait.For(t, 10*time.Second, "every replica applies the write", func() bool {
		for _, s := range stores {
			if s.FSM().Revision() < idx {
				return false
			}
		}
		return true
	})
}

// TestLeaderWhoseFsyncFailsStopsWithoutApplying: the leader's background
// fsync of a write fails (a failing disk). It applies nothing of it and
// stops its Raft node; the write is answered with an error, the other two
// agents elect a leader and go on taking writes.
func TestLeaderWhoseFsyncFailsStopsWithoutApplying(t *testing.T) {
	disks := make([]*holdDisk, 3)
	stores := openCluster(t, 3, func(i int, cfg *Config) {
		disks[i] = newHoldDisk()
		cfg.logFS = disks[i]
	})
	leader := leaderOf(t, stores)
	mustStoreApply(t, leader, registerCmd(testInstance("api", "warm", "n1")))
	var rest []*Store
	for i, s := range stores {
		if s == leader {
			disks[i].failWith(errors.New("input/output error"))
		} else {
			rest = append(rest, s)
		}
	}
	before := leader.FSM().Revision()
	write := async(func() error {
		_, err := leader.Apply(t.Context(), registerCmd(testInstance("api", "lost", "n1")))
		return err
	})
	if err := recvWithin(t, write, "the write whose fsync failed"); !errors.Is(err, ErrNoLeader) || !strings.Contains(err.Error(), "fsync") {
		t.Fatalf("the write whose fsync failed was answered %v, want ErrNoLeader (retry elsewhere) naming the fsync", err)
	}
	if got := leader.FSM().Revision(); got != before {
		t.Fatalf("the leader applied through %d after its fsync failed, was %d", got, before)
	}
	testwait.For(t, 20*time.Second, "the other agents elect a leader and take a write", func() bool {
		for _, s := range rest {
			if s.IsLeader() {
				ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
				defer cancel()
				_, err := s.Apply(ctx, registerCmd(testInstance("api", "after", "n2")))
				return err == nil
			}
		}
		return false
	})
	if leader.raft.State() != raft.Shutdown {
		t.Fatalf("the agent whose fsync failed is %v, want its Raft node stopped", leader.raft.State())
	}
	if st := leader.Status(); st.State != Shutdown || !strings.Contains(st.Stopped, "fsync") || !strings.Contains(st.Stopped, "restart") {
		t.Fatalf("status of the agent whose fsync failed: %v, stopped %q; want Shutdown, naming the fsync and the restart", st.State, st.Stopped)
	}
	select {
	case <-leader.Failed():
	default:
		t.Fatal("the store whose fsync failed does not report it failed")
	}
	for _, s := range rest {
		if st := s.Status(); st.Stopped != "" {
			t.Fatalf("%s, whose disk is fine, says its Raft node stopped: %q", s.cfg.NodeID, st.Stopped)
		}
		select {
		case <-s.Failed():
			t.Fatalf("%s, whose disk is fine, reports it failed", s.cfg.NodeID)
		default:
		}
	}
}

// TestTruncatingTheTailLowersTheDurableIndex: a follower whose log's tail
// is replaced (a new leader's entries conflict) is durable only up to the
// entries it kept, until the new ones are stored; compacting the head
// changes nothing.
func TestTruncatingTheTailLowersTheDurableIndex(t *testing.T) {
	l, err := openLog(logOptions{Dir: t.TempDir(), SegmentSize: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := l.StoreLogs(commandLogs(1, 10)); err != nil {
		t.Fatal(err)
	}
	if err := l.DeleteRange(1, 3); err != nil {
		t.Fatal(err)
	}
	if got := l.ahead.durableIndex(); got != 10 {
		t.Fatalf("durable index %d after compacting 1-3, want 10", got)
	}
	if err := l.DeleteRange(8, 10); err != nil {
		t.Fatal(err)
	}
	if got := l.ahead.durableIndex(); got != 7 {
		t.Fatalf("durable index %d after deleting the tail 8-10, want 7", got)
	}
	if err := l.StoreLogs(commandLogs(8, 9)); err != nil {
		t.Fatal(err)
	}
	if got := l.ahead.durableIndex(); got != 9 {
		t.Fatalf("durable index %d after storing 8-9 again, want 9", got)
	}
}

// TestPowerLossTakesOnlyTheLeadersBatchInFlight: the leader's log loses
// power while a batch's fsync is in flight and the next append waits for
// it. Half of every write since the last fsync never reached the disk.
// The log reopens (the start-up check takes the damage for a torn last
// batch) with every entry that was durable, and only the batch in flight
// is gone: nothing written after it, which the check would refuse as
// damage followed by committed entries.
func TestPowerLossTakesOnlyTheLeadersBatchInFlight(t *testing.T) {
	dir := t.TempDir()
	disk := newHoldDisk()
	l, err := openLog(logOptions{Dir: dir, SegmentSize: 64 << 10, fs: disk})
	if err != nil {
		t.Fatal(err)
	}
	l.ahead.setLeader(func() bool { return true })
	for b := range uint64(5) {
		if err := l.StoreLogs(commandLogs(b*2+1, b*2+2)); err != nil {
			t.Fatal(err)
		}
	}
	if !l.ahead.waitDurable(10) {
		t.Fatal("waitDurable(10) = false")
	}
	held := disk.arm()
	if err := l.StoreLogs(commandLogs(11, 13)); err != nil {
		t.Fatal(err)
	}
	recvWithin(t, held, "the fsync of 11-13")
	next := async(func() error { return l.StoreLogs(commandLogs(14, 15)) })
	notYet(t, next, 100*time.Millisecond, "the append after the batch in flight")

	// The machine is gone: nothing more reaches the disk.
	if torn := disk.powerOff(t); torn == 0 {
		t.Fatal("nothing was written since the last fsync: no batch in flight to lose")
	}
	if err := recvWithin(t, next, "the append after the batch in flight"); err == nil {
		t.Fatal("the append after the lost batch succeeded")
	}
	l.Close()

	l, err = openLog(logOptions{Dir: dir, SegmentSize: 64 << 10})
	if err != nil {
		t.Fatalf("reopen after the power loss: %v", err)
	}
	defer l.Close()
	if last, _ := l.LastIndex(); last != 10 {
		t.Fatalf("last index %d after the power loss, want 10 (the durable entries, not the batch in flight)", last)
	}
	var e raft.Log
	for i := uint64(1); i <= 10; i++ {
		if err := l.GetLog(i, &e); err != nil {
			t.Fatalf("durable entry %d: %v", i, err)
		}
	}
}
