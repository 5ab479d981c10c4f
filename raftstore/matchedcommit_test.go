package raftstore

import (
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	"github.com/zrpcio/zrpc/internal/testwait"
)

func TestMatchedCommit(t *testing.T) {
	entries := func(from, to uint64) []*raft.Log {
		var out []*raft.Log
		for i := from; i <= to; i++ {
			out = append(out, &raft.Log{Index: i, Term: 2})
		}
		return out
	}
	for _, c := range []struct {
		name string
		req  raft.AppendEntriesRequest
		want uint64
	}{
		{"no entries, commit past the previous entry", raft.AppendEntriesRequest{PrevLogEntry: 9, LeaderCommitIndex: 12}, 9},
		{"no entries, commit at the previous entry (commit push)", raft.AppendEntriesRequest{PrevLogEntry: 9, LeaderCommitIndex: 9}, 9},
		{"no entries, commit behind", raft.AppendEntriesRequest{PrevLogEntry: 9, LeaderCommitIndex: 4}, 4},
		{"entries end before the commit", raft.AppendEntriesRequest{PrevLogEntry: 9, Entries: entries(10, 12), LeaderCommitIndex: 20}, 12},
		{"entries go past the commit", raft.AppendEntriesRequest{PrevLogEntry: 9, Entries: entries(10, 30), LeaderCommitIndex: 20}, 20},
		{"from the first entry", raft.AppendEntriesRequest{Entries: entries(1, 3), LeaderCommitIndex: 5}, 3},
		{"heartbeat", raft.AppendEntriesRequest{Term: 3}, 0},
	} {
		req := c.req
		matchedCommit(&req)
		if req.LeaderCommitIndex != c.want {
			t.Errorf("%s: commit %d, want %d", c.name, req.LeaderCommitIndex, c.want)
		}
	}
}

// TestFollowerDoesNotApplyItsStaleTail: a follower holds an entry of
// term 1 that its leader never committed (it was deposed before it could
// replicate it). The leader of term 2 has committed another entry at that
// index; its first request to the follower matches the entry before and
// carries no entries, but a commit index past them. The follower must not
// commit, or apply, its own entry there: it applies the term 2 entry once
// it arrives, as every other replica does.
func TestFollowerDoesNotApplyItsStaleTail(t *testing.T) {
	cfg := testStoreConfig(t, t.TempDir(), slog.LevelWarn)
	cfg.NodeID, cfg.Bootstrap = "f", false
	cfg.HeartbeatTimeout, cfg.ElectionTimeout = 10*time.Second, 10*time.Second
	f := New(cfg)
	if err := f.Open(); err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { f.Close() })

	net, err := raft.NewTCPTransportWithLogger("127.0.0.1:0", nil, 2, 5*time.Second, NewHCLog(testLogger(t, slog.LevelWarn), "raft-net"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { net.Close() })
	send := func(leader string, req *raft.AppendEntriesRequest) {
		t.Helper()
		req.RPCHeader = raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte(leader), Addr: []byte(net.LocalAddr())}
		var resp raft.AppendEntriesResponse
		if err := net.AppendEntries("f", f.transport.LocalAddr(), req, &resp); err != nil {
			t.Fatalf("append entries of %s: %v", leader, err)
		}
		if !resp.Success {
			t.Fatalf("%s's append entries %+v refused: %+v", leader, req, resp)
		}
	}
	register := func(index, term uint64, id string) *raft.Log {
		data, err := proto.Marshal(registerCmd(testInstance("api", id, "n1")))
		if err != nil {
			t.Fatal(err)
		}
		return &raft.Log{Index: index, Term: term, Type: raft.LogCommand, Data: data}
	}

	// Leader a, term 1: entries 1 and 2 committed, 3 ("stale") only sent.
	send("a", &raft.AppendEntriesRequest{Term: 1, Entries: []*raft.Log{register(1, 1, "one"), register(2, 1, "two")}, LeaderCommitIndex: 2})
	send("a", &raft.AppendEntriesRequest{Term: 1, PrevLogEntry: 2, PrevLogTerm: 1, Entries: []*raft.Log{register(3, 1, "stale")}, LeaderCommitIndex: 2})
	testwait.For(t, 10*time.Second, "the follower applies entries 1 and 2", func() bool { return f.FSM().Revision() >= 2 })

	// Leader b, term 2, committed its own entry 3 elsewhere: it first
	// sends a request that matches entry 2, without entries, commit 3.
	send("b", &raft.AppendEntriesRequest{Term: 2, PrevLogEntry: 2, PrevLogTerm: 1, LeaderCommitIndex: 3})
	// Then entry 3 of term 2.
	send("b", &raft.AppendEntriesRequest{Term: 2, PrevLogEntry: 2, PrevLogTerm: 1, Entries: []*raft.Log{register(3, 2, "new")}, LeaderCommitIndex: 3})

	testwait.For(t, 10*time.Second, "the follower applies the committed entry 3 (of term 2)", func() bool {
		if inst := f.FSM().Instance("api", "stale"); inst != nil {
			t.Fatalf("the follower applied its own uncommitted entry 3 of term 1: instance %v", inst)
		}
		return f.FSM().Instance("api", "new") != nil
	})
	insts, rev := f.FSM().Instances("api")
	var got []string
	for _, inst := range insts {
		got = append(got, inst.Id)
	}
	if rev != 3 || !slices.Equal(got, []string{"new", "one", "two"}) {
		t.Fatalf("the follower holds %v at revision %d, want [new one two] at 3", got, rev)
	}
}
