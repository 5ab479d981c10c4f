package storage

import (
	"context"
	"io/fs"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/internal/testlog"
	"github.com/zrpcio/zrpc/storage/codec"
	"github.com/zrpcio/zrpc/storage/shardstore"
)

// TestAScrubPassThatCannotReadShardsWarnsOnce: when the shards cannot be
// read for another reason than what they hold (the shard directory's
// permissions changed), a scrub pass reports none of them for repair and
// warns once, with how many it could not read and the first error, not
// once per shard: an agent holding a million shards wrote a million lines
// an hour.
func TestAScrubPassThatCannotReadShardsWarnsOnce(t *testing.T) {
	var logs testlog.Buffer
	var denied atomic.Bool
	opts := shardstore.Options{ReadFault: func(shardstore.ID) error {
		if denied.Load() {
			return fs.ErrPermission
		}
		return nil
	}}
	s, fc := newTestStoreOpts(t, Config{RepairInterval: time.Hour}, slog.New(slog.NewTextHandler(&logs, nil)), opts, "n1", "n1", "n2", "n3")
	id := strings.Repeat("ab", 16)
	if _, err := fc.apply(&pb.Command{Kind: &pb.Command_BlobPending{BlobPending: &pb.BlobPending{Id: id, Name: "unreadable", Node: "n1"}}}); err != nil {
		t.Fatal(err)
	}
	const blocks, blockSize = 3, 4096
	b := &pb.Blob{Name: "unreadable", Id: id, Size: blocks * blockSize, DataShards: 2, ParityShards: 1, BlockSize: blockSize}
	payload := make([]byte, codec.ShardLen(blockSize, 2))
	for block := range uint32(blocks) { // shard 0 of each block here
		b.Blocks = append(b.Blocks, &pb.BlobBlock{Len: blockSize, Sums: make([]uint32, 3),
			Holders: []uint32{b.HolderRef("n1"), b.HolderRef("n2"), b.HolderRef("n3")}})
		h := shardstore.Header{ID: shardstore.ID{Blob: id, Block: block, Index: 0}, K: 2, M: 1, BlockLen: blockSize,
			ShardLen: uint32(len(payload)), Sum: codec.Checksum(payload), BlockSize: blockSize}
		if err := s.shards.Put(h, payload); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := fc.apply(&pb.Command{Kind: &pb.Command_BlobCommit{BlobCommit: &pb.BlobCommit{Blob: b}}}); err != nil {
		t.Fatal(err)
	}
	denied.Store(true)
	if n := s.ScrubOnce(context.Background(), 0); n != 0 {
		t.Fatalf("a pass over shards it cannot read reported %d for repair, want none", n)
	}
	var warned []string
	for _, line := range strings.Split(logs.String(), "\n") {
		if strings.Contains(line, "level=WARN") && strings.Contains(line, fs.ErrPermission.Error()) {
			warned = append(warned, line)
		}
	}
	if len(warned) != 1 || !strings.Contains(warned[0], "shards=3") {
		t.Fatalf("a pass that could not read 3 shards warned %d times, want once saying shards=3:\n%s", len(warned), logs.String())
	}
	var m dto.Metric
	if err := s.metrics.scrubUnreadShards.Write(&m); err != nil || m.GetCounter().GetValue() != 3 {
		got := m.GetCounter().GetValue()
		t.Fatalf("zrpc_blob_scrub_unread_shards_total = %v (%v) after a pass that could not read 3 shards, want 3", got, err)
	}
}
