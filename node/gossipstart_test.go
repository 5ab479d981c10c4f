package node

import (
	"context"
	"testing"

	"github.com/zrpcio/zrpc/internal/testlog"
)

// The gRPC API and Raft start before gossip: what they read of gossip, and
// the listeners' addresses, while the agent starts must not race with its
// start (run with -race).
func TestMembersAndAddressesReadWhileTheAgentStartsIsSafe(t *testing.T) {
	cfg := testConfig(t)
	n, err := New(cfg, WithLogger(testlog.New(t, cfg.Name)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	done := make(chan struct{})
	read := make(chan int)
	go func() {
		calls := 0
		for {
			select {
			case <-done:
				read <- calls
				return
			default:
			}
			apiStatus{n}.Members()
			_ = n.GRPCAddr()
			_ = n.HTTPAddr()
			calls++
		}
	}()
	startErr := n.Start(context.Background())
	close(done)
	if calls := <-read; calls == 0 {
		t.Fatal("Members was never read while the agent started")
	}
	if startErr != nil {
		t.Fatalf("Start: %v", startErr)
	}
	if got := (apiStatus{n}).Members(); len(got) != 1 || got[0].Name != cfg.Name {
		t.Fatalf("Members after start = %+v, want the agent itself", got)
	}
}
