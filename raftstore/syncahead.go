package raftstore

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/hashicorp/raft"
	wal "github.com/hashicorp/raft-wal"
	waltypes "github.com/hashicorp/raft-wal/types"
)

// The leader's fsync runs beside replication.
//
// hashicorp/raft's leader stores a batch (raft-wal: one write and one
// fsync) before its replicators may send it, so a write waited for the
// leader's fsync and then a follower's, one after the other. The Raft
// paper allows the leader to write its own log in parallel with
// replicating it (§10.2.1), as etcd does, provided nothing that counts
// the leader's copy becomes visible before that copy is durable.
//
// While this agent leads, the log's StoreLogs writes a batch of commands
// and returns without waiting for its fsync (raft-wal's Sync of the
// segment is deferred), and the fsync runs in the background while raft's
// replicators send the batch. raft counts the leader's copy towards a
// commit as soon as StoreLogs returns, so what raft derives from that
// count is held back until the fsync has ended:
//   - the leader's FSM applies a batch (which answers its writes, wakes
//     watches and pushes the commit to the followers: pushingFSM) only
//     once the log is durable up to the batch's last entry;
//   - every AppendEntries the leader sends carries a commit index no
//     higher than its durable index (transport), so no follower applies an
//     entry that a power loss of the leader could still take from the
//     majority that committed it.
//
// At most one batch is in flight: the next StoreLogs, DeleteRange,
// raft-wal's meta commit (a rotation records a sealed segment there) and
// Close first wait for (or do) the pending fsync. A power loss can thus
// tear only the last batch, as with an fsync per append, which the log
// check accepts and raft-wal drops. A follower's stores, and a batch
// holding anything but commands (configuration, no-op, barrier), are
// fsynced before StoreLogs returns, as before: a follower acknowledges
// only entries it holds durably.
//
// A background fsync that fails leaves entries raft already counted with
// no durable copy here: no later fsync can vouch for them (Linux drops
// the failed pages' dirty state). The store stops its Raft node then,
// without applying them (logSyncFailed); a restart reads back what the
// disk holds.

// syncAhead defers the leader's log fsyncs and tracks what is durable.
type syncAhead struct {
	// leader reports whether raft is the leader; nil until raft starts.
	leader    atomic.Pointer[func() bool]
	deferring atomic.Bool // Sync calls made now are deferred
	// onFail is told of a failed background fsync (set before raft starts).
	onFail    func(error)
	syncFirst bool // never defer (benchmarks compare)

	flushMu sync.Mutex // held across the fsyncs of a flush

	mu        sync.Mutex
	dirty     []*aheadFile // files with a deferred Sync
	pending   *syncJob     // the background fsync in flight, nil if none
	durable   uint64       // the log is durable up to this index
	durableCh chan struct{}
	failed    error // a background fsync failed: nothing more is durable
}

// syncJob is one background fsync.
type syncJob struct {
	done chan struct{}
	err  error // set before done is closed
}

// errLogNotDurable answers entries the FSM did not apply because the
// leader's fsync of them failed. A follower holds them durably, so the
// next leader may still commit them: the write may have been applied.
var errLogNotDurable = fmt.Errorf("%w: this agent's fsync of its Raft log failed, so it stopped its Raft node; "+
	"the write may or may not have been applied (the other agents may commit it): retry it; restart this agent once its disk is checked", ErrNoLeader)

// newSyncAhead returns a syncAhead of a log durable up to durable.
func newSyncAhead(durable uint64) *syncAhead {
	return &syncAhead{durable: durable, durableCh: make(chan struct{})}
}

// setLeader sets how the log learns whether this agent leads.
func (a *syncAhead) setLeader(f func() bool) { a.leader.Store(&f) }

// mayDefer reports whether the fsync of logs may run in the background:
// this agent leads and they are all commands.
func (a *syncAhead) mayDefer(logs []*raft.Log) bool {
	f := a.leader.Load()
	if a.syncFirst || f == nil || !(*f)() {
		return false
	}
	for _, l := range logs {
		if l.Type != raft.LogCommand {
			return false
		}
	}
	return true
}

// wait waits for the background fsync in flight, if any, and returns its
// error.
func (a *syncAhead) wait() error {
	a.mu.Lock()
	j := a.pending
	a.mu.Unlock()
	if j == nil {
		return nil
	}
	<-j.done
	a.mu.Lock()
	if a.pending == j {
		a.pending = nil
	}
	a.mu.Unlock()
	return j.err
}

// start starts the background fsync that makes the log durable up to last.
func (a *syncAhead) start(last uint64) {
	j := &syncJob{done: make(chan struct{})}
	a.mu.Lock()
	a.pending = j
	a.mu.Unlock()
	go func() {
		j.err = a.flush()
		if j.err == nil {
			a.setDurable(last)
		} else {
			a.fail(j.err)
		}
		close(j.done)
	}()
}

// flush fsyncs every file whose Sync was deferred.
func (a *syncAhead) flush() error {
	a.flushMu.Lock()
	defer a.flushMu.Unlock()
	a.mu.Lock()
	files := a.dirty
	a.dirty = nil
	for _, f := range files {
		f.dirty = false
	}
	a.mu.Unlock()
	var first error
	for _, f := range files {
		if err := f.WritableFile.Sync(); err != nil && first == nil {
			first = fmt.Errorf("fsync raft log segment: %w", err)
		}
	}
	return first
}

// setDurable records that the log is durable up to index (and no
// further: a truncation lowers it).
func (a *syncAhead) setDurable(index uint64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.failed != nil {
		return
	}
	raised := index > a.durable
	a.durable = index
	if raised {
		close(a.durableCh)
		a.durableCh = make(chan struct{})
	}
}

// truncated records the deletion of entries from..to.
func (a *syncAhead) truncated(from, to uint64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if to >= a.durable && from <= a.durable {
		a.durable = max(from, 1) - 1
	}
}

// fail records a failed background fsync: entries past the durable index
// will never be, and waitDurable stops waiting for them.
func (a *syncAhead) fail(err error) {
	a.mu.Lock()
	first := a.failed == nil
	if first {
		a.failed = err
		close(a.durableCh)
		a.durableCh = make(chan struct{})
	}
	a.mu.Unlock()
	if first && a.onFail != nil {
		a.onFail(err)
	}
}

// failure returns the error of the background fsync that failed, nil if
// none did.
func (a *syncAhead) failure() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.failed
}

// waitDurable waits until the log is durable up to index. It reports
// false when it never will be: a background fsync failed.
func (a *syncAhead) waitDurable(index uint64) bool {
	for {
		a.mu.Lock()
		durable, failed, ch := a.durable, a.failed, a.durableCh
		a.mu.Unlock()
		switch {
		case durable >= index:
			return true
		case failed != nil:
			return false
		}
		<-ch
	}
}

// durableIndex returns the index the log is durable up to.
func (a *syncAhead) durableIndex() uint64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.durable
}

// markDirty records f's deferred Sync.
func (a *syncAhead) markDirty(f *aheadFile) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !f.dirty {
		f.dirty = true
		a.dirty = append(a.dirty, f)
	}
}

// fs is vfs with the segments' Sync deferred while a says so.
func (a *syncAhead) fs(vfs waltypes.VFS) waltypes.VFS {
	return filesFS{vfs, func(_ string, f waltypes.WritableFile) waltypes.WritableFile {
		return &aheadFile{WritableFile: f, a: a}
	}}
}

// aheadFile is a segment file whose Sync may be deferred.
type aheadFile struct {
	waltypes.WritableFile
	a     *syncAhead
	dirty bool // a Sync was deferred (guarded by a.mu)
}

// Sync fsyncs the file, or records that it must be when syncAhead defers.
func (f *aheadFile) Sync() error {
	if f.a.deferring.Load() {
		f.a.markDirty(f)
		return nil
	}
	// Anything deferred goes first: this fsync covers the file's writes
	// only.
	if err := f.a.flush(); err != nil {
		return err
	}
	return f.WritableFile.Sync()
}

// Close fsyncs what was deferred before the file closes.
func (f *aheadFile) Close() error {
	err := f.a.flush()
	if cerr := f.WritableFile.Close(); err == nil {
		err = cerr
	}
	return err
}

// aheadMeta is raft-wal's meta store; a commit of its state (a rotation
// sealing a segment, a truncation) waits for deferred fsyncs, so the
// state never names data that is not durable.
type aheadMeta struct {
	waltypes.MetaStore
	a *syncAhead
}

func (m aheadMeta) CommitState(st waltypes.PersistentState) error {
	if err := m.a.flush(); err != nil {
		return err
	}
	return m.MetaStore.CommitState(st)
}

// logStore is raft-wal's WAL (with its meta store, which WAL.Close
// closes), storing the leader's batches with their fsync in the
// background (syncAhead).
type logStore struct {
	*wal.WAL
	ahead *syncAhead
}

// StoreLog implements raft.LogStore.
func (l *logStore) StoreLog(log *raft.Log) error { return l.StoreLogs([]*raft.Log{log}) }

// StoreLogs implements raft.LogStore: the previous batch's fsync ends
// first; a leader's batch of commands returns once written, with its
// fsync started.
func (l *logStore) StoreLogs(logs []*raft.Log) error {
	if err := l.ahead.wait(); err != nil {
		return err
	}
	if len(logs) == 0 {
		return l.WAL.StoreLogs(logs)
	}
	last := logs[len(logs)-1].Index
	if !l.ahead.mayDefer(logs) {
		if err := l.WAL.StoreLogs(logs); err != nil {
			return err
		}
		l.ahead.setDurable(last)
		return nil
	}
	l.ahead.deferring.Store(true)
	err := l.WAL.StoreLogs(logs)
	l.ahead.deferring.Store(false)
	if err != nil {
		// raft-wal rolled the append back; a Sync it deferred before the
		// failure covers nothing new.
		return errors.Join(err, l.ahead.flush())
	}
	l.ahead.start(last)
	return nil
}

// DeleteRange implements raft.LogStore.
func (l *logStore) DeleteRange(from, to uint64) error {
	if err := l.ahead.wait(); err != nil {
		return err
	}
	if err := l.WAL.DeleteRange(from, to); err != nil {
		return err
	}
	l.ahead.truncated(from, to)
	return nil
}

// Close waits for the fsync in flight and closes the log.
func (l *logStore) Close() error {
	err := l.ahead.wait()
	return errors.Join(err, l.WAL.Close())
}
