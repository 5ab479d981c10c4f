package raftstore

import (
	"sync"
	"sync/atomic"

	"github.com/hashicorp/raft"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
)

// A follower answers a forwarded write from its own apply.
//
// A write through a follower used to be answered when two things had
// happened: the leader's Internal.Apply call returned (after the leader's
// FSM applied the entry) and the follower's own replica had applied it
// (Forwarder.Apply waits for that, so the caller reads its own write).
// The leader pushes its commit index before it applies (commitpush.go),
// so the follower usually applies first and then waits for the leader's
// answer: one more hop on every forwarded write. Every command carries a
// request id (node.propose), and applying an entry gives every replica
// the same outcome (revision or rejection; a state machine is
// deterministic, and the request log answers a duplicate id alike on
// every replica). So the follower registers the id before it forwards
// and answers as soon as its replica applies that id, as etcd's member
// answers a proposal when it applies it; the leader's answer, which
// comes later, is then dropped. The leader's answer still decides when
// the entry was never proposed (no leader, refused, timed out).

// RequestWait is a forwarded write waiting for this replica to apply its
// request id.
type RequestWait struct {
	id   string
	done chan struct{}
	rev  uint64
	err  error
}

// Done is closed once this replica has applied the request; nil for a nil
// RequestWait (a receive from it blocks forever).
func (w *RequestWait) Done() <-chan struct{} {
	if w == nil {
		return nil
	}
	return w.done
}

// Result is the outcome this replica applied: its revision, or the
// rejection. Valid once Done is closed.
func (w *RequestWait) Result() (uint64, error) { return w.rev, w.err }

// requestWaits holds the requests this replica waits for, by id.
type requestWaits struct {
	n  atomic.Int32 // len(m), read without mu by every apply
	mu sync.Mutex
	m  map[string]*RequestWait
}

// AwaitRequest registers a wait for the entry carrying request id id. It
// returns nil when id is empty or already awaited (the second caller then
// relies on the leader's answer alone). Call StopAwait when done.
func (f *FSM) AwaitRequest(id string) *RequestWait {
	if id == "" {
		return nil
	}
	ws := &f.waits
	ws.mu.Lock()
	defer ws.mu.Unlock()
	if _, ok := ws.m[id]; ok {
		return nil
	}
	if ws.m == nil {
		ws.m = make(map[string]*RequestWait)
	}
	w := &RequestWait{id: id, done: make(chan struct{})}
	ws.m[id] = w
	ws.n.Add(1)
	return w
}

// StopAwait removes w (nil is fine) if its request has not been applied.
func (f *FSM) StopAwait(w *RequestWait) {
	if w == nil {
		return
	}
	ws := &f.waits
	ws.mu.Lock()
	defer ws.mu.Unlock()
	if ws.m[w.id] == w {
		delete(ws.m, w.id)
		ws.n.Add(-1)
	}
}

// answer gives the waits for cmds (the commands of logs, nil where none)
// the outcomes ApplyBatch returned (out). Replicas nobody waits on pay an
// atomic load per batch.
func (ws *requestWaits) answer(logs []*raft.Log, cmds []*pb.Command, out []any) {
	if ws.n.Load() == 0 {
		return
	}
	ws.mu.Lock()
	defer ws.mu.Unlock()
	for i, cmd := range cmds {
		if cmd == nil || cmd.RequestId == "" {
			continue
		}
		w := ws.m[cmd.RequestId]
		if w == nil {
			continue
		}
		delete(ws.m, w.id)
		ws.n.Add(-1)
		w.rev, w.err = applyOutcome(logs[i].Index, out[i])
		close(w.done)
	}
}

// applyOutcome is the revision and error of an entry applied at index
// whose FSM response was resp.
func applyOutcome(index uint64, resp any) (uint64, error) {
	switch r := resp.(type) {
	case Duplicate:
		return r.Revision, r.Err
	case error:
		return index, r
	}
	return index, nil
}
