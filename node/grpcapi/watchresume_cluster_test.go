package grpcapi_test

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/node"
	"github.com/zrpcio/zrpc/testcluster"
)

// On a follower of a real cluster, which asks the leader for its read
// index: a Watch or a WatchMany watch resuming after a revision past
// everything the cluster has committed (one of a cluster since rebuilt
// from an older state) starts with a snapshot; one resuming after a
// committed revision gets the events after it, no snapshot, unless it
// names another cluster as the one whose revision it is. With ACLs
// on, the watcher's token needs only read on the service: the leader
// answers its read index to the agent's proof.
func TestWatchResumingOnAFollowerAsksTheLeaderWhatWasCommitted(t *testing.T) {
	for _, acls := range []bool{false, true} {
		t.Run(map[bool]string{false: "ACLs off", true: "ACLs on"}[acls], func(t *testing.T) {
			testWatchResumingOnAFollower(t, acls)
		})
	}
}

func testWatchResumingOnAFollower(t *testing.T, acls bool) {
	c := testcluster.New(t, 3, testcluster.WithConfig(func(cfg *node.Config) { cfg.ACL = acls }))
	leader := c.LeaderIndex()
	follower := (leader + 1) % c.Size()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	admin, reader := ctx, ctx
	if acls {
		boot, err := pb.NewACLClient(dialAgent(t, c.GRPCAddr(leader))).Bootstrap(ctx, &pb.ACLBootstrapRequest{})
		if err != nil {
			t.Fatalf("ACL bootstrap: %v", err)
		}
		admin = withSecret(ctx, boot.Secret)
		aclc := pb.NewACLClient(dialAgent(t, c.GRPCAddr(leader)))
		if _, err := aclc.PolicyCreate(admin, &pb.ACLPolicyCreateRequest{Policy: &pb.ACLPolicy{Name: "r-read", Rules: `service "r." { read }`}}); err != nil {
			t.Fatal(err)
		}
		tok, err := aclc.TokenCreate(admin, &pb.ACLTokenCreateRequest{Policies: []string{"r-read"}})
		if err != nil {
			t.Fatal(err)
		}
		reader = withSecret(ctx, tok.Secret)
	}
	reg := pb.NewRegistryClient(dialAgent(t, c.GRPCAddr(follower)))
	registered, err := pb.NewRegistryClient(dialAgent(t, c.GRPCAddr(leader))).Register(admin,
		&pb.RegisterRequest{Instance: &pb.Instance{Service: "r.rpc", Id: "r1", Address: "127.0.0.1:9000"}})
	if err != nil {
		t.Fatal(err)
	}
	rev := registered.Header.GetRevision()
	c.WaitFor(20*time.Second, "the follower to apply the registration and the token", func() bool {
		return c.Node(follower).Store().FSM().Revision() >= rev
	})
	beyond := rev + 1000

	watch, err := reg.Watch(reader, &pb.WatchRequest{Service: "r.rpc", FromRevision: beyond})
	if err != nil {
		t.Fatal(err)
	}
	first, err := watch.Recv()
	if err != nil {
		t.Fatalf("a Watch resuming after revision %d: %v, want a snapshot", beyond, err)
	}
	if !first.Snapshot || len(first.Events) != 1 || first.Events[0].GetInstance().GetId() != "r1" {
		t.Fatalf("a Watch resuming after revision %d: %v, want the snapshot of r.rpc", beyond, first)
	}

	many, err := reg.WatchMany(reader)
	if err != nil {
		t.Fatal(err)
	}
	cluster := c.Node(follower).Store().FSM().ClusterID()
	for id, req := range map[uint64]*pb.WatchRequest{
		1: {Service: "r.rpc", FromRevision: beyond},
		2: {Service: "r.rpc", FromRevision: rev - 1},
		3: {Service: "r.rpc", FromRevision: rev - 1, ClusterId: cluster},
		4: {Service: "r.rpc", FromRevision: rev - 1, ClusterId: "0123456789abcdef0123456789abcdef"},
	} {
		if err := many.Send(&pb.WatchManyRequest{Kind: &pb.WatchManyRequest_Create{Create: &pb.WatchCreate{WatchId: id, Watch: req}}}); err != nil {
			t.Fatal(err)
		}
	}
	got := map[uint64]*pb.WatchResponse{}
	for len(got) < 4 {
		r, err := many.Recv()
		if err != nil {
			t.Fatalf("WatchMany: %v", err)
		}
		if r.Ended != nil {
			t.Fatalf("watch %d ended: %v", r.WatchId, r.Ended)
		}
		got[r.WatchId] = r.Response
	}
	if r := got[1]; !r.Snapshot || len(r.Events) != 1 {
		t.Errorf("watch 1, resuming after revision %d: %v, want the snapshot of r.rpc", beyond, r)
	}
	for _, id := range []uint64{2, 3} { // of no cluster (a client from before cluster ids), or of this one
		if r := got[id]; r.Snapshot || len(r.Events) != 1 || r.Events[0].Revision != rev {
			t.Errorf("watch %d, resuming after revision %d: %v, want the registration at %d", id, rev-1, r, rev)
		}
	}
	if r := got[4]; !r.Snapshot || len(r.Events) != 1 {
		t.Errorf("watch 4, resuming after revision %d of another cluster: %v, want the snapshot of r.rpc", rev-1, r)
	}
}

// dialAgent is a plaintext connection to the agent at addr, closed when
// the test ends.
func dialAgent(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}
