package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/examples/user/internal/config"
	"github.com/zrpcio/zrpc/examples/user/userclient"
	"github.com/zrpcio/zrpc/internal/testlog"
	"github.com/zrpcio/zrpc/rpc"
	"github.com/zrpcio/zrpc/testcluster"
)

// TestUserServiceThroughTheRegistry serves the example with its shipped
// config (agent and port changed for the test), finds it through the
// agent's registry with the generated client, and stops it.
func TestUserServiceThroughTheRegistry(t *testing.T) {
	c := testcluster.New(t, 1)
	var cfg config.Config
	if err := rpc.LoadConfig("etc/user.yaml", &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.Name != "user.rpc" {
		t.Fatalf("etc/user.yaml names the service %q, want user.rpc", cfg.Name)
	}
	cfg.ListenOn, cfg.Agents, cfg.DrainDelay = "127.0.0.1:0", []string{c.GRPCAddr(0)}, 50*time.Millisecond
	// The Log section, when set, builds the server's logger in place of
	// the one main passes.
	logFile := filepath.Join(t.TempDir(), "user.log")
	cfg.Log = rpc.LogConfig{Format: "json", Output: logFile}

	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	served := make(chan error, 1)
	go func() { served <- serve(ctx, cfg, testlog.New(t, "user.rpc")) }()
	c.WaitFor(30*time.Second, "user.rpc registered and passing", func() bool {
		got := registered(c)
		return len(got) == 1 && got[0].Health == pb.Health_PASSING
	})

	callCtx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	conn, err := userclient.Dial(callCtx, rpc.WithAgents(c.GRPCAddr(0)), rpc.WithWaitReady())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	users := userclient.NewUserService(conn)
	resp, err := users.GetUserInfo(callCtx, &userclient.UserRequest{UserId: 2})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetUserId() != 2 || resp.GetUsername() != "bob" || resp.GetEmail() != "bob@example.com" {
		t.Errorf("GetUserInfo(2) = %v, want bob", resp)
	}
	for id, code := range map[int64]codes.Code{42: codes.NotFound, 0: codes.InvalidArgument} {
		if _, err := users.GetUserInfo(callCtx, &userclient.UserRequest{UserId: id}); status.Code(err) != code {
			t.Errorf("GetUserInfo(%d): %v, want %s", id, err, code)
		}
	}

	stop()
	select {
	case err := <-served:
		if err != nil {
			t.Errorf("serve: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("serve did not return after its context ended")
	}
	if got := registered(c); len(got) != 0 {
		t.Errorf("after serve returned the registry still has %v", got)
	}
	if logs, err := os.ReadFile(logFile); err != nil || !strings.Contains(string(logs), `"msg":"rpc server started"`) {
		t.Errorf("the Log section's file %s holds %q (%v), want the server's JSON log", logFile, logs, err)
	}
}

func registered(c *testcluster.Cluster) []*pb.Instance {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := c.Registry(0).Get(ctx, &pb.GetRequest{Service: "user.rpc", Consistency: pb.Consistency_STALE})
	if err != nil {
		return nil
	}
	return resp.Instances
}
