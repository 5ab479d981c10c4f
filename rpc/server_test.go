package rpc_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/internal/testlog"
	"github.com/zrpcio/zrpc/rpc"
	"github.com/zrpcio/zrpc/testcluster"
)

func instances(t *testing.T, c *testcluster.Cluster, service string) []*pb.Instance {
	return instancesOn(t, c, 0, service)
}

// instancesOn is agent i's view of service (nil on error).
func instancesOn(t *testing.T, c *testcluster.Cluster, i int, service string) []*pb.Instance {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := c.Registry(i).Get(ctx, &pb.GetRequest{Service: service, Consistency: pb.Consistency_STALE})
	if err != nil {
		return nil
	}
	return resp.Instances
}

func TestServerRegistersReRegistersAndLeaves(t *testing.T) {
	c := testcluster.New(t, 1)
	srv, err := rpc.NewServer(rpc.ServerConfig{
		Name: "user.rpc", ListenOn: "127.0.0.1:0", ID: "u1", Zone: "a", Weight: 50,
		Agents: []string{c.GRPCAddr(0)}, DrainDelay: 50 * time.Millisecond,
	}, rpc.WithServerLogger(testlog.New(t, "server")))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Start(ctx); err != nil {
		t.Fatal(err)
	}
	got := instances(t, c, "user.rpc")
	if len(got) != 1 || got[0].Id != "u1" || got[0].Address != srv.Addr() || got[0].Weight != 50 ||
		got[0].Zone != "a" || got[0].Session == "" || got[0].Health != pb.Health_PASSING {
		t.Fatalf("registered = %v, want u1 at %s, weight 50, zone a, session-bound, passing", got, srv.Addr())
	}

	// grpc.health.v1 answers (grpcurl and agent gRPC checks work).
	conn, err := grpc.NewClient(srv.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil || resp.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health = %v, %v", resp, err)
	}

	// The agent restarts: the session breaks, the instance is removed with
	// it, and the server registers again on its own.
	first := got[0].Session
	c.Restart(0)
	c.WaitFor(20*time.Second, "server registered again, on a new session, after the agent restart", func() bool {
		got := instances(t, c, "user.rpc")
		return len(got) == 1 && got[0].Id == "u1" && got[0].Session != "" && got[0].Session != first
	})

	if err := srv.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if got := instances(t, c, "user.rpc"); len(got) != 0 {
		t.Fatalf("after Stop the registry still has %v", got)
	}
	if err := srv.Stop(ctx); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
}

// TestServerRegistersAgainAfterItsAgentWasReaped: an agent cut off past
// dead_node_reap is reaped (its sessions and instances deleted) though it
// runs on; once the partition heals it rejoins the cluster, and a server
// registered through it is registered again, visible through the others.
func TestServerRegistersAgainAfterItsAgentWasReaped(t *testing.T) {
	c := testcluster.New(t, 3, testcluster.WithDeadNodeReap(time.Second))
	cut := (c.LeaderIndex() + 1) % 3
	other := (cut + 1) % 3
	var rest []int
	for i := 0; i < 3; i++ {
		if i != cut {
			rest = append(rest, i)
		}
	}
	startServer(t, c, cut)
	c.WaitFor(20*time.Second, "u1 visible through another agent", func() bool {
		return len(instancesOn(t, c, other, "user.rpc")) == 1
	})

	c.Partition([]int{cut}, rest)
	c.WaitFor(30*time.Second, "the cut-off agent reaped: out of Raft, u1 deleted", func() bool {
		l := c.Leader()
		if l == nil || l.Name() == c.Name(cut) {
			return false
		}
		servers, err := l.Store().Servers()
		return err == nil && len(servers) == 2 && len(instancesOn(t, c, other, "user.rpc")) == 0
	})
	c.Heal()
	c.WaitFor(30*time.Second, "the agent back in Raft and u1 registered again, passing, through another agent", func() bool {
		l := c.Leader()
		if l == nil {
			return false
		}
		servers, err := l.Store().Servers()
		got := instancesOn(t, c, other, "user.rpc")
		return err == nil && len(servers) == 3 &&
			len(got) == 1 && got[0].Id == "u1" && got[0].Node == c.Name(cut) && got[0].Health == pb.Health_PASSING
	})
}

func TestServerConfigValidation(t *testing.T) {
	_, err := rpc.NewServer(rpc.ServerConfig{ListenOn: "nope", Weight: 20000})
	if err == nil {
		t.Fatal("NewServer accepted a bad config")
	}
	for _, field := range []string{"Name:", "ListenOn:", "Weight:"} {
		if !strings.Contains(err.Error(), field) {
			t.Errorf("error does not name %s: %v", field, err)
		}
	}
}

func TestServerStartFailsClearlyWithoutAgent(t *testing.T) {
	srv, err := rpc.NewServer(rpc.ServerConfig{Name: "user.rpc", ListenOn: "127.0.0.1:0", Agents: []string{"127.0.0.1:1"}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	err = srv.Start(ctx)
	if err == nil || !strings.Contains(err.Error(), "127.0.0.1:1") {
		t.Fatalf("Start without an agent: %v, want an error naming the agent address", err)
	}
	if !strings.Contains(err.Error(), "is zrpcd running at 127.0.0.1:1? `zrpcd agent --dev` starts one") {
		t.Fatalf("Start without an agent: %v, want it to say how to start one", err)
	}
}
