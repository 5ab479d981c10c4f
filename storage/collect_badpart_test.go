package storage

import (
	"bytes"
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/internal/testlog"
	"github.com/zrpcio/zrpc/storage/codec"
	"github.com/zrpcio/zrpc/storage/shardstore"
)

// damagePartHeader changes a byte of the blob id in the header of the
// part file at path: the header's checksum fails, and the file's blocks
// can no longer be listed.
func damagePartHeader(t testing.TB, path string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt([]byte{0xee}, 30); err != nil {
		t.Fatal(err)
	}
}

// badPartOfBlock1 stores on s shard 0 of block 1 of blob id (1+1, blocks
// of MinBlockSize) in a part file whose header then goes bad, and
// returns the file's path.
func badPartOfBlock1(t testing.TB, s *Store, id string) string {
	t.Helper()
	payload := bytes.Repeat([]byte{7}, MinBlockSize)
	h := shardstore.Header{ID: shardstore.ID{Blob: id, Block: 1, Index: 0}, K: 1, M: 1, BlockLen: MinBlockSize, ShardLen: MinBlockSize,
		Sum: codec.Checksum(payload), BlockSize: MinBlockSize}
	if err := s.shards.Put(h, payload); err != nil {
		t.Fatal(err)
	}
	path := s.shards.Path(h.ID)
	damagePartHeader(t, path)
	return path
}

// TestOrphanCollectionKeepsABadPartFileWhileTheLeadersBlobExists: agent
// n1, whose replica lags the leader's (it is restarting), lacks blob b,
// and holds shard 0 of b's block 1 in a part file whose header went bad.
// The leader's metadata places that shard on n1, and shard 0 of block 0
// on n2: asked about block 0 alone, it would call the file unreferenced.
// Asked about the blob as a whole, it keeps the file while a put of b is
// pending and once b is committed, and lets it go once b is deleted.
func TestOrphanCollectionKeepsABadPartFileWhileTheLeadersBlobExists(t *testing.T) {
	leader, lfc := newTestStore(t, Config{}, "n2", "n1", "n2")
	s, fc := newTestStore(t, Config{OrphanGrace: time.Minute}, "n1", "n1", "n2")
	ledBy(s, fc, leader.LocalLeader())
	id := newBlobID()
	path := badPartOfBlock1(t, s, id)
	sum := codec.Checksum(bytes.Repeat([]byte{7}, MinBlockSize))
	b := &pb.Blob{Name: "b", Id: id, Size: 2 * MinBlockSize, DataShards: 1, ParityShards: 1, BlockSize: MinBlockSize, Sha256: make([]byte, 32),
		Nodes: []string{"n2", "n1"},
		Blocks: []*pb.BlobBlock{
			{Len: MinBlockSize, Holders: []uint32{1, 2}, Sums: []uint32{sum, sum}}, // shard 0 on n2
			{Len: MinBlockSize, Holders: []uint32{2, 1}, Sums: []uint32{sum, sum}}, // shard 0 on n1
		}}
	steps := []struct {
		what string
		cmd  *pb.Command
		kept bool
	}{
		{"a put of the blob pending on the leader", &pb.Command{Kind: &pb.Command_BlobPending{BlobPending: &pb.BlobPending{Id: id, Name: b.Name, Node: "n2"}}}, true},
		{"the blob committed on the leader, block 1's shard 0 on n1", &pb.Command{Kind: &pb.Command_BlobCommit{BlobCommit: &pb.BlobCommit{Blob: b}}}, true},
		{"the blob deleted on the leader", &pb.Command{Kind: &pb.Command_BlobDelete{BlobDelete: &pb.BlobDelete{Name: b.Name}}}, false},
	}
	for _, st := range steps {
		if _, err := lfc.apply(st.cmd); err != nil {
			t.Fatalf("%s: %v", st.what, err)
		}
		s.CollectOrphans(t.Context(), time.Now().Add(time.Hour))
		_, err := os.Stat(path)
		switch {
		case st.kept && err != nil:
			t.Fatalf("%s: the bad part file on n1: %v, want it kept", st.what, err)
		case !st.kept && !errors.Is(err, fs.ErrNotExist):
			t.Fatalf("%s: the bad part file on n1: %v, want it removed", st.what, err)
		}
	}
}

// TestOrphanCollectionKeepsABadPartFileALeaderOfAnOlderBuildCannotJudge:
// a leader of an older build answers every Referenced question about
// one block, and a question about a blob as a whole as one about a block
// the blob does not have: unreferenced. The agent tells by the probe it
// sends along, and keeps its bad part file, even of a blob gone, saying
// why.
func TestOrphanCollectionKeepsABadPartFileALeaderOfAnOlderBuildCannotJudge(t *testing.T) {
	var logs testlog.Buffer
	s, fc := newTestStoreLog(t, Config{OrphanGrace: time.Minute}, slog.New(slog.NewTextHandler(&logs, nil)), "n1", "n1", "n2")
	ledBy(s, fc, &referencedStub{LeaderAPI: fc.Leader(), answer: func(_ int, req *pb.ReferencedRequest, _ func() ([]bool, error)) ([]bool, error) {
		out := make([]bool, len(req.Shards))
		for i, ref := range req.Shards { // as before anyBlock
			out[i] = referencedBy(fc.fsm, req.Node, ref.GetBlobId(), ref.GetBlock(), ref.GetIndex())
		}
		return out, nil
	}})
	path := badPartOfBlock1(t, s, newBlobID()) // no such blob, on the leader either

	s.CollectOrphans(t.Context(), time.Now().Add(time.Hour))
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("the bad part file, judged by a leader of an older build: %v, want it kept", err)
	}
	if !strings.Contains(logs.String(), "of an older build") || !strings.Contains(logs.String(), "part_files=1") {
		t.Errorf("the log does not say that one bad part file was kept for the leader's older build:\n%s", logs.String())
	}
}

// TestReferencedAnswersAnyBlockAboutTheWholeBlob: the leader's Shards
// server answers a question with anyBlock about the blob as a whole
// (referenced while it exists or a put of it is pending, wherever its
// shards are), and the probe, anyBlock with no blob id, as referenced.
func TestReferencedAnswersAnyBlockAboutTheWholeBlob(t *testing.T) {
	s, fc := newTestStore(t, Config{}, "n1", "n1", "n2", "n3", "n4")
	b := commitBlob(t, fc, "elsewhere", 2, 1, "n2", "n3", "n4") // nothing on n1
	pending := strings.Repeat("cd", 16)
	if _, err := fc.apply(&pb.Command{Kind: &pb.Command_BlobPending{BlobPending: &pb.BlobPending{Id: pending, Name: "pending", Node: "n2"}}}); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		what string
		ref  *pb.ShardRef
		want bool
	}{
		{"the probe", &pb.ShardRef{Block: anyBlock}, true},
		{"a blob placing nothing on the asking agent", &pb.ShardRef{BlobId: b.Id, Block: anyBlock, Index: 1}, true},
		{"a blob whose put is pending", &pb.ShardRef{BlobId: pending, Block: anyBlock}, true},
		{"a blob gone", &pb.ShardRef{BlobId: strings.Repeat("ef", 16), Block: anyBlock}, false},
		{"block 0 of a blob placing it elsewhere", &pb.ShardRef{BlobId: b.Id, Block: 0, Index: 1}, false},
	}
	req := &pb.ReferencedRequest{Node: "n1"}
	for _, tc := range cases {
		req.Shards = append(req.Shards, tc.ref)
	}
	resp, err := s.ShardServer().Referenced(t.Context(), req)
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Referenced) != len(cases) {
		t.Fatalf("answered for %d shards, asked about %d", len(resp.Referenced), len(cases))
	}
	for i, tc := range cases {
		if resp.Referenced[i] != tc.want {
			t.Errorf("%s: referenced %v, want %v", tc.what, resp.Referenced[i], tc.want)
		}
	}
}
