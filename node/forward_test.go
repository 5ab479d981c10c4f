package node

import (
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
)

func TestForwardedCommandsAreValidatedAndChangeNothing(t *testing.T) {
	n := startNode(t, testConfig(t))
	conn, c := dial(t, n.GRPCAddr())
	internal := pb.NewInternalClient(conn)
	// Calls carry an agent's proof: what is checked here is the content.
	waitFor(t, 10*time.Second, "the cluster's identity applied", func() bool { return n.Store().FSM().ClusterSecret() != nil })
	ctx := metadata.AppendToOutgoingContext(ctxT(t), agentProofKey, agentProof(n.Store().FSM().ClusterSecret(), "/zrpc.v1.Internal/Apply", n.GRPCAddr()))
	if _, err := c.Register(ctx, &pb.RegisterRequest{Instance: inst("user.rpc", "u1", "127.0.0.1:9001")}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "leader records its own node", func() bool { return n.Store().FSM().Node("n1") != nil })

	owned := func(in *pb.Instance) *pb.Instance {
		in.Node = "n1"
		return in
	}
	bad := []struct {
		name string
		cmd  *pb.Command
		code codes.Code
		want string
	}{
		{"empty", &pb.Command{}, codes.InvalidArgument, "command"},
		{"long request id", &pb.Command{RequestId: strings.Repeat("r", 300), Kind: &pb.Command_Deregister{Deregister: &pb.InstanceRef{Service: "user.rpc", Id: "u1"}}},
			codes.InvalidArgument, "command.request_id"},
		{"forged owner", &pb.Command{Kind: &pb.Command_Register{Register: &pb.Instance{Service: "user.rpc", Id: "u2", Address: "127.0.0.1:9002", Node: "ghost"}}},
			codes.InvalidArgument, `instance.node: "ghost" is not an agent`},
		{"invalid service", &pb.Command{Kind: &pb.Command_Register{Register: owned(inst("user rpc", "u2", "127.0.0.1:9002"))}},
			codes.InvalidArgument, "instance.service"},
		{"invalid address", &pb.Command{Kind: &pb.Command_Register{Register: owned(inst("user.rpc", "u2", "nowhere"))}},
			codes.InvalidArgument, "instance.address"},
		{"unknown session", &pb.Command{Kind: &pb.Command_Register{Register: &pb.Instance{Service: "user.rpc", Id: "u2", Address: "127.0.0.1:9002", Node: "n1", Session: "abc"}}},
			codes.FailedPrecondition, "instance.session abc does not exist"},
		{"invalid deregister", &pb.Command{Kind: &pb.Command_Deregister{Deregister: &pb.InstanceRef{Service: "user.rpc", Id: ""}}},
			codes.InvalidArgument, "deregister.id"},
		{"agent health", &pb.Command{Kind: &pb.Command_SetHealth{SetHealth: &pb.SetHealth{Node: "n1", Health: pb.Health_CRITICAL}}},
			codes.InvalidArgument, "set_health.node"},
		{"unknown health", &pb.Command{Kind: &pb.Command_SetHealth{SetHealth: &pb.SetHealth{Instances: []*pb.InstanceRef{{Service: "user.rpc", Id: "u1"}}, Health: 42}}},
			codes.InvalidArgument, "set_health.health"},
		{"node record", &pb.Command{Kind: &pb.Command_NodeUpsert{NodeUpsert: &pb.Node{Name: "n1", GrpcAddress: "127.0.0.1:1"}}},
			codes.InvalidArgument, "command.node_upsert"},
		{"remove the leader", &pb.Command{Kind: &pb.Command_NodeRemove{NodeRemove: &pb.NodeRemove{Name: "n1"}}},
			codes.FailedPrecondition, "n1 is the leader"},
		{"remove an agent gossip does not report failed", &pb.Command{Kind: &pb.Command_NodeRemove{NodeRemove: &pb.NodeRemove{Name: "ghost"}}},
			codes.FailedPrecondition, "agent ghost is unknown to gossip"},
		{"session of an unknown agent", &pb.Command{Kind: &pb.Command_SessionCreate{SessionCreate: &pb.SessionCreate{Session: &pb.Session{Id: "s1", Node: "ghost"}}}},
			codes.InvalidArgument, "session_create.session.node"},
		{"session without id", &pb.Command{Kind: &pb.Command_SessionCreate{SessionCreate: &pb.SessionCreate{Session: &pb.Session{Node: "n1"}}}},
			codes.InvalidArgument, "session_create.session.id"},
		{"destroy no session", &pb.Command{Kind: &pb.Command_SessionDestroy{SessionDestroy: &pb.SessionDestroy{}}},
			codes.InvalidArgument, "session_destroy.ids"},
		{"pending put with a bad id", &pb.Command{Kind: &pb.Command_BlobPending{BlobPending: &pb.BlobPending{Id: "../x", Name: "b", Node: "n1"}}},
			codes.InvalidArgument, "blob_pending.id"},
		{"pending put of an unknown agent", &pb.Command{Kind: &pb.Command_BlobPending{BlobPending: &pb.BlobPending{Id: "0123456789abcdef", Name: "b", Node: "ghost"}}},
			codes.InvalidArgument, "blob_pending.node"},
		{"commit without a blob", &pb.Command{Kind: &pb.Command_BlobCommit{BlobCommit: &pb.BlobCommit{}}},
			codes.InvalidArgument, "blob_commit.blob"},
		{"renew a put under a bad name", &pb.Command{Kind: &pb.Command_BlobRenew{BlobRenew: &pb.BlobRenew{Id: "0123456789abcdef", Name: "a/../b"}}},
			codes.InvalidArgument, "blob_renew.name"},
		{"delete a bad name", &pb.Command{Kind: &pb.Command_BlobDelete{BlobDelete: &pb.BlobDelete{Name: "a/../b"}}},
			codes.InvalidArgument, "blob_delete.name"},
		{"shards on an unknown agent", &pb.Command{Kind: &pb.Command_BlobShards{BlobShards: &pb.BlobShards{Id: "0123456789abcdef", Shards: []*pb.ShardPlacement{{Node: "ghost"}}}}},
			codes.InvalidArgument, "blob_shards.shards.node"},
	}
	before := n.Store().FSM().Revision()
	beforeInst, _ := n.Store().FSM().Instances("user.rpc")
	for _, tc := range bad {
		_, err := internal.Apply(ctx, tc.cmd)
		if st := status.Convert(err); st.Code() != tc.code || !strings.Contains(st.Message(), tc.want) {
			t.Errorf("%s: Apply = %v, want %v naming %q", tc.name, err, tc.code, tc.want)
		}
	}
	if after := n.Store().FSM().Revision(); after != before {
		t.Errorf("revision moved from %d to %d: a rejected command was applied", before, after)
	}
	afterInst, _ := n.Store().FSM().Instances("user.rpc")
	if len(afterInst) != len(beforeInst) || !proto.Equal(afterInst[0], beforeInst[0]) {
		t.Errorf("instances changed: %v -> %v", beforeInst, afterInst)
	}
	if n.Store().FSM().Node("n1") == nil {
		t.Errorf("the leader's node record is gone")
	}

	// What an agent forwards is still accepted.
	ok := &pb.Command{Kind: &pb.Command_Register{Register: owned(inst("user.rpc", "u2", "127.0.0.1:9002"))}}
	if _, err := internal.Apply(ctx, ok); err != nil {
		t.Fatalf("valid forwarded register: %v", err)
	}
	if got := getInstances(t, c, "user.rpc"); len(got) != 2 || got[1].Node != "n1" {
		t.Fatalf("after a valid forwarded register: %v", got)
	}
}
