package testcluster

import (
	"sync"
	"testing"
	"time"
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
