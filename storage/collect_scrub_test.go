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
	"github.com/zrpcio/zrpc/internal/testwait"
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
	commitScrubbed(t, s, fc, 3)
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

// commitScrubbed commits a blob of blocks blocks, 2+1, placing shard 0
// of each on n1 (s, whose files hold them) and the others on n2 and n3.
func commitScrubbed(t *testing.T, s *Store, fc *fakeCluster, blocks uint32) {
	t.Helper()
	id := strings.Repeat("ab", 16)
	if _, err := fc.apply(&pb.Command{Kind: &pb.Command_BlobPending{BlobPending: &pb.BlobPending{Id: id, Name: "scrubbed", Node: "n1"}}}); err != nil {
		t.Fatal(err)
	}
	const blockSize = 4096
	b := &pb.Blob{Name: "scrubbed", Id: id, Size: uint64(blocks) * blockSize, DataShards: 2, ParityShards: 1, BlockSize: blockSize}
	payload := make([]byte, codec.ShardLen(blockSize, 2))
	for block := range blocks { // shard 0 of each block here
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
}

// A scrub pass, or the check of the shards held at start, whose read
// hangs on this agent's disk gives up on it within ShardTimeout rather
// than stopping for as long as the disk hangs: it warns once, naming the
// disk and saying when the shards are checked again (the scrubber's next
// pass; with scrubbing off, no pass before the agent restarts), leaves
// the read among the calls stuck on the disk (bounded by
// maxStuckDiskCalls) and ends without reading on into the hung disk.
// Once the disk answers the read ends.
func TestPassesOverTheShardsGiveUpOnAHungDisk(t *testing.T) {
	passes := map[string]func(s *Store) int{
		"ScrubOnce": func(s *Store) int { return s.ScrubOnce(context.Background(), 0) },
		"CheckHeld": func(s *Store) int { return s.CheckHeld(context.Background()) },
	}
	scrubbing := []struct {
		name      string
		rate      int64
		says, not string
	}{
		{"scrubbing on", 8 << 20, "the scrubber's next pass tries again", "scrubbing is off"},
		{"scrubbing off", 0, "scrubbing is off (blob_scrub_rate 0), so no later pass checks", "next pass"},
	}
	for name, pass := range passes {
		for _, sc := range scrubbing {
			t.Run(name+"/"+sc.name, func(t *testing.T) {
				var logs testlog.Buffer
				disk := newStuckDisk()
				s, fc := newTestStoreOpts(t, Config{RepairInterval: time.Hour, ShardTimeout: 100 * time.Millisecond, ScrubRate: sc.rate},
					slog.New(slog.NewTextHandler(&logs, nil)), disk.options(), "n1", "n1", "n2", "n3")
				t.Cleanup(disk.unhang) // before the store closes, which waits for the calls
				commitScrubbed(t, s, fc, 3)

				disk.hang.Store(true)
				done := make(chan int, 1)
				go func() { done <- pass(s) }()
				if n := ended(t, done, name+" to end while the disk hangs in reads"); n != 0 {
					t.Fatalf("%s on a hung disk reported %d shards for repair, want none", name, n)
				}
				if n := s.stuck.Load(); n != 1 {
					t.Fatalf("%d reads left on the hung disk, want 1: %s stops at the first", n, name)
				}
				var warned []string
				for _, line := range strings.Split(logs.String(), "\n") {
					if strings.Contains(line, "level=WARN") && strings.Contains(line, s.shards.Dir()) {
						warned = append(warned, line)
					}
				}
				if len(warned) != 1 {
					t.Fatalf("%s, given up on a hung disk, warned %d times naming the disk %s, want once:\n%s", name, len(warned), s.shards.Dir(), logs.String())
				}
				if !strings.Contains(warned[0], sc.says) || strings.Contains(warned[0], sc.not) {
					t.Fatalf("%s with %s, given up on a hung disk, warned %q; want it to say %q, not %q", name, sc.name, warned[0], sc.says, sc.not)
				}
				disk.unhang()
				testwait.For(t, 10*time.Second, "the abandoned read to end once the disk answers", func() bool { return s.stuck.Load() == 0 })
			})
		}
	}
}
