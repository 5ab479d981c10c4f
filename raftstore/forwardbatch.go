package raftstore

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/zrpcio/zrpc/api/apierr"
	pb "github.com/zrpcio/zrpc/api/zrpcpb"
)

// Forwarded writes travel together: a follower has at most
// maxForwardCalls calls to the leader in flight; writes that arrive while
// all of them are busy wait, and when a call returns the writes waiting
// then go to the leader in one Internal.ApplyBatch call (at most
// maxForwardBatch of them, maxForwardBatchBytes together). A lone write
// goes as one Internal.Apply call, as before. Under load, the follower's
// writes thus cost the two agents one gRPC call per batch instead of one
// per write (headers, stream, cluster proof, goroutines), and the leader
// proposes a batch's commands at once, so raft appends them together.
// Each command keeps its own outcome: its revision or its error, and a
// write whose leader moved is retried on its own by Forwarder.OnLeader.
//
// A lone write's call belongs to the caller that sent it; a batch's call
// runs on a goroutine of its own, which ends with the call (by the latest
// of its writes' deadlines, or when the leader changes), so that the
// caller who sent it waits for its own write's outcome only until its own
// deadline, as the others do. Either passes its place on to the first
// waiting caller together with everything waiting (group commit).

// maxForwardCalls is how many forwarding calls to the leader a follower
// has in flight at once; writes beyond them wait and then go together.
// Measured with 16 writers on 3 agents (bench/registry, docs/benchmarks.md)
// a limit of 4 cost 13 % of the writes/s against 16 or 64: the leader's
// raft batches concurrent proposals anyway, so a write should wait only
// when a follower already has many calls in flight.
const maxForwardCalls = 16

// maxForwardBatch bounds the writes of one ApplyBatch call (raft appends
// at most 256 entries at once, Store.Open's MaxAppendEntries), and
// maxForwardBatchBytes their encoded size (a call of a single larger
// write goes anyway, as Apply did): far below the gRPC message limit.
const (
	maxForwardBatch      = 256
	maxForwardBatchBytes = 1 << 20
)

// errBatchUnsupported is the outcome of a batched write whose leader does
// not serve ApplyBatch (an agent of an older release): the caller
// forwards it on its own.
var errBatchUnsupported = errors.New("the leader does not serve Internal.ApplyBatch")

// forwardBatcher groups the forwarded writes to one leader connection.
type forwardBatcher struct {
	conn grpc.ClientConnInterface

	mu       sync.Mutex
	waiting  []*forwardCall
	inFlight int // calls sent and not yet returned (≤ maxForwardCalls)
	// unbatched is set once the leader answered ApplyBatch with
	// Unimplemented: every write goes as its own Apply call.
	unbatched bool
	// sent, when set, is called with the commands of every call sent
	// (tests count them).
	sent func(cmds int)
	// current, when set, returns the store's leader epoch
	// (leadermoves.go), which ends a batch call when the leader changes,
	// and whether conn still reaches the leader in it: a batch is not sent
	// to an agent that no longer leads.
	current func() (epoch context.Context, leads bool)
}

// forwardCall is one write waiting for, or riding in, a call.
type forwardCall struct {
	cmd      *pb.Command
	size     int       // cmd's encoded size
	deadline time.Time // the latest its call may take
	rev      uint64
	err      error
	done     chan struct{} // closed once rev and err are set
	lead     chan struct{} // closed when batch is this caller's to send
	batch    []*forwardCall
}

// apply forwards cmd to the leader, in a batch if other writes wait, and
// returns its revision. It waits until deadline at most, in a call of its
// own or in a batch that may run longer for the other writes; it returns
// earlier when ctx ends (the write may still be applied).
func (b *forwardBatcher) apply(ctx context.Context, cmd *pb.Command, deadline time.Time) (uint64, error) {
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	c := &forwardCall{cmd: cmd, deadline: deadline, done: make(chan struct{}), lead: make(chan struct{})}
	b.mu.Lock()
	if b.unbatched {
		b.mu.Unlock()
		return b.applyOne(ctx, cmd, deadline)
	}
	if b.inFlight < maxForwardCalls {
		b.inFlight++
		c.batch = []*forwardCall{c}
		b.mu.Unlock()
		b.send(ctx, c)
	} else {
		c.size = proto.Size(cmd)
		b.waiting = append(b.waiting, c)
		b.mu.Unlock()
		select {
		case <-c.done:
		case <-c.lead:
			b.send(ctx, c)
		case <-ctx.Done():
			if !b.leave(c) {
				return 0, ctx.Err()
			}
			select {
			case <-c.lead: // its batch is this caller's to send
				b.send(ctx, c)
			case <-c.done: // in a call already
			default:
				return 0, ctx.Err()
			}
		}
	}
	select {
	case <-c.done:
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	if errors.Is(c.err, errBatchUnsupported) {
		return b.applyOne(ctx, cmd, deadline)
	}
	return c.rev, c.err
}

// leave takes c out of the waiting writes, and reports whether it was too
// late: c has been handed a batch to send or rides in a call.
func (b *forwardBatcher) leave(c *forwardCall) (late bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if i := slices.Index(b.waiting, c); i >= 0 {
		b.waiting = slices.Delete(b.waiting, i, i+1)
		return false
	}
	return true
}

// send sends lead's batch as one call, sets every write's outcome, and
// then hands its place in flight on (handOn). A batch of several writes
// goes on a goroutine of its own (see applyBatch), and send returns at
// once.
func (b *forwardBatcher) send(ctx context.Context, lead *forwardCall) {
	batch := lead.batch
	if b.sent != nil {
		b.sent(len(batch))
	}
	if len(batch) > 1 {
		go func() {
			b.applyBatch(batch)
			b.handOn()
		}()
		return
	}
	// The caller's own context: its ACL token and trace go along.
	lead.rev, lead.err = b.applyOne(ctx, lead.cmd, lead.deadline)
	close(lead.done)
	b.handOn()
}

// handOn hands the place in flight of a call that returned to the first
// waiting write with all waiting writes as its batch, or gives it up.
func (b *forwardBatcher) handOn() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.waiting) == 0 {
		b.inFlight--
		return
	}
	n, size := 1, b.waiting[0].size
	for n < len(b.waiting) && n < maxForwardBatch && size+b.waiting[n].size <= maxForwardBatchBytes {
		size += b.waiting[n].size
		n++
	}
	next := b.waiting[0]
	next.batch = slices.Clone(b.waiting[:n])
	b.waiting = slices.Delete(b.waiting, 0, n)
	close(next.lead)
}

// applyOne forwards cmd alone with Internal.Apply.
func (b *forwardBatcher) applyOne(ctx context.Context, cmd *pb.Command, deadline time.Time) (uint64, error) {
	actx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	resp, err := pb.NewInternalClient(b.conn).Apply(actx, cmd)
	if err != nil {
		return 0, err
	}
	return resp.Revision, nil
}

// applyBatch forwards the writes of batch with one Internal.ApplyBatch
// call and sets their outcomes. The call carries no caller's context (one
// caller giving up must not fail the others): it runs until the latest
// of the writes' deadlines, or the leader changes, as an agent's call
// (the leader authorizes forwarded writes as the agent's).
func (b *forwardBatcher) applyBatch(batch []*forwardCall) {
	req := &pb.ApplyBatchRequest{Commands: make([]*pb.Command, len(batch))}
	deadline := batch[0].deadline
	for i, c := range batch {
		req.Commands[i] = c.cmd
		deadline = later(deadline, c.deadline)
	}
	base := context.Background()
	if b.current != nil {
		var leads bool
		if base, leads = b.current(); !leads {
			for _, c := range batch {
				c.err = errLeaderMoved
				close(c.done)
			}
			return
		}
	}
	ctx, cancel := context.WithDeadline(base, deadline)
	defer cancel()
	resp, err := pb.NewInternalClient(b.conn).ApplyBatch(ctx, req)
	if err == nil && len(resp.Results) != len(batch) {
		err = status.Errorf(codes.Internal, "the leader answered %d results for %d forwarded writes", len(resp.Results), len(batch))
	}
	if err != nil && base.Err() != nil {
		err = fmt.Errorf("%w (%v)", errLeaderMoved, err) // asked again of the new leader
	}
	if status.Code(err) == codes.Unimplemented {
		b.mu.Lock()
		b.unbatched = true
		b.mu.Unlock()
		err = errBatchUnsupported
	}
	for i, c := range batch {
		if err != nil {
			c.err = err
		} else {
			c.rev, c.err = resp.Results[i].Revision, ApplyResultErr(resp.Results[i])
		}
		close(c.done)
	}
}

// NewApplyResult returns the outcome of one command of an ApplyBatch
// call: its revision, or err as its status code, reason and message.
func NewApplyResult(rev uint64, err error) *pb.ApplyResult {
	if err == nil {
		return &pb.ApplyResult{Revision: rev}
	}
	st := status.Convert(apierr.ToStatus(err))
	return &pb.ApplyResult{
		ErrorStatus:  uint32(st.Code()),
		ErrorReason:  apierr.Code(err),
		ErrorMessage: st.Message(),
	}
}

// ApplyResultErr returns the error an ApplyResult carries, nil when its
// command was applied: one of zrpc's errors when it has a reason code
// (errors.Is works), a status error of its code otherwise.
func ApplyResultErr(r *pb.ApplyResult) error {
	switch {
	case r.ErrorStatus == uint32(codes.OK) && r.ErrorReason == "":
		return nil
	case r.ErrorReason != "":
		return apierr.FromCode(r.ErrorReason, r.ErrorMessage)
	}
	return status.Error(codes.Code(r.ErrorStatus), r.ErrorMessage)
}
