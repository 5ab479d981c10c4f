package ctlcmd

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/internal/grpctest"
	"github.com/zrpcio/zrpc/node"
	"github.com/zrpcio/zrpc/testcluster"
)

// TestLeaveSaysWhatBecameOfTheShards: `zrpcctl leave` is refused while a
// shard on the agent has no agent to go to (every other agent holds one
// of its block), and the agent stays; with --allow-degraded it hands off
// the shards it can, says how many, and warns of those that went with it.
func TestLeaveSaysWhatBecameOfTheShards(t *testing.T) {
	t.Setenv(addrEnv, "")
	c := testcluster.New(t, 4, testcluster.WithConfig(func(cfg *node.Config) { cfg.BlobBlockSize = 64 << 10 }))
	c.WaitFor(20*time.Second, "the leader's replica to know four alive agents", func() bool {
		l := c.Leader()
		alive := 0
		for _, n := range l.Store().FSM().Nodes() {
			if n.Health == zrpcpb.Health_PASSING {
				alive++
			}
		}
		return alive == 4
	})
	dir := t.TempDir()
	put := func(name string, data, parity int) {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, make([]byte, 100<<10), 0o600); err != nil {
			t.Fatal(err)
		}
		res := runZrpcctl(testContext(t), t, c.GRPCAddr(0), "blob", "put", path, "--data", fmt.Sprint(data), "--parity", fmt.Sprint(parity))
		if res.err != nil {
			t.Fatalf("put %s: %v\n%s", name, res.err, res.stderr)
		}
	}
	put("spread", 2, 1) // three of four agents: one is free to take a shard
	put("wide", 3, 1)   // every agent: no agent can take the leaver's
	// The leaver: an agent other than the one the command asks first
	// that holds shards of "spread" (100 KiB in 64 KiB blocks: two).
	held := func(blob string, i int) int {
		b, n := c.Leader().Store().FSM().Blob(blob), 0
		for _, blk := range b.Blocks {
			for idx := range blk.Holders {
				if b.Holder(blk, idx) == c.Name(i) {
					n++
				}
			}
		}
		return n
	}
	leaver := 1
	for i := 2; i < c.Size(); i++ {
		if held("spread", i) > held("spread", leaver) {
			leaver = i
		}
	}
	spread, wide := held("spread", leaver), held("wide", leaver)
	if spread == 0 || wide != 2 {
		t.Fatalf("%s holds %d shards of spread and %d of wide; want some and 2", c.Name(leaver), spread, wide)
	}
	res := runZrpcctl(testContext(t), t, c.GRPCAddr(leaver), "leave", "--timeout", "1m")
	if res.err == nil {
		t.Fatalf("leave with shards no agent can take succeeded:\n%s", res.stdout)
	}
	checkContains(t, "refused leave", res.stderr+res.err.Error(),
		fmt.Sprintf("%d of this agent's %d blob shards have no agent to go to", wide, spread+wide), "--allow-degraded")
	select {
	case <-c.Node(leaver).Left():
		t.Fatal("the agent left after its leave was refused")
	default:
	}
	if held("spread", leaver) != spread {
		t.Fatalf("a refused leave moved shards: %s holds %d of spread, had %d", c.Name(leaver), held("spread", leaver), spread)
	}

	res = runZrpcctl(testContext(t), t, c.GRPCAddr(leaver), "leave", "--timeout", "1m", "--allow-degraded")
	if res.err != nil {
		t.Fatalf("leave: %v\n%s", res.err, res.stderr)
	}
	checkContains(t, "leave stdout", res.stdout,
		fmt.Sprintf("handed %d blob shards to the other agents", spread),
		fmt.Sprintf("warning: %d blob shards went with the agent", wide),
		"left the cluster and is shutting down")
}

// leavingAgent answers Status, and Leave with resp, as an agent that
// leaves does.
type leavingAgent struct {
	zrpcpb.UnimplementedStatusServer
	resp *zrpcpb.LeaveResponse
}

func (leavingAgent) Status(context.Context, *zrpcpb.StatusRequest) (*zrpcpb.StatusResponse, error) {
	return &zrpcpb.StatusResponse{Node: "n3"}, nil
}

func (a leavingAgent) Leave(context.Context, *zrpcpb.LeaveRequest) (*zrpcpb.LeaveResponse, error) {
	return a.resp, nil
}

// startLeavingAgent serves a leavingAgent on loopback until the test ends
// and returns its address.
func startLeavingAgent(t *testing.T, resp *zrpcpb.LeaveResponse) string {
	t.Helper()
	return grpctest.Serve(t, func(s *grpc.Server) { zrpcpb.RegisterStatusServer(s, leavingAgent{resp: resp}) })
}

// TestLeavePrintsJSON: with -o json, leave prints the agent's answer as
// JSON and nothing else on stdout.
func TestLeavePrintsJSON(t *testing.T) {
	t.Setenv(addrEnv, "")
	addr := startLeavingAgent(t, &zrpcpb.LeaveResponse{Removed: true, ShardsHandedOff: 3, ShardsLeft: 1})
	res := runZrpcctl(testContext(t), t, addr, "leave", "-o", "json")
	if res.err != nil {
		t.Fatalf("leave: %v\n%s", res.err, res.stderr)
	}
	var got map[string]any
	if err := json.Unmarshal([]byte(res.stdout), &got); err != nil {
		t.Fatalf("stdout is not a JSON object (%v):\n%s", err, res.stdout)
	}
	if got["removed"] != true || got["shards_handed_off"] != "3" || got["shards_left"] != "1" {
		t.Errorf("leave -o json = %v", got)
	}
	res = runZrpcctl(testContext(t), t, addr, "leave")
	checkContains(t, "leave stdout", res.stdout, "agent at "+addr+" handed 3 blob shards",
		"warning: 1 blob shards went with the agent", "agent at "+addr+" left the cluster")
}

// TestLeaveRefusesAnAgentThatDoesNotAnswer: an agent that does not answer
// its status (stopped, cut off) is not asked to leave, and the command
// says so within seconds rather than waiting out its 30-minute timeout.
func TestLeaveRefusesAnAgentThatDoesNotAnswer(t *testing.T) {
	t.Setenv(addrEnv, "")
	silent := startFake(t)
	silent.Silent.Store(true)
	res := runZrpcctl(testContext(t), t, silent.Addr, "leave")
	if res.err == nil || !strings.Contains(res.err.Error(), "did not answer its status within 5s, so it was not asked to leave") {
		t.Fatalf("leave through a silent agent: %v, want it refused for want of an answer", res.err)
	}
}
