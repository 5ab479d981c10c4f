package storage

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/zrpcio/zrpc/internal/testlog"
	"github.com/zrpcio/zrpc/storage/codec"
	"github.com/zrpcio/zrpc/storage/shardstore"
)

// TestAFrameHeaderTheDiskCannotReadIsScrubbedAndWalkedPast: a shard
// whose frame header sits on a bad sector (EIO) is found corrupt by the
// scrubber, which reports it for repair, and orphan collection's walk
// goes past its part file to the files after it, whose orphans it still
// deletes.
func TestAFrameHeaderTheDiskCannotReadIsScrubbedAndWalkedPast(t *testing.T) {
	var bad atomic.Pointer[shardstore.ID]
	opts := shardstore.Options{ReadFault: func(id shardstore.ID) error {
		if b := bad.Load(); b != nil && id == *b {
			return syscall.EIO
		}
		return nil
	}}
	s, fc := newTestStoreOpts(t, Config{OrphanGrace: time.Minute, RepairInterval: time.Hour}, testlog.New(t, "n1"), opts, "n1", "n1", "n2", "n3")
	b := commitBlob(t, fc, "on-a-bad-sector", 2, 1, "n2", "n3", "n1") // one block: shard 2 here
	payload := make([]byte, 50)
	var ids []shardstore.ID
	for _, blob := range []string{b.Id, strings.Repeat("cd", 16)} { // the second, walked after: no such blob
		h := shardstore.Header{ID: shardstore.ID{Blob: blob, Block: 0, Index: 2}, K: 2, M: 1, BlockLen: 100, ShardLen: 50,
			Sum: codec.Checksum(payload), BlockSize: 100}
		if err := s.shards.Put(h, payload); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, h.ID)
	}
	held, orphan := ids[0], ids[1]
	bad.Store(&held)

	if n := s.CollectOrphans(context.Background(), time.Now().Add(time.Hour)); n != 1 {
		t.Fatalf("orphan collection deleted %d shards, want the 1 orphan after the unreadable frame", n)
	}
	if _, _, err := s.shards.Get(orphan, nil); !errors.Is(err, shardstore.ErrNotFound) {
		t.Fatalf("the orphan after collection: %v, want not found", err)
	}
	if n := s.ScrubOnce(context.Background(), 0); n != 1 {
		t.Fatalf("a scrub pass reported %d shards, want the 1 whose frame header the disk cannot read", n)
	}
}
