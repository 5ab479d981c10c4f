package node_test

import (
	"context"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/testcluster"
)

// TestAFollowerThatCannotAppendAfterTruncatingItsTailStopsAndCatchesUp:
// a leader cut off from the others appends writes it can never commit;
// the others elect a leader and commit writes at the same indexes. When
// the cut heals, the old leader, now a follower, must truncate its
// conflicting tail and append the leader's entries; its disk is full, so
// the append fails. hashicorp/raft would keep the last index the disk no
// longer has and refuse every later append; the agent stops its Raft
// node instead, saying why (as zrpcd exits for its supervisor), and once
// restarted with room on its disk it catches up: every agent lists the
// committed writes and none of the uncommitted ones.
func TestAFollowerThatCannotAppendAfterTruncatingItsTailStopsAndCatchesUp(t *testing.T) {
	c := testcluster.New(t, 3)
	register(t, c, 0, "api", "before")
	old := c.LeaderIndex()
	var rest []int
	for i := range 3 {
		if i != old {
			rest = append(rest, i)
		}
	}
	before := c.Node(old).Store().Status()
	c.Partition([]int{old}, rest)
	// Writes through the cut-off leader: appended to its log while it
	// still leads, never committed.
	var wg sync.WaitGroup
	for _, id := range []string{"lost-1", "lost-2", "lost-3"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
			defer cancel()
			c.Registry(old).Register(ctx, &pb.RegisterRequest{Instance: &pb.Instance{Service: "api", Id: id, Address: "127.0.0.1:9001"}})
		}()
	}
	wg.Wait()
	if st := c.Node(old).Store().Status(); st.LastLogIndex <= before.LastLogIndex {
		t.Fatalf("the cut-off leader's log did not grow (last index %d, %d before): the test needs a tail to truncate", st.LastLogIndex, before.LastLogIndex)
	}
	c.WaitFor(20*time.Second, "a leader among the others", func() bool {
		l := c.LeaderIndex()
		return l >= 0 && l != old
	})
	for _, id := range []string{"after-1", "after-2", "after-3", "after-4"} {
		register(t, c, rest[0], "api", id)
	}

	c.FillRaftDisk(old, true)
	c.Heal()
	n := c.Node(old)
	select {
	case <-n.RaftFailed():
	case <-time.After(30 * time.Second):
		t.Fatalf("the old leader did not stop its Raft node after failing to append past its truncated tail (status %+v)", n.Store().Status())
	}
	if why := n.RaftFailure(); !strings.Contains(why, "after truncating its tail") || !strings.Contains(why, "no space left on device") {
		t.Fatalf("the Raft node stopped saying %q, want the append after the truncation and the disk's error", why)
	}
	c.Kill(old)
	c.FillRaftDisk(old, false)
	c.Restart(old)
	want := "[after-1 after-2 after-3 after-4 before]"
	for i := range 3 {
		c.WaitFor(30*time.Second, "every agent lists the committed writes only", func() bool {
			return instanceIDs(instances(t, c, i, "api", pb.Consistency_STALE)) == want
		})
	}
}

// instanceIDs lists the ids of insts, sorted, as "[a b]".
func instanceIDs(insts map[string]*pb.Instance) string {
	ids := make([]string, 0, len(insts))
	for id := range insts {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return "[" + strings.Join(ids, " ") + "]"
}
