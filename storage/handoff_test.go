package storage_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/client"
	"github.com/zrpcio/zrpc/node"
	"github.com/zrpcio/zrpc/raftstore"
	"github.com/zrpcio/zrpc/testcluster"
)

// heldBy counts the shards agent i's replica places on agent name.
func heldBy(c *testcluster.Cluster, i int, name string) int {
	n := 0
	blobs, _ := c.Node(i).Store().FSM().Blobs("")
	for _, b := range blobs {
		for _, blk := range b.Blocks {
			for idx := range blk.Holders {
				if b.Holder(blk, idx) == name {
					n++
				}
			}
		}
	}
	return n
}

// TestLeaveHandsItsShardsOffFirst: an agent that leaves the cluster for
// good (the leader, the hardest case: it runs repair) first hands its
// blob shards to the agents that stay, so that losing one more agent right
// after, within the repair delay, leaves every blob readable; a blob
// without parity, which nothing could rebuild, moves too, by copy.
func TestLeaveHandsItsShardsOffFirst(t *testing.T) {
	c := newBlobCluster(t, 5, slowFailover, testcluster.WithDeadNodeReap(time.Minute))
	leaver := c.LeaderIndex()
	reader := (leaver + 1) % 5
	cl := agentClient(t, c, reader)
	blobs := map[string][]byte{}
	for i := range 10 {
		name := fmt.Sprintf("b%d", i)
		blobs[name] = randomBytes(200<<10+i, uint64(i))
		put(t, cl, name, blobs[name], client.PutOptions{Data: 2, Parity: 1})
	}
	// 4+0 on five agents: the leaver holds a shard of most ids; the one
	// agent without a shard is the only place it can go.
	bare := ""
	for i := 0; bare == "" && i < 20; i++ {
		name := fmt.Sprintf("bare%d", i)
		data := randomBytes(300<<10, uint64(100+i))
		rev := put(t, cl, name, data, client.PutOptions{Data: 4, Parity: 0}).Header.Revision
		c.Node(leaver).Store().FSM().WaitRevision(ctxFor(t, 10*time.Second), rev)
		b := c.Node(leaver).Store().FSM().Blob(name)
		for idx := range b.Blocks[0].Holders {
			if b.Holder(b.Blocks[0], idx) == c.Name(leaver) {
				bare = name
				blobs[name] = data
			}
		}
	}
	if bare == "" {
		t.Fatal("no 4+0 blob of 20 placed a shard on the leaver")
	}
	held := heldBy(c, leaver, c.Name(leaver))

	res, err := c.Leave(ctxFor(t, time.Minute), leaver, node.LeaveOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !res.Removed || res.HandedOff != held || res.ShardsLeft != 0 {
		t.Fatalf("leave: %+v; want removed, the %d shards it held handed off, none left", res, held)
	}
	c.WaitFor(10*time.Second, "the reader's replica to place no shard on the leaver", func() bool {
		return heldBy(c, reader, c.Name(leaver)) == 0
	})
	if got := get(t, cl, bare, client.GetOptions{}); !bytes.Equal(got, blobs[bare]) {
		t.Fatalf("blob %s without parity read back different bytes after the leave", bare)
	}
	delete(blobs, bare) // one more loss may take any of its four shards

	// One more agent lost right after the leave, long before the repair
	// delay: every 2+1 blob still has two of its three shards.
	victim := (leaver + 2) % 5
	c.Kill(victim)
	for name, data := range blobs {
		if got, err := tryGet(t, cl, name, client.GetOptions{}); err != nil || !bytes.Equal(got, data) {
			t.Errorf("blob %s after the leave and %s's loss: %v (same bytes: %v)", name, c.Name(victim), err, bytes.Equal(got, data))
		}
	}
}

// leavingSeen reports whether agent i's gossip says agent name is leaving.
func leavingSeen(t *testing.T, c *testcluster.Cluster, i int, name string) bool {
	resp, err := c.Status(i).Members(ctxFor(t, 5*time.Second), &pb.MembersRequest{})
	if err != nil {
		return false
	}
	for _, m := range resp.Members {
		if m.Name == name {
			return m.Leaving
		}
	}
	return false
}

// TestLeaveCalledOffWhileHandingShardsOff: a caller that gives up while
// the agent still hands its shards off calls the leave off: the agent
// stays in the cluster and says so by gossip, and can leave later.
func TestLeaveCalledOffWhileHandingShardsOff(t *testing.T) {
	c := newBlobCluster(t, 4, slowFailover)
	leader := c.LeaderIndex()
	leaver := (leader + 1) % 4
	cl := agentClient(t, c, leader)
	for i := range 10 {
		put(t, cl, fmt.Sprintf("b%d", i), randomBytes(200<<10, uint64(i)), client.PutOptions{Data: 2, Parity: 1})
	}
	if held := heldBy(c, leader, c.Name(leaver)); held < 2 {
		t.Fatalf("%s holds %d shards; want a few to hand off", c.Name(leaver), held)
	}
	// The others' shard fsyncs take 2 s each: the handoff lasts.
	for i := range c.Size() {
		if i != leaver {
			c.SlowShardDisk(i, 2*time.Second)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	type result struct {
		res node.LeaveResult
		err error
	}
	done := make(chan result, 1)
	go func() {
		res, err := c.Node(leaver).Leave(ctx, node.LeaveOptions{})
		done <- result{res, err}
	}()
	c.WaitFor(10*time.Second, "the leader to see the leaver leaving", func() bool { return leavingSeen(t, c, leader, c.Name(leaver)) })
	if st, err := c.Status(leaver).Status(ctxFor(t, 5*time.Second), &pb.StatusRequest{}); err != nil || st.HandoffShards == 0 {
		t.Errorf("the leaver's status while it hands shards off: handoff_shards %d, %v; want the shards it still holds", st.GetHandoffShards(), err)
	}
	cancel()
	var r result
	select {
	case r = <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Leave did not return within 10 s of its caller giving up")
	}
	if !errors.Is(r.err, context.Canceled) {
		t.Fatalf("leave called off: %+v, %v; want an error wrapping context.Canceled", r.res, r.err)
	}
	select {
	case <-c.Node(leaver).Left():
		t.Fatal("Left() closed after a leave that was called off")
	default:
	}
	c.WaitFor(10*time.Second, "the leader to see the leaver stay", func() bool { return !leavingSeen(t, c, leader, c.Name(leaver)) })
	servers, err := c.Node(leader).Store().Servers()
	if err != nil || !slices.ContainsFunc(servers, func(s raftstore.Server) bool { return s.ID == c.Name(leaver) }) {
		t.Fatalf("Raft servers after the leave was called off: %v, %v; want %s among them", servers, err, c.Name(leaver))
	}

	for i := range c.Size() {
		c.SlowShardDisk(i, 0)
	}
	res, err := c.Leave(ctxFor(t, time.Minute), leaver, node.LeaveOptions{})
	if err != nil || !res.Removed || res.ShardsLeft != 0 {
		t.Fatalf("leave again: %+v, %v; want removed with no shard left", res, err)
	}
}
