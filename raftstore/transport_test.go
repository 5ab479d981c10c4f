package raftstore

import (
	"fmt"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// TestLeaderCommitsKeepTheNewestTermsCommitIndex: the commit index and its
// time come from AppendEntries requests of the newest term seen;
// heartbeats (no commit index) and requests of deposed leaders move
// neither.
func TestLeaderCommitsKeepTheNewestTermsCommitIndex(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	type want struct {
		commit uint64
		at     time.Time
	}
	var c leaderCommits
	for i, step := range []struct {
		cmd  any
		now  time.Time
		want want
	}{
		{&raft.AppendEntriesRequest{Term: 2}, at(1), want{0, time.Time{}}},                                       // heartbeat: nothing known yet
		{&raft.AppendEntriesRequest{Term: 2, PrevLogEntry: 9, LeaderCommitIndex: 10}, at(2), want{10, at(2)}},    // replication
		{&raft.AppendEntriesRequest{Term: 2, LeaderCommitIndex: 12}, at(3), want{12, at(3)}},                     // empty append: still carries the commit
		{&raft.AppendEntriesRequest{Term: 2}, at(4), want{12, at(3)}},                                            // heartbeat: the commit's time stays
		{&raft.RequestVoteRequest{Term: 5}, at(5), want{12, at(3)}},                                              // not an append
		{&raft.AppendEntriesRequest{Term: 3}, at(6), want{12, at(3)}},                                            // a new leader's heartbeat moves the term
		{&raft.AppendEntriesRequest{Term: 2, PrevLogEntry: 12, LeaderCommitIndex: 20}, at(7), want{12, at(3)}},   // deposed leader
		{&raft.AppendEntriesRequest{Term: 3, PrevLogEntry: 12, LeaderCommitIndex: 11}, at(8), want{12, at(8)}},   // lower commit from the new leader: the index stays
		{&raft.AppendEntriesRequest{Term: 3, PrevLogEntry: 13, LeaderCommitIndex: 14}, at(9), want{14, at(9)}},   // and rises again
		{&raft.AppendEntriesRequest{Term: 4, PrevLogEntry: 14, LeaderCommitIndex: 15}, at(10), want{15, at(10)}}, // a newer term without a heartbeat first
		{&raft.AppendEntriesRequest{Term: 3, PrevLogEntry: 14, LeaderCommitIndex: 30}, at(11), want{15, at(10)}}, // deposed again
		{&raft.InstallSnapshotRequest{Term: 4, LastLogIndex: 40}, at(12), want{15, at(10)}},                      // snapshots carry no commit index
		{&raft.AppendEntriesRequest{Term: 4, PrevLogEntry: 40, LeaderCommitIndex: 41}, at(13), want{41, at(13)}}, // after the snapshot
	} {
		c.observe(step.cmd, step.now)
		if commit, got := c.last(); commit != step.want.commit || !got.Equal(step.want.at) {
			t.Errorf("step %d (%T %+v): commit %d at %v, want %d at %v", i, step.cmd, step.cmd, commit, got, step.want.commit, step.want.at)
		}
	}
}

// TestTransportObservesAppendEntriesAndHeartbeats: the store's transport
// hands raft every RPC (an append's commit index lowered to what it
// matched: matchedcommit_test.go), takes the commit index from appends
// and the term from heartbeats (raft's fast path past Consumer), and its
// Close stops its goroutine and may be called twice.
func TestTransportObservesAppendEntriesAndHeartbeats(t *testing.T) {
	log := NewHCLog(testLogger(t, slog.LevelWarn), "raft-net")
	newNet := func() *raft.NetworkTransport {
		tr, err := raft.NewTCPTransportWithLogger("127.0.0.1:0", nil, 2, 5*time.Second, log)
		if err != nil {
			t.Fatal(err)
		}
		return tr
	}
	leader := newNet()
	t.Cleanup(func() { leader.Close() })
	follower := newObservingTransport(newNet(), nil, 0)
	t.Cleanup(func() { follower.Close() })

	heartbeats := make(chan *raft.AppendEntriesRequest, 1)
	follower.SetHeartbeatHandler(func(rpc raft.RPC) {
		heartbeats <- rpc.Command.(*raft.AppendEntriesRequest)
		rpc.Respond(&raft.AppendEntriesResponse{Term: 7, Success: true}, nil)
	})
	stopRaft := make(chan struct{})
	raftDone := make(chan struct{})
	go func() { // raft's side: answers what Consumer hands on
		defer close(raftDone)
		for {
			select {
			case <-stopRaft:
				return
			case rpc := <-follower.Consumer():
				req := rpc.Command.(*raft.AppendEntriesRequest)
				rpc.Respond(&raft.AppendEntriesResponse{Term: req.Term, LastLog: req.PrevLogEntry + uint64(len(req.Entries)), Success: true}, nil)
			}
		}
	}()
	t.Cleanup(func() {
		close(stopRaft)
		<-raftDone
	})
	send := func(req *raft.AppendEntriesRequest) *raft.AppendEntriesResponse {
		t.Helper()
		req.RPCHeader = raft.RPCHeader{ID: []byte("n1"), Addr: []byte(leader.LocalAddr())}
		var resp raft.AppendEntriesResponse
		if err := leader.AppendEntries("n2", follower.LocalAddr(), req, &resp); err != nil {
			t.Fatalf("append entries: %v", err)
		}
		return &resp
	}

	before := time.Now()
	resp := send(&raft.AppendEntriesRequest{Term: 7, PrevLogEntry: 4, PrevLogTerm: 7, LeaderCommitIndex: 5,
		Entries: []*raft.Log{{Index: 5, Term: 7, Type: raft.LogCommand, Data: []byte("x")}}})
	if !resp.Success || resp.LastLog != 5 {
		t.Fatalf("append answered %+v, want the follower's answer (success, last log 5)", resp)
	}
	commit, at := follower.LeaderCommit()
	if commit != 5 || at.Before(before) {
		t.Fatalf("after an append with commit 5: commit %d at %v, want 5 after %v", commit, at, before)
	}

	send(&raft.AppendEntriesRequest{Term: 8}) // a heartbeat of a newer leader
	select {
	case hb := <-heartbeats:
		if hb.Term != 8 {
			t.Fatalf("heartbeat handler got term %d, want 8", hb.Term)
		}
	default:
		t.Fatal("the heartbeat did not reach raft's heartbeat handler")
	}
	send(&raft.AppendEntriesRequest{Term: 7, PrevLogEntry: 5, PrevLogTerm: 7, LeaderCommitIndex: 9}) // the deposed leader
	if c, a := follower.LeaderCommit(); c != 5 || !a.Equal(at) {
		t.Fatalf("after a heartbeat of term 8 and an append of term 7: commit %d at %v, want 5 at %v", c, a, at)
	}

	if err := follower.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	select {
	case <-follower.done:
	default:
		t.Fatal("Close returned before the forwarding goroutine stopped")
	}
	if err := follower.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if !follower.IsShutdown() {
		t.Fatal("the network transport is still open after Close")
	}
}

// TestTransportCloseWaitsForTheHeartbeatsRaftHandles: raft handles
// heartbeats on the network transport's connection goroutines, which its
// Shutdown neither stops nor waits for; the store closes its log after
// Shutdown, and a heartbeat of a newer term then panicked raft when it
// saved the term. Close therefore returns only once the heartbeat in
// raft's handler has finished, and no heartbeat reaches the handler
// after it.
func TestTransportCloseWaitsForTheHeartbeatsRaftHandles(t *testing.T) {
	log := NewHCLog(testLogger(t, slog.LevelWarn), "raft-net")
	newNet := func() *raft.NetworkTransport {
		tr, err := raft.NewTCPTransportWithLogger("127.0.0.1:0", nil, 2, 5*time.Second, log)
		if err != nil {
			t.Fatal(err)
		}
		return tr
	}
	leader := newNet()
	t.Cleanup(func() { leader.Close() })
	follower := newObservingTransport(newNet(), nil, 0)
	t.Cleanup(func() { follower.Close() })

	entered, release := make(chan struct{}, 2), make(chan struct{})
	closed := make(chan struct{})
	var afterClose atomic.Bool
	follower.SetHeartbeatHandler(func(rpc raft.RPC) {
		select {
		case <-closed:
			afterClose.Store(true)
		default:
		}
		entered <- struct{}{}
		<-release
		rpc.Respond(&raft.AppendEntriesResponse{Term: 8, Success: true}, nil)
	})
	heartbeat := func() error {
		req := &raft.AppendEntriesRequest{RPCHeader: raft.RPCHeader{ID: []byte("n1"), Addr: []byte(leader.LocalAddr())}, Term: 8}
		return leader.AppendEntries("n2", follower.LocalAddr(), req, &raft.AppendEntriesResponse{})
	}
	sent := make(chan error, 1)
	go func() { sent <- heartbeat() }()
	<-entered

	go func() {
		follower.Close()
		close(closed)
	}()
	select {
	case <-closed:
		t.Error("Close returned while raft was still handling a heartbeat")
	case <-time.After(200 * time.Millisecond):
	}
	close(release)
	<-closed
	if err := <-sent; err != nil {
		t.Errorf("the heartbeat raft was handling when Close began: %v, want its answer", err)
	}

	// The same connection may deliver another heartbeat after Close.
	if err := heartbeat(); err == nil {
		t.Error("a heartbeat after Close was answered as if raft had handled it")
	}
	if afterClose.Load() {
		t.Error("a heartbeat reached raft's handler after Close")
	}
}

// finishedAppend is a pipelined AppendEntries that has been answered.
type finishedAppend struct {
	req   *raft.AppendEntriesRequest
	resp  *raft.AppendEntriesResponse
	err   error
	start time.Time
}

func (f *finishedAppend) Error() error                          { return f.err }
func (f *finishedAppend) Start() time.Time                      { return f.start }
func (f *finishedAppend) Request() *raft.AppendEntriesRequest   { return f.req }
func (f *finishedAppend) Response() *raft.AppendEntriesResponse { return f.resp }

// fakePipeline hands out the futures a test puts in done.
type fakePipeline struct {
	done   chan raft.AppendFuture
	closed bool
}

func (p *fakePipeline) AppendEntries(*raft.AppendEntriesRequest, *raft.AppendEntriesResponse) (raft.AppendFuture, error) {
	return nil, nil
}
func (p *fakePipeline) Consumer() <-chan raft.AppendFuture { return p.done }
func (p *fakePipeline) Close() error                       { p.closed = true; return nil }

// TestObservedPipelineShowsEachFinishedAppend: raft receives a
// pipeline's answered requests unchanged and in order, each shown to the
// observer first (its response only when it succeeded, and when it was
// sent); Close closes the
// inner pipeline once and stops the relay.
func TestObservedPipelineShowsEachFinishedAppend(t *testing.T) {
	inner := &fakePipeline{done: make(chan raft.AppendFuture)}
	type seen struct {
		prev uint64
		resp *raft.AppendEntriesResponse
		err  error
		sent time.Time
	}
	var observed []seen
	p := newObservedPipeline(inner, "n2", "n2:1", func(id raft.ServerID, target raft.ServerAddress, req *raft.AppendEntriesRequest,
		resp *raft.AppendEntriesResponse, err error, sent time.Time) {
		if id != "n2" || target != "n2:1" {
			t.Errorf("observed a request to %s at %s, want n2 at n2:1", id, target)
		}
		observed = append(observed, seen{req.PrevLogEntry, resp, err, sent})
	}, func(*raft.AppendEntriesRequest) {})
	ok := &raft.AppendEntriesResponse{Success: true}
	t0 := time.Unix(1000, 0)
	futures := []*finishedAppend{
		{req: &raft.AppendEntriesRequest{PrevLogEntry: 1}, resp: ok, start: t0},
		{req: &raft.AppendEntriesRequest{PrevLogEntry: 2}, resp: ok, err: errCutOff, start: t0.Add(time.Second)},
	}
	for _, f := range futures {
		inner.done <- f
		if got := <-p.Consumer(); got != raft.AppendFuture(f) {
			t.Fatalf("raft got %v, want the pipeline's future %v", got, f)
		}
	}
	want := []seen{{1, ok, nil, t0}, {2, nil, errCutOff, t0.Add(time.Second)}}
	if fmt.Sprint(observed) != fmt.Sprint(want) {
		t.Errorf("observed %v, want %v", observed, want)
	}
	if err := p.Close(); err != nil || !inner.closed {
		t.Fatalf("Close = %v, inner closed %v; want nil and closed", err, inner.closed)
	}
	if err := p.Close(); err != nil {
		t.Fatalf("second Close = %v", err)
	}
}
