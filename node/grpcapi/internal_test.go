package grpcapi

import (
	"context"
	"errors"
	"strings"
	"sync"
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
	leading      bool
	mu           sync.Mutex
	applied      []*pb.Command
	readIndexErr error
}

func (l *fakeLeader) IsLeader() bool { return l.leading }

// ReadIndex answers the count of commands applied, or readIndexErr.
func (l *fakeLeader) ReadIndex(context.Context) (uint64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return uint64(len(l.applied)), l.readIndexErr
}

func (l *fakeLeader) ApplyAsLeader(_ context.Context, cmd *pb.Command) (uint64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
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

// TestInternalReadIndexAnswersOnlyOnTheLeader: a follower refuses with
// NotLeader (the peer asks the leader again); the leader answers its read
// index, or the error confirming its leadership ended in.
func TestInternalReadIndexAnswersOnlyOnTheLeader(t *testing.T) {
	ctx := context.Background()
	l := &fakeLeader{applied: make([]*pb.Command, 7)}
	s := NewInternal(l, fakeMembership{})
	if _, err := s.ReadIndex(ctx, &pb.ReadIndexRequest{}); !errors.Is(err, raftstore.ErrNotLeader) {
		t.Fatalf("ReadIndex on a follower = %v, want ErrNotLeader", err)
	}
	l.leading = true
	resp, err := s.ReadIndex(ctx, &pb.ReadIndexRequest{})
	if err != nil || resp.Index != 7 {
		t.Fatalf("ReadIndex on the leader = %v, %v; want index 7", resp, err)
	}
	l.readIndexErr = raftstore.ErrNoLeader
	if _, err := s.ReadIndex(ctx, &pb.ReadIndexRequest{}); !errors.Is(err, raftstore.ErrNoLeader) {
		t.Fatalf("ReadIndex on a leader that cannot confirm it leads = %v, want ErrNoLeader", err)
	}
}

// TestInternalApplyBatchAnswersEachCommand: a batch is refused as a whole
// on a follower; on the leader each command is checked and proposed on
// its own and answered in the request's order, a refused one with its
// error, which keeps its meaning across the wire.
func TestInternalApplyBatchAnswersEachCommand(t *testing.T) {
	ctx := context.Background()
	deregister := func(id string) *pb.Command {
		return &pb.Command{Time: 42, Kind: &pb.Command_Deregister{Deregister: &pb.InstanceRef{Service: "user.rpc", Id: id}}}
	}
	upsert := &pb.Command{Kind: &pb.Command_NodeUpsert{NodeUpsert: &pb.Node{Name: "n2"}}}
	req := &pb.ApplyBatchRequest{Commands: []*pb.Command{deregister("u1"), upsert, deregister("u2")}}
	l := &fakeLeader{}
	s := NewInternal(l, fakeMembership{})
	if _, err := s.ApplyBatch(ctx, req); !errors.Is(err, raftstore.ErrNotLeader) {
		t.Fatalf("ApplyBatch on a follower = %v, want ErrNotLeader", err)
	}
	l.leading = true
	resp, err := s.ApplyBatch(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Results) != 3 {
		t.Fatalf("%d results for 3 commands", len(resp.Results))
	}
	if err := raftstore.ApplyResultErr(resp.Results[1]); !errors.Is(err, apierr.ErrInvalidArgument) {
		t.Errorf("the forwarded node record's result = %v, want InvalidArgument", err)
	}
	revs := map[uint64]bool{}
	for _, i := range []int{0, 2} {
		if err := raftstore.ApplyResultErr(resp.Results[i]); err != nil || resp.Results[i].Revision == 0 {
			t.Errorf("result %d = revision %d, %v; want applied", i, resp.Results[i].Revision, err)
		}
		revs[resp.Results[i].Revision] = true
	}
	if len(l.applied) != 2 || len(revs) != 2 {
		t.Fatalf("applied %v, want the two deregisters, each its own revision", l.applied)
	}
	for _, c := range l.applied {
		if c.Time != 0 {
			t.Errorf("applied %v with the peer's time, want it cleared", c)
		}
	}
}

// A batch of more commands than any agent forwards at once is refused
// whole, naming the limit, before one of them is proposed.
func TestInternalApplyBatchRefusesMoreCommandsThanAnAgentSends(t *testing.T) {
	l := &fakeLeader{leading: true}
	cmds := make([]*pb.Command, maxApplyBatch+1)
	for i := range cmds {
		cmds[i] = &pb.Command{Kind: &pb.Command_Deregister{Deregister: &pb.InstanceRef{Service: "user.rpc", Id: "u1"}}}
	}
	_, err := NewInternal(l, fakeMembership{}).ApplyBatch(context.Background(), &pb.ApplyBatchRequest{Commands: cmds})
	if !errors.Is(err, apierr.ErrInvalidArgument) || !strings.Contains(err.Error(), "apply_batch.commands: has 1025 commands, the limit is 1024") {
		t.Fatalf("ApplyBatch of %d commands = %v, want InvalidArgument naming the limit", len(cmds), err)
	}
	if len(l.applied) != 0 {
		t.Fatalf("a refused batch proposed %d commands", len(l.applied))
	}
}

// TestForwardedHealthOutputsAreBounded: Register sets an instance's health
// output itself, but a forwarded registration (and an agent's removal)
// carries it as sent: a peer could store megabytes on every replica and
// in every watch event. Both are bounded as a forwarded SetHealth is.
func TestForwardedHealthOutputsAreBounded(t *testing.T) {
	big := strings.Repeat("x", maxHealthOutput+1)
	register := func(output string) *pb.Command {
		return &pb.Command{Kind: &pb.Command_Register{Register: &pb.Instance{
			Service: "user.rpc", Id: "u1", Address: "127.0.0.1:9000", Node: "n1", HealthOutput: output}}}
	}
	if err := validateForwarded(register(strings.Repeat("x", maxHealthOutput)), fakeMembership{}); err != nil {
		t.Fatalf("a forwarded registration with %d bytes of health output: %v", maxHealthOutput, err)
	}
	for field, cmd := range map[string]*pb.Command{
		"instance.health_output": register(big),
		"node_remove.output":     {Kind: &pb.Command_NodeRemove{NodeRemove: &pb.NodeRemove{Name: "n2", Output: big}}},
	} {
		err := validateForwarded(cmd, fakeMembership{})
		if !errors.Is(err, apierr.ErrInvalidArgument) || !strings.Contains(err.Error(), field) {
			t.Errorf("forwarded %s of %d bytes = %v, want InvalidArgument naming it", field, len(big), err)
		}
	}
}
