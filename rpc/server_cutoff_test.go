package rpc_test

import (
	"context"
	"testing"
	"time"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/internal/testlog"
	"github.com/zrpcio/zrpc/rpc"
	"github.com/zrpcio/zrpc/testcluster"
)

// startServer starts a user.rpc server, id u1, registering through the
// agents of c given (in that order); it stops when t ends.
func startServer(t *testing.T, c *testcluster.Cluster, agents ...int) {
	t.Helper()
	var addrs []string
	for _, i := range agents {
		addrs = append(addrs, c.GRPCAddr(i))
	}
	srv, err := rpc.NewServer(rpc.ServerConfig{
		Name: "user.rpc", ListenOn: "127.0.0.1:0", ID: "u1", Agents: addrs, DrainDelay: 50 * time.Millisecond,
	}, rpc.WithServerLogger(testlog.New(t, "server")))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Stop(context.Background()) })
}

// TestServerMovesOffAnAgentCutOffFromTheLeader: a server registered
// through an agent on the minority side of a partition (the cluster sees
// that agent failed and the instance critical) registers again through an
// agent of the majority, and passes there while the partition lasts. The
// old session, closed after, takes nothing with it once the partition
// heals and its agent removes it.
func TestServerMovesOffAnAgentCutOffFromTheLeader(t *testing.T) {
	c := testcluster.New(t, 3, testcluster.WithDeadNodeReap(time.Hour))
	cut := (c.LeaderIndex() + 1) % 3
	var rest []int
	for i := range 3 {
		if i != cut {
			rest = append(rest, i)
		}
	}
	startServer(t, c, cut, rest[0], rest[1])
	c.WaitFor(20*time.Second, "u1 registered through the first agent", func() bool {
		got := instancesOn(t, c, rest[0], "user.rpc")
		return len(got) == 1 && got[0].Node == c.Name(cut) && got[0].Health == pb.Health_PASSING
	})

	c.Partition([]int{cut}, rest)
	c.WaitFor(30*time.Second, "u1 passing, registered through an agent of the majority", func() bool {
		got := instancesOn(t, c, rest[0], "user.rpc")
		return len(got) == 1 && got[0].Node != c.Name(cut) && got[0].Health == pb.Health_PASSING
	})

	c.Heal()
	c.WaitFor(30*time.Second, "the cut-off agent's old session removed", func() bool {
		l := c.Leader()
		if l == nil {
			return false
		}
		for _, s := range l.Store().FSM().Sessions() {
			if s.Node == c.Name(cut) {
				return false
			}
		}
		return true
	})
	if got := instancesOn(t, c, rest[0], "user.rpc"); len(got) != 1 || got[0].Node == c.Name(cut) || got[0].Health != pb.Health_PASSING {
		t.Fatalf("after the heal and the old session's removal: %v, want u1 passing through an agent of the majority", got)
	}
}

// TestServerKeepsItsSessionWhileNoAgentHasALeader: when every agent is
// cut off (the cluster lost its quorum) there is nowhere better to
// register, and the server keeps its session: once the quorum is back it
// registers through an agent in contact before it closes the old
// session, so no watcher ever sees its instance deleted.
func TestServerKeepsItsSessionWhileNoAgentHasALeader(t *testing.T) {
	c := testcluster.New(t, 3, testcluster.WithDeadNodeReap(time.Hour))
	survivor := (c.LeaderIndex() + 1) % 3
	var others []int
	for i := range 3 {
		if i != survivor {
			others = append(others, i)
		}
	}
	startServer(t, c, survivor, others[0], others[1])
	c.WaitFor(20*time.Second, "u1 registered through the survivor", func() bool {
		got := instancesOn(t, c, survivor, "user.rpc")
		return len(got) == 1 && got[0].Node == c.Name(survivor)
	})
	// A watch on the survivor that does not require a leader: it stays
	// open through the quorum loss and sees every change after it.
	wctx, wcancel := context.WithCancel(context.Background())
	defer wcancel()
	stream, err := c.Registry(survivor).Watch(wctx, &pb.WatchRequest{Service: "user.rpc"})
	if err != nil {
		t.Fatal(err)
	}
	deleted := make(chan *pb.Event, 1)
	go func() {
		for {
			resp, err := stream.Recv()
			if err != nil {
				return
			}
			for _, e := range resp.Events {
				if e.Type == pb.Event_DELETE {
					deleted <- e
					return
				}
			}
		}
	}()

	for _, i := range others {
		c.Kill(i)
	}
	c.WaitFor(20*time.Second, "the survivor cut off from the leader", func() bool {
		return c.Node(survivor).Store().CutOff()
	})
	time.Sleep(6 * time.Second) // a keepalive answer says so; the server finds no agent in contact
	st, err := c.Status(survivor).Status(statusCtx(t), &pb.StatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if st.GetSessionStreams() != 1 {
		t.Fatalf("the survivor serves %d session streams while no agent has a leader, want the server's one kept", st.GetSessionStreams())
	}
	for _, i := range others {
		c.Restart(i)
	}
	c.WaitFor(30*time.Second, "the first session closed and removed, u1 registered through a new one", func() bool {
		l := c.Leader()
		if l == nil {
			return false
		}
		sessions := l.Store().FSM().Sessions()
		got := instancesOn(t, c, survivor, "user.rpc")
		return len(sessions) == 1 && len(got) == 1 && got[0].Health == pb.Health_PASSING
	})
	select {
	case e := <-deleted:
		t.Fatalf("a watcher saw u1 deleted: %v", e)
	default:
	}
}

func statusCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	t.Cleanup(cancel)
	return ctx
}
