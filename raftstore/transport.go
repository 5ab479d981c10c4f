package raftstore

import (
	"errors"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"

	"github.com/zrpcio/zrpc/internal/monotime"
)

// A follower's DEFAULT read must see at least what the leader had
// committed when it last told this agent its commit index. raft keeps the
// leader's commit index to itself, and its last-contact time does not
// tell how far this replica lags: heartbeats (raft's fast path) carry no
// commit index and resume at once when a partition heals, while log
// replication to the follower may still be backing off for seconds. The
// store's transport therefore reads the commit index off every
// AppendEntries request it hands to raft.

// leaderCommits records the highest commit index the leaders of the
// newest term seen have sent this agent, and when the last of their
// AppendEntries requests carrying one arrived.
type leaderCommits struct {
	mu     sync.Mutex
	term   uint64
	commit uint64
	// commitTerm is the highest term of a committed entry a request named
	// with its term (committedTerm); 0 while none has.
	commitTerm uint64
	at         time.Time
	// quiet is how long without a commit index counts as a silence
	// (StaleReadBound; zero: never), and resumed when one arrived last
	// after such a silence: the requests that end a silence may have been
	// sent during it, delayed by the network, and carry an old commit
	// index stamped with their arrival (Store.catchUpAfterSilence).
	quiet   time.Duration
	resumed time.Time
}

// observe notes an RPC received at now. Requests of an older term than
// one already seen come from a deposed leader and are ignored: what it
// had committed says nothing of what the cluster has. Heartbeats carry no
// commit index (LeaderCommitIndex 0): they only move the term on.
func (c *leaderCommits) observe(cmd any, now time.Time) {
	req, ok := cmd.(*raft.AppendEntriesRequest)
	if !ok {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if req.Term < c.term {
		return
	}
	c.term = req.Term
	if req.LeaderCommitIndex == 0 {
		return
	}
	// An index once committed stays committed, whichever leader sent it.
	c.commit = max(c.commit, req.LeaderCommitIndex)
	c.commitTerm = max(c.commitTerm, committedTerm(req))
	if c.quiet > 0 && (c.at.IsZero() || now.Sub(c.at) > c.quiet) {
		// The first commit index ever (an agent that led until now, or
		// just started) ends a silence as long as its life so far.
		c.resumed = now
	}
	c.at = now
}

// committedTerm returns the term of the entry at req's commit index when
// req carries it (its PrevLogEntry, or one of its entries), 0 otherwise.
func committedTerm(req *raft.AppendEntriesRequest) uint64 {
	commit := req.LeaderCommitIndex
	switch {
	case commit == 0:
		return 0
	case commit == req.PrevLogEntry:
		return req.PrevLogTerm
	case commit > req.PrevLogEntry && commit-req.PrevLogEntry <= uint64(len(req.Entries)):
		if e := req.Entries[commit-req.PrevLogEntry-1]; e.Index == commit {
			return e.Term
		}
	}
	return 0
}

// lastTerm returns the highest term of a committed entry seen (0: none).
func (c *leaderCommits) lastTerm() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.commitTerm
}

// resumedAt is when a commit index last arrived after a silence; zero if
// none has.
func (c *leaderCommits) resumedAt() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.resumed
}

// last returns the highest commit index seen and when the newest
// AppendEntries request carrying a commit index arrived; a zero time
// means none has yet.
func (c *leaderCommits) last() (commit uint64, at time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.commit, c.at
}

// transport is raft's NetworkTransport, which also records the leader's
// commit index from the AppendEntries requests it receives and, on the
// leader, records which peers accepted the AppendEntries requests it sent
// and when (readindex.go) and hands each request and its outcome to
// onAppend (commit push, commitpush.go). Embedding keeps the optional
// interfaces raft looks for (WithClose, WithPreVote). Requests reach raft
// in the order they arrived, unchanged but for an AppendEntries request's
// commit index, lowered to what the request matched (matchedcommit.go).
type transport struct {
	*raft.NetworkTransport
	commits leaderCommits
	acks    leaderAcks
	// peers is when each peer last sent this agent a Raft message or
	// answered one of its own, for isolation (contact.go).
	peers peersHeard
	// onAppend, when set (before raft starts), sees each AppendEntries
	// request sent and its outcome; it must not block.
	onAppend func(id raft.ServerID, target raft.ServerAddress, req *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse, err error)
	// commitCap, when set (before raft starts), bounds the commit index
	// the leader sends: its log's durable index (syncahead.go).
	commitCap func() uint64
	// votes refuses the vote requests of a replica with no Raft state,
	// and of candidates behind the commit index seen (votegate.go); nil
	// passes them all.
	votes *voteGate
	// fence, while up, refuses to send AppendEntries requests and
	// heartbeats (a leader whose replica stopped applying: contact.go).
	fence leaderFence

	// beatsMu is held for reading while raft handles a heartbeat, and
	// taken by Close, which sets beatsClosed: raft handles heartbeats on
	// the network transport's connection goroutines, which its Shutdown
	// neither stops nor waits for, and one that reaches raft once the
	// store has closed its log panics raft ("failed to save current
	// term") when it carries a newer term.
	beatsMu     sync.RWMutex
	beatsClosed bool

	rpcs      chan raft.RPC // what Consumer returns
	stop      chan struct{}
	done      chan struct{} // closed when forward returns
	closeOnce sync.Once
	closeErr  error
}

// raft uses pre-vote and closes the transport on Shutdown only when the
// transport offers them.
var (
	_ raft.WithClose   = (*transport)(nil)
	_ raft.WithPreVote = (*transport)(nil)
)

// newObservingTransport wraps inner and starts the goroutine that hands
// its RPCs on; Close stops it.
func newObservingTransport(inner *raft.NetworkTransport, votes *voteGate, quiet time.Duration) *transport {
	t := &transport{
		NetworkTransport: inner,
		commits:          leaderCommits{quiet: quiet},
		votes:            votes,
		rpcs:             make(chan raft.RPC),
		stop:             make(chan struct{}),
		done:             make(chan struct{}),
	}
	if votes != nil {
		votes.committed = func() uint64 {
			commit, _ := t.commits.last()
			return commit
		}
		votes.committedTerm = t.commits.lastTerm
	}
	go t.forward()
	return t
}

// forward passes the RPCs the network transport decoded to raft,
// observing each on the way. The channel is unbuffered like the network
// transport's own, so a busy raft still holds the sender back.
func (t *transport) forward() {
	defer close(t.done)
	in := t.NetworkTransport.Consumer()
	for {
		select {
		case <-t.stop:
			return
		case rpc := <-in:
			now := time.Now()
			t.heardFrom(rpc.Command, now)
			told := t.votes.committedEntry()
			t.commits.observe(rpc.Command, now)
			if err := t.votes.refuse(rpc); err != nil {
				rpc.Respond(nil, err)
				continue
			}
			if err := t.votes.keep(rpc, told); err != nil {
				rpc.Respond(nil, err)
				continue
			}
			if req, ok := rpc.Command.(*raft.AppendEntriesRequest); ok {
				matchedCommit(req) // matchedcommit.go; observed above as the leader sent it
			}
			select {
			case t.rpcs <- rpc:
			case <-t.stop:
				return // the sender gives up when the network transport closes
			}
		}
	}
}

// Consumer implements raft.Transport.
func (t *transport) Consumer() <-chan raft.RPC { return t.rpcs }

// SetHeartbeatHandler implements raft.Transport: heartbeats take raft's
// fast path past Consumer, and are observed there. Once Close has begun
// they are answered with an error instead.
func (t *transport) SetHeartbeatHandler(cb func(rpc raft.RPC)) {
	if cb == nil {
		t.NetworkTransport.SetHeartbeatHandler(nil)
		return
	}
	t.NetworkTransport.SetHeartbeatHandler(func(rpc raft.RPC) {
		now := time.Now()
		t.heardFrom(rpc.Command, now)
		t.commits.observe(rpc.Command, now)
		t.beatsMu.RLock()
		defer t.beatsMu.RUnlock()
		if t.beatsClosed {
			rpc.Respond(nil, raft.ErrTransportShutdown)
			return
		}
		cb(rpc)
	})
}

// heardFrom notes a request received at now from the peer its header
// names.
func (t *transport) heardFrom(cmd any, now time.Time) {
	if h, ok := cmd.(raft.WithRPCHeader); ok {
		t.peers.note(h.GetRPCHeader().ID, now)
	}
}

// answered notes that peer id answered a request at now.
func (t *transport) answered(id raft.ServerID, now time.Time) {
	t.peers.note([]byte(id), now)
}

// RequestVote implements raft.Transport, noting an answer.
func (t *transport) RequestVote(id raft.ServerID, target raft.ServerAddress, req *raft.RequestVoteRequest, resp *raft.RequestVoteResponse) error {
	err := t.NetworkTransport.RequestVote(id, target, req, resp)
	if err == nil {
		t.answered(id, time.Now())
	}
	return err
}

// RequestPreVote implements raft.WithPreVote, noting an answer.
func (t *transport) RequestPreVote(id raft.ServerID, target raft.ServerAddress, req *raft.RequestPreVoteRequest, resp *raft.RequestPreVoteResponse) error {
	err := t.NetworkTransport.RequestPreVote(id, target, req, resp)
	if err == nil {
		t.answered(id, time.Now())
	}
	return err
}

// peersHeard is when each peer, by server ID, last sent this agent a Raft
// message or answered one of its own (or, asked by a nonvoter without a
// leader, its probe: probe.go).
type peersHeard struct {
	mu sync.RWMutex
	at map[string]*atomic.Int64
}

// note records id heard at now; an empty id (an old peer's header) is
// not recorded.
func (p *peersHeard) note(id []byte, now time.Time) {
	if len(id) == 0 {
		return
	}
	p.mu.RLock()
	at, ok := p.at[string(id)]
	p.mu.RUnlock()
	if !ok {
		p.mu.Lock()
		if p.at == nil {
			p.at = map[string]*atomic.Int64{}
		}
		if at, ok = p.at[string(id)]; !ok {
			at = new(atomic.Int64)
			p.at[string(id)] = at
		}
		p.mu.Unlock()
	}
	at.Store(monotime.Of(now))
}

// retain forgets the peers member rejects.
func (p *peersHeard) retain(member func(id string) bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for id := range p.at {
		if !member(id) {
			delete(p.at, id)
		}
	}
}

// latest is when any peer was last heard (an error is no answer); zero
// if none has been.
func (p *peersHeard) latest() time.Time {
	p.mu.RLock()
	defer p.mu.RUnlock()
	var n int64
	for _, at := range p.at {
		n = max(n, at.Load())
	}
	return monotime.Time(n)
}

// last is when id was last heard; zero if never.
func (p *peersHeard) last(id string) time.Time {
	p.mu.RLock()
	at, ok := p.at[id]
	p.mu.RUnlock()
	if !ok {
		return time.Time{}
	}
	return monotime.Time(at.Load())
}

// AppendEntries implements raft.Transport: it sends as the network
// transport does and shows the request and its outcome to onAppend.
func (t *transport) AppendEntries(id raft.ServerID, target raft.ServerAddress, req *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) error {
	if err := t.fence.refuses(); err != nil {
		return err
	}
	t.capCommit(req)
	sent := time.Now() // no later than the request leaves
	err := t.NetworkTransport.AppendEntries(id, target, req, resp)
	t.appended(id, target, req, resp, err, sent)
	return err
}

// appended records the outcome of an AppendEntries request sent at sent:
// a peer's acceptance for CONSISTENT reads (readindex.go), and the
// request and its outcome for onAppend.
func (t *transport) appended(id raft.ServerID, target raft.ServerAddress, req *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse, err error, sent time.Time) {
	if err == nil {
		t.answered(id, time.Now())
	}
	if err == nil && resp.Success && resp.Term == req.Term {
		t.acks.accepted(id, req.Term, sent)
	}
	if t.onAppend != nil {
		t.onAppend(id, target, req, resp, err)
	}
}

// capCommit lowers the commit index req carries to the index req matched
// (matchedcommit.go) and to commitCap.
func (t *transport) capCommit(req *raft.AppendEntriesRequest) {
	matchedCommit(req)
	if t.commitCap != nil {
		req.LeaderCommitIndex = min(req.LeaderCommitIndex, t.commitCap())
	}
}

// InstallSnapshot implements raft.Transport: as the network transport
// does, but not while the fence is up (a snapshot resets a follower's
// election timer as an AppendEntries does).
func (t *transport) InstallSnapshot(id raft.ServerID, target raft.ServerAddress, args *raft.InstallSnapshotRequest, resp *raft.InstallSnapshotResponse, data io.Reader) error {
	if err := t.fence.refuses(); err != nil {
		return err
	}
	return t.NetworkTransport.InstallSnapshot(id, target, args, resp, data)
}

// sendUnobserved sends an AppendEntries request of the store's own (a
// commit push) as the network transport does, past onAppend, but not
// while the fence is up: a request the followers hear from a fenced
// leader would keep them from electing another.
func (t *transport) sendUnobserved(id raft.ServerID, target raft.ServerAddress, req *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) error {
	if err := t.fence.refuses(); err != nil {
		return err
	}
	return t.NetworkTransport.AppendEntries(id, target, req, resp)
}

// AppendEntriesPipeline implements raft.Transport: the pipeline's
// requests carry a commit index capped as AppendEntries', and its
// finished requests are recorded as AppendEntries' as raft consumes them.
func (t *transport) AppendEntriesPipeline(id raft.ServerID, target raft.ServerAddress) (raft.AppendPipeline, error) {
	if err := t.fence.refuses(); err != nil {
		return nil, err
	}
	p, err := t.NetworkTransport.AppendEntriesPipeline(id, target)
	if err != nil {
		return p, err
	}
	op := newObservedPipeline(p, id, target, t.appended, t.capCommit)
	op.refuses = t.fence.refuses
	return op, nil
}

// A leader whose replica stopped applying may be unable to hand its
// leadership on: once raft's queue to the FSM is full, raft's main loop
// waits for the FSM and takes no transfer, vote or step-down, while its
// replication goroutines go on sending heartbeats, so that the followers
// never elect another leader and the cluster takes no write. The store
// then raises the fence (contact.go): the transport refuses to send
// AppendEntries requests and heartbeats until the replica's revision
// moves, so that the followers time out and elect one of themselves. A
// request not sent is a message the network lost, which Raft tolerates:
// only liveness is at stake, never safety. Once the replica applies
// again the store, now deposed, steps down as soon as it hears the new
// term and follows.

// errFenced is what a fenced transport answers raft's sends with.
var errFenced = errors.New("this agent's replica stopped applying the Raft log: it sends no AppendEntries or heartbeats as leader until it applies again, so that the other voters elect a leader")

// leaderFence is up while the replica's revision stays where it stopped.
type leaderFence struct {
	at atomic.Pointer[fenceAt]
}

// fenceAt is the revision a fence was raised at, and how to read the
// replica's revision now.
type fenceAt struct {
	revision uint64
	applied  func() uint64
}

// raise puts the fence up until applied returns other than revision (the
// replica applied again), or lower takes it down.
func (f *leaderFence) raise(revision uint64, applied func() uint64) {
	f.at.Store(&fenceAt{revision: revision, applied: applied})
}

// lower takes the fence down.
func (f *leaderFence) lower() { f.at.Store(nil) }

// refuses returns errFenced while the fence is up, nil otherwise; the
// fence comes down as soon as the replica's revision has moved.
func (f *leaderFence) refuses() error {
	at := f.at.Load()
	if at == nil {
		return nil
	}
	if at.applied() != at.revision {
		f.at.CompareAndSwap(at, nil)
		return nil
	}
	return errFenced
}

// up reports whether the fence is up.
func (f *leaderFence) up() bool { return f.refuses() != nil }

// appendObserver sees an AppendEntries request sent at sent and its
// outcome.
type appendObserver func(id raft.ServerID, target raft.ServerAddress, req *raft.AppendEntriesRequest,
	resp *raft.AppendEntriesResponse, err error, sent time.Time)

// observedPipeline passes a pipeline's finished requests to raft through
// its own Consumer channel, showing each to observe first. Its goroutine
// ends when the pipeline is closed.
type observedPipeline struct {
	raft.AppendPipeline
	id      raft.ServerID
	target  raft.ServerAddress
	observe appendObserver
	prepare func(*raft.AppendEntriesRequest) // each request, before it is sent
	refuses func() error                     // when set, a non-nil error: the request is not sent

	done      chan raft.AppendFuture
	stop      chan struct{}
	stopped   chan struct{}
	closeOnce sync.Once
}

func newObservedPipeline(inner raft.AppendPipeline, id raft.ServerID, target raft.ServerAddress, observe appendObserver,
	prepare func(*raft.AppendEntriesRequest)) *observedPipeline {
	p := &observedPipeline{
		AppendPipeline: inner, id: id, target: target, observe: observe, prepare: prepare,
		done: make(chan raft.AppendFuture), stop: make(chan struct{}), stopped: make(chan struct{}),
	}
	go p.relay()
	return p
}

// relay hands on the inner pipeline's futures, which arrive finished.
func (p *observedPipeline) relay() {
	defer close(p.stopped)
	in := p.AppendPipeline.Consumer()
	for {
		select {
		case <-p.stop:
			return
		case f := <-in:
			err := f.Error()
			var resp *raft.AppendEntriesResponse
			if err == nil {
				resp = f.Response()
			}
			p.observe(p.id, p.target, f.Request(), resp, err, f.Start())
			select {
			case p.done <- f:
			case <-p.stop:
				return
			}
		}
	}
}

// AppendEntries implements raft.AppendPipeline.
func (p *observedPipeline) AppendEntries(req *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) (raft.AppendFuture, error) {
	if p.refuses != nil {
		if err := p.refuses(); err != nil {
			return nil, err
		}
	}
	p.prepare(req)
	return p.AppendPipeline.AppendEntries(req, resp)
}

// Consumer implements raft.AppendPipeline.
func (p *observedPipeline) Consumer() <-chan raft.AppendFuture { return p.done }

// Close implements raft.AppendPipeline: it stops the relay and closes the
// inner pipeline.
func (p *observedPipeline) Close() error {
	var err error
	p.closeOnce.Do(func() {
		close(p.stop)
		<-p.stopped
		err = p.AppendPipeline.Close()
	})
	return err
}

// LeaderCommit returns the highest commit index a leader has sent this
// agent and when the newest AppendEntries request carrying one arrived
// (zero if none has).
func (t *transport) LeaderCommit() (commit uint64, at time.Time) { return t.commits.last() }

// Close implements raft.WithClose: it waits for the heartbeats raft is
// handling, stops forwarding and closes the network transport. raft calls
// it on Shutdown; calling it again is safe.
func (t *transport) Close() error {
	t.closeOnce.Do(func() {
		t.beatsMu.Lock()
		t.beatsClosed = true
		t.beatsMu.Unlock()
		close(t.stop)
		<-t.done
		t.closeErr = t.NetworkTransport.Close()
	})
	return t.closeErr
}
