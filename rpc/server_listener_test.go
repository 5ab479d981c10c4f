package rpc

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/internal/testlog"
	"github.com/zrpcio/zrpc/testcluster"
)

// TestAFailedListenerDeregistersTheInstance: when serving stops with an
// error (the listener failed) while the process runs on, the instance
// leaves the registry, where callers had kept being sent to an address
// nothing served, and is not registered again; Done is closed and Err,
// and then Stop, say why serving stopped.
func TestAFailedListenerDeregistersTheInstance(t *testing.T) {
	c := testcluster.New(t, 1)
	srv, err := NewServer(ServerConfig{
		Name: "user.rpc", ListenOn: "127.0.0.1:0", ID: "u1", Agents: []string{c.GRPCAddr(0)}, DrainDelay: 10 * time.Millisecond,
	}, WithServerLogger(testlog.New(t, "server")), WithRegisterer(prometheus.NewRegistry()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Stop(context.Background()) })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := srv.Start(ctx); err != nil {
		t.Fatal(err)
	}
	registered := func() int {
		resp, err := c.Registry(0).Get(ctx, &pb.GetRequest{Service: "user.rpc", Consistency: pb.Consistency_STALE})
		if err != nil {
			return -1
		}
		return len(resp.Instances)
	}
	c.WaitFor(20*time.Second, "u1 registered", func() bool { return registered() == 1 })

	srv.ln.Close() // the listener fails under grpc.Serve
	c.WaitFor(20*time.Second, "u1 deregistered once nothing serves it", func() bool { return registered() == 0 })
	select {
	case <-srv.Done():
	case <-time.After(20 * time.Second):
		t.Fatal("Done not closed 20s after serving stopped")
	}
	if got := registered(); got != 0 {
		t.Fatalf("after Done the registry has %d instances of user.rpc, want none", got)
	}
	err = srv.Err()
	if err == nil || !strings.Contains(err.Error(), "serve on "+srv.Addr()) || !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Err = %v, want the listener's failure on %s", err, srv.Addr())
	}
	if stopErr := srv.Stop(ctx); !errors.Is(stopErr, net.ErrClosed) {
		t.Fatalf("Stop = %v, want the error that stopped serving (%v)", stopErr, err)
	}
}
