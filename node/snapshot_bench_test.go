package node_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/zrpcio/zrpc/client"
	"github.com/zrpcio/zrpc/snapshot"
	"github.com/zrpcio/zrpc/testcluster"
)

// BenchmarkSnapshotSaveRestore100k measures `zrpcctl snapshot save` and
// `restore` end to end on a 3-agent cluster holding 100,000 instances,
// through the same calls zrpcctl makes:
//   - save: the agent snapshots its replica and streams the file over
//     gRPC (relayed by a follower from the leader); the client writes a
//     temporary file, syncs it, verifies it (hash, every record walked)
//     and renames it;
//   - restore: the client verifies the file, streams it to a follower,
//     which checks it (hash and a load into a scratch state machine) and
//     forwards it to the leader, which checks it again and restores it
//     through Raft; the call returns once the leader has applied it.
//
// The goal is under 5 s each.
//
//	go test -run '^$' -bench BenchmarkSnapshotSaveRestore100k -benchtime 3x ./node/
func BenchmarkSnapshotSaveRestore100k(b *testing.B) {
	c := testcluster.New(b, 3, patientRaft)
	fillRegistry(b, c, 100000)
	cl := newClient(b, c.GRPCAddr((leaderIndex(c)+1)%c.Size())) // a follower
	path := filepath.Join(b.TempDir(), "bench.snap")
	b.Run("save", func(b *testing.B) {
		for b.Loop() {
			saveFile(b, cl, path)
		}
	})
	b.Run("restore", func(b *testing.B) {
		for b.Loop() {
			if _, err := snapshot.InspectFile(path); err != nil {
				b.Fatal(err)
			}
			f, err := os.Open(path)
			if err != nil {
				b.Fatal(err)
			}
			_, err = cl.RestoreSnapshot(context.Background(), f, client.SnapshotOptions{})
			f.Close()
			if err != nil {
				b.Fatal(err)
			}
		}
	})
}

// leaderIndex is the index of c's leader.
func leaderIndex(c *testcluster.Cluster) int {
	for i := range c.Size() {
		if n := c.Node(i); n != nil && n.Store().IsLeader() {
			return i
		}
	}
	return 0
}
