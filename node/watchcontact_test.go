package node_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/zrpcio/zrpc/api/apierr"
	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/testcluster"
)

// waitReplicated waits until agent i's replica holds instance id.
func waitReplicated(t *testing.T, c *testcluster.Cluster, i int, service, id string) {
	t.Helper()
	c.WaitFor(10*time.Second, "agent "+c.Name(i)+" has "+id, func() bool {
		return instances(t, c, i, service, pb.Consistency_STALE)[id] != nil
	})
}

// seenWatch is a watch read by a goroutine of its own: the events it
// delivered and, once it ended, why.
type seenWatch struct {
	events chan *pb.Event
	ended  chan error // receives the watch's end, once
}

// watchRequiring opens a Watch stream of service on agent i, requiring a
// leader when require is set.
func watchRequiring(t *testing.T, c *testcluster.Cluster, i int, service string, require bool) *seenWatch {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	stream, err := c.Registry(i).Watch(ctx, &pb.WatchRequest{Service: service, RequireLeader: require})
	if err != nil {
		t.Fatal(err)
	}
	sw := &seenWatch{events: make(chan *pb.Event, 1000), ended: make(chan error, 1)}
	go func() {
		for {
			resp, err := stream.Recv()
			if err != nil {
				sw.ended <- apierr.FromStatus(err)
				return
			}
			for _, e := range resp.Events {
				sw.events <- e
			}
		}
	}()
	return sw
}

// watchManyRequiring opens a WatchMany stream on agent i carrying one
// watch of service that requires a leader.
func watchManyRequiring(t *testing.T, c *testcluster.Cluster, i int, service string) *seenWatch {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	stream, err := c.Registry(i).WatchMany(ctx)
	if err != nil {
		t.Fatal(err)
	}
	create := &pb.WatchManyRequest{Kind: &pb.WatchManyRequest_Create{Create: &pb.WatchCreate{
		WatchId: 1, Watch: &pb.WatchRequest{Service: service, RequireLeader: true}}}}
	if err := stream.Send(create); err != nil {
		t.Fatal(err)
	}
	sw := &seenWatch{events: make(chan *pb.Event, 1000), ended: make(chan error, 1)}
	go func() {
		for {
			resp, err := stream.Recv()
			switch {
			case err != nil:
				sw.ended <- apierr.FromStatus(err)
				return
			case resp.GetEnded() != nil:
				sw.ended <- apierr.FromCode(resp.GetEnded().GetReason(), resp.GetEnded().GetMessage())
				return
			}
			for _, e := range resp.GetResponse().GetEvents() {
				sw.events <- e
			}
		}
	}()
	return sw
}

// await waits for the watch to deliver instance id.
func (sw *seenWatch) await(t *testing.T, what, id string, timeout time.Duration) {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case e := <-sw.events:
			if e.GetInstance().GetId() == id {
				return
			}
		case err := <-sw.ended:
			t.Fatalf("%s ended before it delivered %s: %v", what, id, err)
		case <-deadline:
			t.Fatalf("%s did not deliver %s within %s", what, id, timeout)
		}
	}
}

// awaitCutOff waits for the watch to end because its agent is cut off
// from the leader.
func (sw *seenWatch) awaitCutOff(t *testing.T, what string, timeout time.Duration) {
	t.Helper()
	select {
	case err := <-sw.ended:
		if !errors.Is(err, apierr.ErrStaleRead) {
			t.Fatalf("%s ended with %v, want a stale read (the agent is cut off)", what, err)
		}
	case <-time.After(timeout):
		t.Fatalf("%s still open %s after its agent was cut off from the leader", what, timeout)
	}
}

// open reports whether the watch has not ended.
func (sw *seenWatch) open() error {
	select {
	case err := <-sw.ended:
		return err
	default:
		return nil
	}
}

// On the minority side of a partition a watch that requires a leader ends
// once its agent has been cut off past the stale-read bound, and a new one
// is refused until the partition heals; a watch that does not require one
// stays open and catches up after the heal. Watches on the majority go on.
func TestWatchesRequiringALeaderEndOnTheMinoritySide(t *testing.T) {
	c := testcluster.New(t, 3)
	register(t, c, 0, "user.rpc", "u0")
	minority := (c.LeaderIndex() + 1) % 3
	var majority []int
	for i := range 3 {
		if i != minority {
			majority = append(majority, i)
		}
		waitReplicated(t, c, i, "user.rpc", "u0")
	}
	required := watchRequiring(t, c, minority, "user.rpc", true)
	requiredMany := watchManyRequiring(t, c, minority, "user.rpc")
	plain := watchRequiring(t, c, minority, "user.rpc", false)
	onMajority := watchRequiring(t, c, majority[1], "user.rpc", true)
	for what, sw := range map[string]*seenWatch{"watch": required, "WatchMany watch": requiredMany,
		"watch without require_leader": plain, "watch on the majority": onMajority} {
		sw.await(t, what, "u0", 10*time.Second)
	}

	c.Partition([]int{minority}, majority)
	// The bound is 2 s in testcluster; the agent looks every 250 ms.
	required.awaitCutOff(t, "the watch on the minority agent", 10*time.Second)
	requiredMany.awaitCutOff(t, "the WatchMany watch on the minority agent", 10*time.Second)
	refused := watchRequiring(t, c, minority, "user.rpc", true)
	refused.awaitCutOff(t, "a watch opened on the minority agent while it is cut off", 10*time.Second)
	for _, i := range []int{minority, majority[0]} {
		st, err := c.Status(i).Status(ctxT(t), &pb.StatusRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if cut := st.GetCutOff() != ""; cut != (i == minority) {
			t.Errorf("Status of %s says cut off %q; want it said on the minority agent only", c.Name(i), st.GetCutOff())
		}
	}

	c.WaitFor(20*time.Second, "the majority accepts a write", func() bool {
		_, err := c.Registry(majority[0]).Register(ctxT(t), &pb.RegisterRequest{Instance: &pb.Instance{Service: "user.rpc", Id: "u1", Address: "127.0.0.1:9001"}})
		return err == nil
	})
	onMajority.await(t, "the watch on the majority", "u1", 10*time.Second)
	if err := plain.open(); err != nil {
		t.Fatalf("the watch that does not require a leader ended on the minority: %v", err)
	}

	c.Heal()
	plain.await(t, "the watch that does not require a leader, after the heal", "u1", 20*time.Second)
	c.WaitFor(20*time.Second, "a watch that requires a leader is served on the healed agent", func() bool {
		sw := watchRequiring(t, c, minority, "user.rpc", true)
		select {
		case e := <-sw.events:
			return e != nil
		case <-sw.ended:
			return false
		case <-time.After(5 * time.Second):
			return false
		}
	})
}

// An election does not end watches that require a leader: the agents are
// cut off only past the stale-read bound, which an election stays within.
func TestWatchesRequiringALeaderOutliveAnElection(t *testing.T) {
	c := testcluster.New(t, 3)
	register(t, c, 0, "user.rpc", "u0")
	old := c.LeaderIndex()
	var survivors []int
	var watches []*seenWatch
	for i := range 3 {
		waitReplicated(t, c, i, "user.rpc", "u0")
		if i == old {
			continue
		}
		survivors = append(survivors, i)
		watches = append(watches, watchRequiring(t, c, i, "user.rpc", true), watchManyRequiring(t, c, i, "user.rpc"))
	}
	for _, sw := range watches {
		sw.await(t, "a watch before the election", "u0", 10*time.Second)
	}
	c.Kill(old)
	c.WaitFor(20*time.Second, "a new leader registers u1", func() bool {
		_, err := c.Registry(survivors[0]).Register(ctxT(t), &pb.RegisterRequest{Instance: &pb.Instance{Service: "user.rpc", Id: "u1", Address: "127.0.0.1:9001"}})
		return err == nil
	})
	for _, sw := range watches {
		sw.await(t, "a watch after the election", "u1", 10*time.Second)
	}
}

// TestSessionIsToldWhenItsAgentIsCutOff: a session on an agent that loses
// contact with the leader gets a response saying so (seq 0, answering no
// request) without sending a keepalive, so that its process can register
// through another agent at once instead of at its next keepalive.
func TestSessionIsToldWhenItsAgentIsCutOff(t *testing.T) {
	c := testcluster.New(t, 3)
	minority := (c.LeaderIndex() + 1) % 3
	var majority []int
	for i := range 3 {
		if i != minority {
			majority = append(majority, i)
		}
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	stream, err := c.Registry(minority).Session(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&pb.SessionRequest{Seq: 1, Kind: &pb.SessionRequest_Open{Open: &pb.SessionOpen{Owner: "test"}}}); err != nil {
		t.Fatal(err)
	}
	if open, err := stream.Recv(); err != nil || open.GetSession() == "" {
		t.Fatalf("open: %v, %v", open, err)
	}
	c.Partition([]int{minority}, majority)
	resp, err := stream.Recv()
	if err != nil || resp.GetSeq() != 0 || !strings.Contains(resp.GetCutOff(), "replica is stale") {
		t.Fatalf("after the partition the session got %v, %v; want a response of seq 0 saying the agent is cut off", resp, err)
	}
}
