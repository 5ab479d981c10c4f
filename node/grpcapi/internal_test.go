package grpcapi

import (
	"context"
	"errors"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/zrpcio/zrpc/api/apierr"
	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/gossip"
	"github.com/zrpcio/zrpc/raftstore"
)

// fakeLeader records what it is asked to apply.
type fakeLeader struct {
	leading bool
	applied []*pb.Command
}

func (l *fakeLeader) IsLeader() bool { return l.leading }

func (l *fakeLeader) ApplyAsLeader(_ context.Context, cmd *pb.Command) (uint64, error) {
	l.applied = append(l.applied, cmd)
	return uint64(len(l.applied)), nil
}

// fakeMembership knows agent "n1" (itself) and nothing else.
type fakeMembership struct{}

func (fakeMembership) Self() string { return "n1" }
func (fakeMembership) Node(name string) *pb.Node {
	if name == "n1" {
		return &pb.Node{Name: "n1"}
	}
	return nil
}
func (fakeMembership) Session(string) *pb.Session { return nil }
func (fakeMembership) GossipStatus(string) string { return "unknown" }

// gossipMembership knows agent n1 in the registry and what gossip says of
// the others.
type gossipMembership struct {
	fakeMembership
	status map[string]string
}

func (m gossipMembership) GossipStatus(name string) string {
	if s, ok := m.status[name]; ok {
		return s
	}
	return "unknown"
}

// TestKnownNodeRetriesAgentsGossipMayStillSeeComingBack: an agent the
// registry does not list is refused for good only when gossip does not
// know it or saw it leave; one gossip sees alive, or still marks failed
// after a partition (it may be back before gossip hears it), gets
// Unavailable, which clients retry.
func TestKnownNodeRetriesAgentsGossipMayStillSeeComingBack(t *testing.T) {
	m := gossipMembership{status: map[string]string{
		"alive": gossip.StatusAlive, "failed": gossip.StatusFailed,
		"suspect": gossip.StatusSuspect, "left": gossip.StatusLeft,
	}}
	for name, want := range map[string]codes.Code{
		"n1": codes.OK, "alive": codes.Unavailable, "failed": codes.Unavailable,
		"suspect": codes.Unavailable, "left": codes.InvalidArgument, "stranger": codes.InvalidArgument,
	} {
		err := knownNode(m, "instance.node", name)
		if got := status.Code(apierr.ToStatus(err)); got != want {
			t.Errorf("knownNode(%s) = %v (%v), want %v", name, got, err, want)
		}
	}
}

// TestInternalApplyProposesOnlyValidCommandsWhileLeading: a forwarded
// command is refused with ErrNotLeader by a follower and with
// InvalidArgument when a peer may not forward it, in both cases without a
// write; a valid one is proposed with the leader's clock (its time
// cleared).
func TestInternalApplyProposesOnlyValidCommandsWhileLeading(t *testing.T) {
	ctx := context.Background()
	deregister := func() *pb.Command {
		return &pb.Command{Time: 42, Kind: &pb.Command_Deregister{Deregister: &pb.InstanceRef{Service: "user.rpc", Id: "u1"}}}
	}
	l := &fakeLeader{}
	s := NewInternal(l, fakeMembership{})
	if _, err := s.Apply(ctx, deregister()); !errors.Is(err, raftstore.ErrNotLeader) {
		t.Fatalf("Apply on a follower = %v, want ErrNotLeader", err)
	}
	l.leading = true
	upsert := &pb.Command{Kind: &pb.Command_NodeUpsert{NodeUpsert: &pb.Node{Name: "n2"}}}
	if _, err := s.Apply(ctx, upsert); !errors.Is(err, apierr.ErrInvalidArgument) {
		t.Fatalf("Apply of a forwarded node record = %v, want InvalidArgument", err)
	}
	if len(l.applied) != 0 {
		t.Fatalf("refused commands were applied: %v", l.applied)
	}
	resp, err := s.Apply(ctx, deregister())
	if err != nil {
		t.Fatal(err)
	}
	if resp.Revision != 1 || len(l.applied) != 1 || l.applied[0].Time != 0 {
		t.Fatalf("applied %v (revision %d), want the deregister with its time cleared", l.applied, resp.Revision)
	}
}
