package testcluster

import (
	"context"
	"sync"
	"testing"
	"time"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
)

// TestAddWhileOthersReadTheCluster: Add grows the cluster while another
// goroutine reads it (Node, Name, GRPCAddr, Leader), as a fault test's
// checker does while its driver adds agents; under -race this fails if
// the cluster's slots are not guarded.
func TestAddWhileOthersReadTheCluster(t *testing.T) {
	c := New(t, 1)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			for i := range c.Size() {
				c.Node(i)
				c.Name(i)
				c.GRPCAddr(i)
			}
			c.Leader()
			time.Sleep(time.Millisecond)
		}
	}()
	i := c.Add()
	close(stop)
	wg.Wait()
	if c.Size() != 2 || i != 1 {
		t.Fatalf("after Add: %d agents, new index %d; want 2 and 1", c.Size(), i)
	}
	c.WaitFor(30*time.Second, "the added agent to be a Raft member", func() bool {
		l := c.Leader()
		if l == nil {
			return false
		}
		servers, err := l.Store().Servers()
		return err == nil && len(servers) == 2
	})
}

// TestWithClockOffsetStampsTheAgentsTime: the agent named runs on a clock
// an hour ahead, before and after a restart; the others do not.
func TestWithClockOffsetStampsTheAgentsTime(t *testing.T) {
	c := New(t, 1, WithClockOffset("n1", time.Hour), WithClockOffset("n9", -time.Hour))
	healthSince := func(id string) time.Time {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		inst := &pb.Instance{Service: "clock", Id: id, Address: "127.0.0.1:9000"}
		if _, err := c.Registry(0).Register(ctx, &pb.RegisterRequest{Instance: inst}); err != nil {
			t.Fatalf("register %s: %v", id, err)
		}
		return time.Unix(0, c.Node(0).Store().FSM().Instance("clock", id).GetHealthSince())
	}
	near := func(got time.Time) bool { return (time.Until(got) - time.Hour).Abs() < time.Minute }
	if got := healthSince("i1"); !near(got) {
		t.Errorf("an instance registered through n1 at %s has health_since %s, want an hour ahead", time.Now(), got)
	}
	c.Restart(0)
	if got := healthSince("i2"); !near(got) {
		t.Errorf("after a restart, health_since %s, want an hour ahead of %s", got, time.Now())
	}
}
