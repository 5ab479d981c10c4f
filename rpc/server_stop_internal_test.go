package rpc

import (
	"context"
	"errors"
	"testing"
	"time"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/internal/testlog"
	"github.com/zrpcio/zrpc/testcluster"
)

// A registration that finishes after Stop began (its session had broken
// and it was registering again when Stop came) is undone: Stop had read
// the old session, so the new one was kept, registered and passing,
// through the drain delay and until the server's agent client closed.
func TestARegistrationFinishedAfterStopBeganIsUndone(t *testing.T) {
	c := testcluster.New(t, 1)
	srv, err := NewServer(ServerConfig{
		Name: "user.rpc", ListenOn: "127.0.0.1:0", ID: "u1", Agents: []string{c.GRPCAddr(0)}, DrainDelay: 50 * time.Millisecond,
	}, WithServerLogger(testlog.New(t, "server")))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Stop(context.Background()) })
	srv.mu.Lock()
	srv.stopped = true // as Stop does first, before it reads the session
	srv.mu.Unlock()
	if err := srv.register(ctx); !errors.Is(err, errStopping) {
		t.Fatalf("register once Stop began = %v, want errStopping", err)
	}
	srv.mu.Lock()
	old := srv.session
	srv.mu.Unlock()
	// Only the session from Start remains; its closing (Stop) removes u1.
	old.Close()
	c.WaitFor(10*time.Second, "no instance of user.rpc left", func() bool {
		resp, err := c.Registry(0).Get(ctx, &pb.GetRequest{Service: "user.rpc"})
		return err == nil && len(resp.Instances) == 0
	})
}
