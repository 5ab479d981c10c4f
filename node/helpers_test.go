package node

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/internal/testlog"
	"github.com/zrpcio/zrpc/internal/testwait"
)

// testConfig is a one-node agent on free loopback ports with short timers.
func testConfig(t testing.TB) Config {
	c := Default()
	c.Name = "n1"
	c.DataDir = t.TempDir()
	c.GRPCPort, c.RaftPort, c.GossipPort, c.HTTPPort = 0, 0, 0, 0
	c.DNSPort = 0
	c.RaftHeartbeatTimeout = 100 * time.Millisecond
	c.RaftElectionTimeout = 100 * time.Millisecond
	c.RaftLeaderLease = 100 * time.Millisecond
	c.HealthInterval = 20 * time.Millisecond
	return c
}

// startNode starts an agent and waits until it leads; it is closed when the
// test ends.
func startNode(t testing.TB, cfg Config, opts ...Option) *Node {
	t.Helper()
	n := startedNode(t, cfg, opts...)
	waitFor(t, 10*time.Second, "agent becomes leader", func() bool { return n.Store().IsLeader() })
	return n
}

// startedNode starts an agent, without waiting for anything; it is closed
// when the test ends (Close may be called before).
func startedNode(t testing.TB, cfg Config, opts ...Option) *Node {
	t.Helper()
	opts = append([]Option{WithLogger(testlog.New(t, cfg.Name))}, opts...)
	n, err := New(cfg, opts...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if err := n.Start(context.Background()); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

// dial returns API clients of the agent at addr.
func dial(t testing.TB, addr string) (*grpc.ClientConn, pb.RegistryClient) {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn, pb.NewRegistryClient(conn)
}

// waitFor polls cond until it holds or the deadline passes.
var waitFor = testwait.For

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func inst(service, id, addr string) *pb.Instance {
	return &pb.Instance{Service: service, Id: id, Address: addr}
}

// getInstances reads a service with the given consistency, failing the test
// on error.
func getInstances(t testing.TB, c pb.RegistryClient, service string) []*pb.Instance {
	t.Helper()
	resp, err := c.Get(ctxT(t), &pb.GetRequest{Service: service, Consistency: pb.Consistency_CONSISTENT})
	if err != nil {
		t.Fatalf("Get %s: %v", service, err)
	}
	return resp.Instances
}

func healthOf(t testing.TB, c pb.RegistryClient, service, id string) pb.Health {
	t.Helper()
	for _, i := range getInstances(t, c, service) {
		if i.Id == id {
			return i.Health
		}
	}
	return pb.Health_HEALTH_UNSPECIFIED
}
