package raftstore

import (
	"log/slog"
	"runtime"
	"sync"

	"github.com/hashicorp/raft"
)

// Commit push: the leader tells each follower about a new commit index as
// soon as raft hands the committed entries to its FSM, instead of leaving
// it to raft.
//
// hashicorp/raft sends a follower the leader's commit index only with the
// next AppendEntries request carrying entries, or with the one it sends
// 1-2x CommitTimeout after writes stop (heartbeats carry none on purpose).
// A write through a follower, and every watcher on a follower, therefore
// waited 5-10 ms (with a 5 ms CommitTimeout) after the leader had
// committed, and an idle leader sent every follower ~130 RPCs a second;
// a shorter CommitTimeout would make that ~1,000. With the push,
// CommitTimeout is long (config.go) and followers learn commits at once.
//
// Instead the store's transport, on the leader, sees every AppendEntries
// request it sends and its response, and records per follower, in the
// leader's current term, the highest index the follower acknowledged as
// matching the leader's log (the last entry of a successful request, or
// its PrevLogEntry when it carried none) and the highest LeaderCommitIndex
// the follower accepted (in raft's requests or in pushes). When raft hands
// the leader's FSM a batch ending at index N of term T (raft hands an FSM
// only committed entries; the store reports a new leader's no-op and
// barrier, which the FSM never sees, once it has moved the revision over
// them, applied.go), every follower whose acknowledged match is at least N
// and that has not yet been told N is sent
//
//	AppendEntriesRequest{RPCHeader and Term of the last request raft sent
//	it, PrevLogEntry: N, PrevLogTerm: T, Entries: none, LeaderCommitIndex: N}
//
// over raft's own transport. The push goes before the leader's FSM
// applies the batch, so the followers apply it while the leader does
// (as etcd's followers do, whose leader sends the commit as it commits).
// A follower whose match is below N gets nothing: raft's replication
// still owes it entries and carries the commit index with them (and it
// would only answer "failed to get previous log").
//
// Why it is safe: nothing changes on the follower; raft's appendEntries
// checks the request as any other. It refuses a request of an older term
// than its own, so a push from a deposed leader is ignored by a follower
// that has seen the newer term. Otherwise it accepts only if its own entry
// N has term T; by the Log Matching property its log then equals the
// leader's through N. With no entries to append, it sets its commit index
// to min(N, its last index) = N, which the leader has committed, and
// applies up to there. A push of an index the follower has already
// committed changes nothing (raft only moves the commit index forward).
// If the follower has compacted entry N into a snapshot, or lost it, it
// answers failure, nothing changes, and it gets no more pushes until
// raft's replication has acknowledged a match again. Its answer is read only to finish the call:
// the leader's replication state (next index, match, last contact, lease)
// is raft's and never sees a push.
//
// What readers see: a follower may now apply N, and show it to its
// watchers and reads, before the leader's FSM has (raft's own replication
// could already do so, less often). A write is still answered only once
// the leader has applied it, and through a follower once that follower
// has too. A CONSISTENT read on the leader waits until its FSM has
// applied the commit index it had when the read began
// (Store.CheckReadContext), so it never misses a write a follower has
// already shown.
//
// Cost: one small RPC per follower per applied batch while writes flow,
// none when the cluster is idle. Pushes to a follower go one at a time and
// coalesce: while one is in flight, newer indexes wait for it and then go
// as one. Each follower has its own sending goroutine, so a follower that
// stopped answering (a push waits up to the transport's timeout) holds up
// no push to another. A follower that leaves the Raft configuration is
// forgotten, its sender stopped (retain); one that comes back, under the
// same id or another, starts afresh.

// appendSender sends one AppendEntries request over raft's transport.
type appendSender func(id raft.ServerID, target raft.ServerAddress, req *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) error

// commitPusher pushes the leader's applied index to its followers. It owns
// one goroutine per follower it has replicated to; retain stops those of
// followers that left the configuration, Close all of them.
type commitPusher struct {
	send appendSender
	// leaderTerm returns the current term and whether this node leads.
	leaderTerm func() (term uint64, leader bool)
	log        *slog.Logger

	mu          sync.Mutex
	applied     uint64 // last index handed to the FSM, hence committed
	appliedTerm uint64 // its term
	followers   map[raft.ServerID]*pushFollower
	senders     int // running sender goroutines, forgotten followers' too
	closed      bool
	// sending, when set, is called before each push is sent (tests count
	// them).
	sending func(id raft.ServerID, req *raft.AppendEntriesRequest)

	stop chan struct{}
	wg   sync.WaitGroup
}

// pushFollower is what the leader knows of one follower's log in the term
// of the last request raft sent it. Guarded by commitPusher.mu.
type pushFollower struct {
	id     raft.ServerID
	addr   raft.ServerAddress
	header raft.RPCHeader // names the leader (ID, Addr)
	term   uint64
	match  uint64 // highest index acknowledged as matching the leader's log
	told   uint64 // highest commit index the follower accepted
	kick   chan struct{}
	gone   chan struct{} // closed when the follower is forgotten
}

func newCommitPusher(send appendSender, leaderTerm func() (uint64, bool), log *slog.Logger) *commitPusher {
	return &commitPusher{
		send:       send,
		leaderTerm: leaderTerm,
		log:        log,
		followers:  make(map[raft.ServerID]*pushFollower),
		stop:       make(chan struct{}),
	}
}

// observe records an AppendEntries request raft sent to id at target and
// its outcome (err is the call's error; resp is valid only when it is
// nil). Heartbeats (no previous entry, no entries) say nothing about the
// follower's log and are not recorded. It is called on raft's replication
// goroutines and does not block.
func (p *commitPusher) observe(id raft.ServerID, target raft.ServerAddress, req *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse, err error) {
	if err != nil || (req.PrevLogEntry == 0 && len(req.Entries) == 0) {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	f := p.follower(id)
	if f == nil {
		return
	}
	if req.Term < f.term {
		return // a request of a term this node no longer leads in
	}
	if req.Term > f.term {
		f.term, f.match, f.told = req.Term, 0, 0
	}
	f.addr, f.header = target, req.RPCHeader
	if !resp.Success || resp.Term > req.Term {
		// Its log does not hold what was acknowledged (it lost entries,
		// or a newer leader replaced them): trust nothing until raft's
		// replication finds the match again.
		f.match = 0
		return
	}
	last := req.PrevLogEntry
	if n := len(req.Entries); n > 0 {
		last = req.Entries[n-1].Index
	}
	f.match = max(f.match, last)
	f.told = max(f.told, min(req.LeaderCommitIndex, last))
	if f.match >= p.applied && f.told < p.applied {
		kick(f.kick)
	}
}

// follower returns id's record, starting its sender the first time; nil
// once the pusher is closed. The caller holds p.mu.
func (p *commitPusher) follower(id raft.ServerID) *pushFollower {
	if f := p.followers[id]; f != nil || p.closed {
		return f
	}
	f := &pushFollower{id: id, kick: make(chan struct{}, 1), gone: make(chan struct{})}
	p.followers[id] = f
	p.senders++
	p.wg.Add(1)
	go p.run(f)
	return f
}

// retain forgets the followers member rejects (servers that left the
// configuration, Store.forgetRemovedPeers) and stops their senders; a
// push in flight ends within the transport's timeout. It does not block.
func (p *commitPusher) retain(member func(raft.ServerID) bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for id, f := range p.followers {
		if !member(id) {
			delete(p.followers, id)
			close(f.gone)
		}
	}
}

// committed notes that raft committed every entry through index, of term
// term, and handed them to the FSM (or, for entries the FSM never sees,
// that the FSM's revision has moved over them), and wakes the senders of
// followers that can be told; woke says whether it woke any. It is called
// on raft's FSM goroutine and on the store's applied tracker, and does not
// block.
func (p *commitPusher) committed(index, term uint64) (woke bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if index <= p.applied {
		return false
	}
	p.applied, p.appliedTerm = index, term
	for _, f := range p.followers {
		if f.match >= index && f.told < index {
			kick(f.kick)
			woke = true
		}
	}
	return woke
}

// kick wakes a sender; a wake-up already pending covers this one.
func kick(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// run sends f's pushes until the pusher closes or forgets f.
func (p *commitPusher) run(f *pushFollower) {
	defer p.wg.Done()
	defer func() {
		p.mu.Lock()
		p.senders--
		p.mu.Unlock()
	}()
	for {
		select {
		case <-p.stop:
			return
		case <-f.gone:
			return
		case <-f.kick:
		}
		for p.pushOnce(f) {
		}
	}
}

// pushOnce sends f one push if it can be told something, and reports
// whether it did and the follower accepted it (then there may be more).
func (p *commitPusher) pushOnce(f *pushFollower) bool {
	term, leader := p.leaderTerm()
	p.mu.Lock()
	n, nTerm := p.applied, p.appliedTerm
	if !leader || f.term != term || f.match < n || f.told >= n || p.closed || p.followers[f.id] != f {
		p.mu.Unlock()
		return false
	}
	req := &raft.AppendEntriesRequest{
		RPCHeader:         f.header,
		Term:              f.term,
		PrevLogEntry:      n,
		PrevLogTerm:       nTerm,
		LeaderCommitIndex: n,
	}
	id, addr, sending := f.id, f.addr, p.sending
	p.mu.Unlock()
	if sending != nil {
		sending(id, req)
	}

	var resp raft.AppendEntriesResponse
	if err := p.send(id, addr, req, &resp); err != nil {
		p.log.Debug("commit push failed", "peer", id, "index", n, "err", err)
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if f.term != req.Term {
		return false
	}
	if !resp.Success {
		// It no longer holds entry N as acknowledged (it restarted
		// without it, or compacted it): push nothing more until raft's
		// replication finds the match again.
		f.match = 0
		return false
	}
	f.told = max(f.told, n)
	return true
}

// Close stops the senders and waits for them; a push in flight ends
// within the transport's timeout, or at once when the transport closes.
func (p *commitPusher) Close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	close(p.stop)
	p.mu.Unlock()
	p.wg.Wait()
}

// pushingFSM is the FSM as raft sees it: it tells the commit pusher the
// last index of each batch, which raft has committed, then applies the
// batch through the store's FSM. The FSM's logic is untouched.
type pushingFSM struct {
	*FSM
	pusher *commitPusher
	log    *syncAhead
}

var _ raft.BatchingFSM = pushingFSM{}

// ApplyBatch implements raft.BatchingFSM. On the leader, raft may hand
// over a batch before its own copy is fsynced (syncahead.go): the batch
// waits for that first.
func (w pushingFSM) ApplyBatch(logs []*raft.Log) []any {
	n := len(logs)
	if n > 0 && !w.log.waitDurable(logs[n-1].Index) {
		out := make([]any, n)
		for i := range out {
			out[i] = errLogNotDurable
		}
		return out
	}
	if n > 0 && w.pusher.committed(logs[n-1].Index, logs[n-1].Term) {
		// The woken senders wait in this goroutine's run queue: let them
		// send before the batch is applied, rather than after it or once
		// another thread has woken to take them.
		runtime.Gosched()
	}
	return w.FSM.ApplyBatch(logs)
}

// Apply implements raft.FSM.
func (w pushingFSM) Apply(l *raft.Log) any { return w.ApplyBatch([]*raft.Log{l})[0] }
