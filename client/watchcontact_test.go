package client

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/zrpcio/zrpc/api/apierr"
	"github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/testcluster"
)

// registerVia registers instance id of user.rpc through agent i, retrying
// while the cluster elects a leader.
func registerVia(t *testing.T, cl *testcluster.Cluster, i int, id string) {
	t.Helper()
	cl.WaitFor(20*time.Second, "agent "+cl.Name(i)+" registers "+id, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := cl.Registry(i).Register(ctx, &zrpcpb.RegisterRequest{
			Instance: &zrpcpb.Instance{Service: "user.rpc", Id: id, Address: "127.0.0.1:9001"}})
		return err == nil
	})
}

// replicated waits until every running agent of cl in among holds id.
func replicated(t *testing.T, cl *testcluster.Cluster, id string, among ...int) {
	t.Helper()
	for _, i := range among {
		cl.WaitFor(10*time.Second, "agent "+cl.Name(i)+" has "+id, func() bool {
			resp, err := cl.Registry(i).Get(testContext(t), &zrpcpb.GetRequest{Service: "user.rpc", Consistency: zrpcpb.Consistency_STALE})
			if err != nil {
				return false
			}
			for _, in := range resp.GetInstances() {
				if in.GetId() == id {
					return true
				}
			}
			return false
		})
	}
}

// recvInstance reads w until a response carries instance id and returns
// that response; it fails the test when none does within timeout.
func recvInstance(t *testing.T, w *WatchStream, id string, timeout time.Duration) *zrpcpb.WatchResponse {
	t.Helper()
	type got struct {
		resp *zrpcpb.WatchResponse
		err  error
	}
	out := make(chan got, 1)
	go func() {
		for {
			resp, err := w.Recv()
			if err != nil {
				out <- got{err: err}
				return
			}
			for _, e := range resp.GetEvents() {
				if e.GetInstance().GetId() == id {
					out <- got{resp: resp}
					return
				}
			}
		}
	}()
	select {
	case g := <-out:
		if g.err != nil {
			t.Fatalf("watch ended before it delivered %s: %v", id, g.err)
		}
		return g.resp
	case <-time.After(timeout):
		w.Close()
		t.Fatalf("watch did not deliver %s within %s", id, timeout)
		return nil
	}
}

// A watch served by an agent on the minority side of a partition moves to
// an agent that is in contact with the leader, and delivers what the
// majority writes meanwhile; without that it would sit silent on a replica
// that no longer changes.
func TestWatchMovesOffAnAgentCutOffFromTheLeader(t *testing.T) {
	cl := testcluster.New(t, 3)
	leader := cl.LeaderIndex()
	minority := (leader + 1) % 3
	var majority []int
	for i := range 3 {
		if i != minority {
			majority = append(majority, i)
		}
	}
	registerVia(t, cl, leader, "u0")
	replicated(t, cl, "u0", 0, 1, 2)

	c := newTestClient(t, cl.GRPCAddr(minority), cl.GRPCAddr(majority[0]), cl.GRPCAddr(majority[1]))
	ctx := testContext(t)
	w, err := c.Watch(ctx, "user.rpc", 0)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if resp := recvInstance(t, w, "u0", 10*time.Second); resp.GetHeader().GetServedBy() != cl.Name(minority) {
		t.Fatalf("the watch began on %s, want the first endpoint, %s", resp.GetHeader().GetServedBy(), cl.Name(minority))
	}

	cl.Partition([]int{minority}, majority)
	registerVia(t, cl, majority[0], "u1")
	resp := recvInstance(t, w, "u1", 20*time.Second)
	if by := resp.GetHeader().GetServedBy(); by == cl.Name(minority) {
		t.Fatalf("u1 came from %s, the agent cut off from the leader", by)
	}
}

// When no agent is in contact with a leader (the cluster lost its quorum),
// a watch takes a replica as it is rather than none.
func TestWatchTakesAReplicaAsItIsWhenNoAgentHasALeader(t *testing.T) {
	cl := testcluster.New(t, 3)
	leader := cl.LeaderIndex()
	registerVia(t, cl, leader, "u0")
	replicated(t, cl, "u0", 0, 1, 2)
	survivor := (leader + 1) % 3
	var dead []int
	for i := range 3 {
		if i != survivor {
			dead = append(dead, i)
		}
	}
	addrs := []string{cl.GRPCAddr(dead[0]), cl.GRPCAddr(dead[1]), cl.GRPCAddr(survivor)}
	for _, i := range dead {
		cl.Kill(i)
	}
	cl.WaitFor(20*time.Second, "the survivor refuses watches that require a leader", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		stream, err := cl.Registry(survivor).Watch(ctx, &zrpcpb.WatchRequest{Service: "user.rpc", RequireLeader: true})
		if err != nil {
			return false
		}
		_, err = stream.Recv()
		return errors.Is(apierr.FromStatus(err), apierr.ErrStaleRead)
	})

	c := newTestClient(t, addrs...)
	w, err := c.Watch(testContext(t), "user.rpc", 0)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	resp := recvInstance(t, w, "u0", 20*time.Second)
	if by := resp.GetHeader().GetServedBy(); by != cl.Name(survivor) {
		t.Fatalf("served by %s, want the survivor %s", by, cl.Name(survivor))
	}
}
