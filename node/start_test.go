package node

import (
	"context"
	"errors"
	"net"
	"os"

	"testing"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/raft"

	"github.com/zrpcio/zrpc/internal/testlog"
)

// TestStartWithEndedContextStartsNothing: Start with a context that has
// already ended fails with an error wrapping ctx.Err(), opens nothing, and
// leaves the data dir free for the next agent.
func TestStartWithEndedContextStartsNothing(t *testing.T) {
	cfg := testConfig(t)
	n, err := New(cfg, WithLogger(testlog.New(t, cfg.Name)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := n.Start(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Start with a cancelled context = %v, want an error wrapping context.Canceled", err)
	}
	if n.GRPCAddr() != "" || n.HTTPAddr() != "" {
		t.Fatalf("Start with a cancelled context listens on %q / %q", n.GRPCAddr(), n.HTTPAddr())
	}
	startNode(t, cfg) // the data dir is not locked
}

// hookedTransport is memberlist's network transport, with a hook run when
// memberlist asks for the advertise address while it is being created
// (during Start, once Raft and the gRPC API are up).
type hookedTransport struct {
	*memberlist.NetTransport
	hook func()
}

func (h *hookedTransport) FinalAdvertiseAddr(ip string, port int) (net.IP, int, error) {
	h.hook()
	return h.NetTransport.FinalAdvertiseAddr(ip, port)
}

// TestStartCancelledMidwayStopsWhatItStarted: when Start's context is
// cancelled while it starts (here while gossip starts, after Raft and the
// gRPC API), Start returns an error wrapping context.Canceled, closes the
// listener it served, stops what it started and unlocks the data dir: a
// second agent starts on the same data dir.
func TestStartCancelledMidwayStopsWhatItStarted(t *testing.T) {
	cfg := testConfig(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	inner, err := memberlist.NewNetTransport(&memberlist.NetTransportConfig{BindAddrs: []string{"127.0.0.1"}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	hooked := false
	tr := &hookedTransport{NetTransport: inner, hook: func() {
		hooked = true
		cancel()
	}}
	n, err := New(cfg, WithLogger(testlog.New(t, cfg.Name)), WithGRPCListener(ln), WithGossipTransport(tr))
	if err != nil {
		t.Fatal(err)
	}
	err = n.Start(ctx)
	if !hooked {
		t.Fatal("Start never started gossip")
	}
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Start = %v, want an error wrapping context.Canceled", err)
	}
	if c, err := net.DialTimeout("tcp", ln.Addr().String(), time.Second); err == nil {
		c.Close()
		t.Fatal("the gRPC listener still accepts connections after Start failed")
	}
	startNode(t, cfg) // the data dir is not locked
}

// TestStartPastItsDeadlineStopsWhatItStarted: when Start's deadline passes
// while it starts (here while Raft opens its log), Start returns an error
// wrapping context.DeadlineExceeded and unlocks the data dir.
func TestStartPastItsDeadlineStopsWhatItStarted(t *testing.T) {
	cfg := testConfig(t)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	waited := false
	n, err := New(cfg, WithLogger(testlog.New(t, cfg.Name)), WithRaftLogStore(func(l raft.LogStore) raft.LogStore {
		waited = true
		<-ctx.Done()
		return l
	}))
	if err != nil {
		t.Fatal(err)
	}
	err = n.Start(ctx)
	if !waited {
		t.Fatal("Start never opened the Raft log")
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Start = %v, want an error wrapping context.DeadlineExceeded", err)
	}
	startNode(t, cfg) // the data dir is not locked
}

// TestFailedFirstStartLeavesNoClusterBehind: an agent's first start on an
// empty data dir bootstraps a cluster of one, then fails (its HTTP port is
// taken). The data dir must be left without Raft state or cluster id, so
// that the next start, with the port free and --join given, joins the
// cluster it was meant for instead of leading one nobody else is in.
func TestFailedFirstStartLeavesNoClusterBehind(t *testing.T) {
	a := startNode(t, testConfig(t))
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(t)
	cfg.Name = "n2"
	cfg.HTTPPort = busy.Addr().(*net.TCPAddr).Port
	n, err := New(cfg, WithLogger(testlog.New(t, cfg.Name)))
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(context.Background()); err == nil {
		n.Close()
		t.Fatal("Start succeeded with its HTTP port taken")
	}
	if left, err := os.ReadDir(cfg.DataDir); err != nil || len(left) != 1 || left[0].Name() != lockFile {
		t.Errorf("after the failed first start the data dir holds %v (%v), want nothing but its %s file", left, err, lockFile)
	}
	busy.Close()
	cfg.HTTPPort = 0
	cfg.Join = []string{a.gossip().LocalAddr()}
	b, err := New(cfg, WithLogger(testlog.New(t, cfg.Name)))
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(context.Background()); err != nil {
		t.Fatalf("second start, joining n1: %v", err)
	}
	t.Cleanup(func() { b.Close() })
	want := a.Store().FSM().ClusterID()
	waitFor(t, 15*time.Second, "n2 to join n1's cluster "+want, func() bool {
		return b.Store().FSM().ClusterID() == want
	})
}
