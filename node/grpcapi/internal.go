package grpcapi

import (
	"context"
	"sync"

	"github.com/zrpcio/zrpc/api/apierr"
	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/raftstore"
)

// Leader is the agent as the Internal service uses it: it proposes what
// peers forward, while it leads.
type Leader interface {
	IsLeader() bool
	// ApplyAsLeader proposes cmd on this agent, the leader, and returns
	// its revision.
	ApplyAsLeader(ctx context.Context, cmd *pb.Command) (uint64, error)
	// ReadIndex is this leader's read index (raftstore.Store.ReadIndex).
	ReadIndex(ctx context.Context) (uint64, error)
}

// Internal serves peers' forwarded writes.
type Internal struct {
	pb.UnimplementedInternalServer
	leader     Leader
	membership Membership
}

// NewInternal returns the Internal service of leader, which checks
// forwarded commands against what membership knows.
func NewInternal(leader Leader, membership Membership) *Internal {
	return &Internal{leader: leader, membership: membership}
}

// Apply proposes a command a peer forwarded, once it has passed the checks
// the public API would have made (validateForwarded). The entry is stamped
// with the leader's clock, not the peer's.
func (s *Internal) Apply(ctx context.Context, cmd *pb.Command) (*pb.ApplyResponse, error) {
	if !s.leader.IsLeader() {
		return nil, raftstore.ErrNotLeader
	}
	if err := validateForwarded(cmd, s.membership); err != nil {
		return nil, err
	}
	cmd.Time = 0
	rev, err := s.leader.ApplyAsLeader(ctx, cmd)
	if err != nil {
		return nil, err
	}
	return &pb.ApplyResponse{Revision: rev}, nil
}

// ReadIndex answers the leader's read index to a peer that did not run
// for a while and catches up to it before it serves default reads.
func (s *Internal) ReadIndex(ctx context.Context, _ *pb.ReadIndexRequest) (*pb.ReadIndexResponse, error) {
	if !s.leader.IsLeader() {
		return nil, raftstore.ErrNotLeader
	}
	index, err := s.leader.ReadIndex(ctx)
	if err != nil {
		return nil, err
	}
	return &pb.ReadIndexResponse{Index: index}, nil
}

// maxApplyBatch bounds the commands of one ApplyBatch call: each may
// become a proposal of its own. An agent sends at most 256 (raftstore's
// forward batches); a call of more is no agent's.
const maxApplyBatch = 1024

// ApplyBatch proposes the commands a peer forwarded together, each as
// Apply would, all at once (raft appends them together), and answers
// each command's revision or error in the request's order. A command that
// fails the checks fails alone.
func (s *Internal) ApplyBatch(ctx context.Context, req *pb.ApplyBatchRequest) (*pb.ApplyBatchResponse, error) {
	if !s.leader.IsLeader() {
		return nil, raftstore.ErrNotLeader
	}
	if len(req.Commands) > maxApplyBatch {
		return nil, apierr.Invalid("apply_batch.commands", "has %d commands, the limit is %d", len(req.Commands), maxApplyBatch)
	}
	results := make([]*pb.ApplyResult, len(req.Commands))
	var wg sync.WaitGroup
	for i, cmd := range req.Commands {
		if err := validateForwarded(cmd, s.membership); err != nil {
			results[i] = raftstore.NewApplyResult(0, err)
			continue
		}
		cmd.Time = 0
		wg.Go(func() {
			rev, err := s.leader.ApplyAsLeader(ctx, cmd)
			results[i] = raftstore.NewApplyResult(rev, err)
		})
	}
	wg.Wait()
	return &pb.ApplyBatchResponse{Results: results}, nil
}
