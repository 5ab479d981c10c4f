package node_test

import (
	"context"
	"errors"
	"maps"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/zrpcio/zrpc/acl"
	"github.com/zrpcio/zrpc/api/apierr"
	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/client"
	"github.com/zrpcio/zrpc/node"
	"github.com/zrpcio/zrpc/testcluster"
)

// aclClient is a client of agent i's API sending token ("" for none).
func aclClient(t *testing.T, c *testcluster.Cluster, i int, token string) *client.Client {
	t.Helper()
	cl, err := client.New(client.Config{Endpoints: []string{c.GRPCAddr(i)}, Token: token})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	return cl
}

func aclRegister(ctx context.Context, cl *client.Client, service string) error {
	_, _, err := cl.Register(ctx, &pb.Instance{Service: service, Id: "i1", Address: "127.0.0.1:9000"})
	return err
}

// With ACLs on, every call needs a token: after bootstrap the management
// token creates a policy and a token, which may register user.rpc but not
// order.rpc, also through a follower (whose writes and consistent reads
// go to the leader); tokens survive an agent's restart.
func TestACLsOnAClusterOfAgents(t *testing.T) {
	c := testcluster.New(t, 3, testcluster.WithConfig(func(cfg *node.Config) { cfg.ACL = true }))
	ctx := ctxT(t)
	follower := (c.LeaderIndex() + 1) % c.Size()

	anon := aclClient(t, c, follower, "")
	if err := aclRegister(ctx, anon, "user.rpc"); !errors.Is(err, apierr.ErrUnauthenticated) {
		t.Fatalf("register without a token: %v, want Unauthenticated", err)
	}
	_, mgmtSecret, err := anon.ACLBootstrap(ctx)
	if err != nil {
		t.Fatalf("bootstrap through a follower: %v", err)
	}
	if _, _, err := anon.ACLBootstrap(ctx); !errors.Is(err, apierr.ErrFailedPrecondition) {
		t.Fatalf("second bootstrap: %v, want FailedPrecondition", err)
	}
	admin := aclClient(t, c, follower, mgmtSecret)
	if _, err := admin.ACLPolicyCreate(ctx, "svc-user", "", `service "user." { write }`); err != nil {
		t.Fatalf("policy create: %v", err)
	}
	_, userSecret, err := admin.ACLTokenCreate(ctx, "user service", "svc-user")
	if err != nil {
		t.Fatalf("token create: %v", err)
	}

	user := aclClient(t, c, follower, userSecret)
	if err := aclRegister(ctx, user, "user.rpc"); err != nil {
		t.Fatalf("user token registering user.rpc: %v", err)
	}
	if err := aclRegister(ctx, user, "order.rpc"); !errors.Is(err, apierr.ErrPermissionDenied) {
		t.Fatalf("user token registering order.rpc: %v, want PermissionDenied", err)
	}
	if insts, _, err := user.Get(ctx, "user.rpc", client.WithConsistency(pb.Consistency_CONSISTENT)); err != nil || len(insts) != 1 {
		t.Fatalf("consistent read through a follower: %d instances, %v", len(insts), err)
	}
	if _, err := user.Status(ctx); !errors.Is(err, apierr.ErrPermissionDenied) {
		t.Fatalf("user token reading the agent's status: %v, want PermissionDenied", err)
	}
	if _, err := admin.Status(ctx); err != nil {
		t.Fatalf("management token reading the agent's status: %v", err)
	}

	c.Restart(follower)
	restarted := aclClient(t, c, follower, userSecret)
	c.WaitFor(30*time.Second, "the restarted agent accepts the user token", func() bool {
		return aclRegister(ctx, restarted, "user.rpc") == nil
	})
	if err := aclRegister(ctx, restarted, "order.rpc"); !errors.Is(err, apierr.ErrPermissionDenied) {
		t.Fatalf("after restart, order.rpc: %v, want PermissionDenied", err)
	}
}

// userReader starts an agent with ACLs on, user.rpc and order.rpc
// registered, and returns it with the secret of a token that may read
// user.* alone.
func userReader(t *testing.T) (*testcluster.Cluster, string) {
	c := testcluster.New(t, 1, testcluster.WithConfig(func(cfg *node.Config) { cfg.ACL = true }))
	ctx := ctxT(t)
	_, mgmtSecret, err := aclClient(t, c, 0, "").ACLBootstrap(ctx)
	if err != nil {
		t.Fatal(err)
	}
	admin := aclClient(t, c, 0, mgmtSecret)
	for _, svc := range []string{"user.rpc", "order.rpc"} {
		if err := aclRegister(ctx, admin, svc); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := admin.ACLPolicyCreate(ctx, "read-user", "", `service "user." { read }`); err != nil {
		t.Fatal(err)
	}
	_, secret, err := admin.ACLTokenCreate(ctx, "reader", "read-user")
	if err != nil {
		t.Fatal(err)
	}
	return c, secret
}

// A token that may read user.* watches user.rpc, and every service: both
// snapshots hold user.rpc's instance (the ACL filter reads each event's
// service, so the pages must carry it), and the watch of every service
// leaves order.rpc out.
func TestWatchWithATokenSeesTheServicesItMayRead(t *testing.T) {
	c, secret := userReader(t)
	ctx := ctxT(t)
	reader := aclClient(t, c, 0, secret)
	for _, svc := range []string{"user.rpc", ""} {
		w, err := reader.Watch(ctx, svc, 0)
		if err != nil {
			t.Fatalf("watch %q: %v", svc, err)
		}
		resp, err := w.Recv()
		w.Close()
		if err != nil {
			t.Fatalf("watch %q: %v", svc, err)
		}
		var got []string
		for _, ev := range resp.Events {
			got = append(got, ev.GetInstance().GetService()+"/"+ev.GetInstance().GetId())
		}
		if !resp.Snapshot || len(got) != 1 || got[0] != "user.rpc/i1" {
			t.Fatalf("watch %q: snapshot %v of %v, want user.rpc/i1 alone", svc, resp.Snapshot, got)
		}
	}
}

// On a WatchMany stream each watch is checked on its own: a watch of a
// service the token may not read is refused alone (PermissionDenied),
// the stream's other watches go on, and a watch of every service gets
// only the services the token may read.
func TestWatchManyChecksEachWatchAgainstTheToken(t *testing.T) {
	c, secret := userReader(t)
	ctx := ctxT(t)
	cc, err := grpc.NewClient(c.GRPCAddr(0), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	sctx := metadata.AppendToOutgoingContext(ctx, acl.AuthorizationKey, "Bearer "+secret)
	s, err := pb.NewRegistryClient(cc).WatchMany(sctx)
	if err != nil {
		t.Fatal(err)
	}
	for id, svc := range []string{"order.rpc", "user.rpc", ""} {
		req := &pb.WatchManyRequest{Kind: &pb.WatchManyRequest_Create{Create: &pb.WatchCreate{WatchId: uint64(id + 1), Watch: &pb.WatchRequest{Service: svc}}}}
		if err := s.Send(req); err != nil {
			t.Fatal(err)
		}
	}
	got := map[uint64]string{}
	for len(got) < 3 {
		r, err := s.Recv()
		if err != nil {
			t.Fatalf("the stream ended after %v: %v", got, err)
		}
		if r.Ended != nil {
			got[r.WatchId] = "ended " + codes.Code(r.Ended.Code).String()
			continue
		}
		var evs []string
		for _, ev := range r.Response.Events {
			evs = append(evs, ev.GetInstance().GetService())
		}
		got[r.WatchId] = strings.Join(evs, ",")
	}
	want := map[uint64]string{1: "ended PermissionDenied", 2: "user.rpc", 3: "user.rpc"}
	if !maps.Equal(got, want) {
		t.Fatalf("watches of order.rpc, user.rpc and everything: %v, want %v", got, want)
	}
}

// TestIdleWatchEndsWhenItsTokenIsDeleted: a watch of a quiet service,
// served by a follower, ends with Unauthenticated when its token is
// deleted through the leader: at the deletion, which every replica
// applies, not at the service's next change, which may never come.
func TestIdleWatchEndsWhenItsTokenIsDeleted(t *testing.T) {
	c := testcluster.New(t, 3, testcluster.WithConfig(func(cfg *node.Config) { cfg.ACL = true }))
	ctx := ctxT(t)
	leader := c.LeaderIndex()
	follower := (leader + 1) % c.Size()
	_, mgmtSecret, err := aclClient(t, c, leader, "").ACLBootstrap(ctx)
	if err != nil {
		t.Fatal(err)
	}
	admin := aclClient(t, c, leader, mgmtSecret)
	if err := aclRegister(ctx, admin, "user.rpc"); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.ACLPolicyCreate(ctx, "read-user", "", `service "user." { read }`); err != nil {
		t.Fatal(err)
	}
	tok, secret, err := admin.ACLTokenCreate(ctx, "reader", "read-user")
	if err != nil {
		t.Fatal(err)
	}
	cc, err := grpc.NewClient(c.GRPCAddr(follower), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	// The follower may not have applied the token yet: watch once it has.
	var w grpc.ServerStreamingClient[pb.WatchResponse]
	c.WaitFor(10*time.Second, "a watch of user.rpc through the follower with the new token", func() bool {
		s, err := pb.NewRegistryClient(cc).Watch(metadata.AppendToOutgoingContext(ctx, acl.AuthorizationKey, "Bearer "+secret), &pb.WatchRequest{Service: "user.rpc"})
		if err != nil {
			return false
		}
		if first, err := s.Recv(); err != nil || !first.Snapshot {
			return false
		}
		w = s
		return true
	})
	if err := admin.ACLTokenDelete(ctx, tok.AccessorId); err != nil {
		t.Fatal(err)
	}
	ended := make(chan error, 1)
	go func() {
		for {
			if _, err := w.Recv(); err != nil {
				ended <- err
				return
			}
		}
	}()
	select {
	case err := <-ended:
		if status.Code(err) != codes.Unauthenticated || !strings.Contains(err.Error(), "deleted while it was open") {
			t.Fatalf("the watch ended with %v, want Unauthenticated saying its token was deleted", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("a watch of a quiet service stayed open 20 s after its token was deleted")
	}
}
