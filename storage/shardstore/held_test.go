package shardstore

import (
	"errors"
	"slices"
	"testing"
)

// TestCommitStagedPartCommitsOnlyItsIndex: one part of a blob is made
// durable and listed by Held with its sums; the blob's other staged part
// stays staged, and DiscardStagedPart removes it and its space.
func TestCommitStagedPartCommitsOnlyItsIndex(t *testing.T) {
	s := open(t, t.TempDir(), Options{})
	h0, _ := stage(t, s, ID{blobA, 0, 0}, testBlockSize, 1)
	h2, _ := stage(t, s, ID{blobA, 2, 0}, testBlockSize, 2)
	stage(t, s, ID{blobA, 0, 1}, testBlockSize, 3)
	n, err := s.CommitStagedPart(blobA, 0)
	if err != nil || n != 2 {
		t.Fatalf("CommitStagedPart = %d, %v; want 2, nil", n, err)
	}
	held, err := s.Held(blobA, 0)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(held.Blocks, []uint32{0, 2}) || !slices.Equal(held.Sums, []uint32{h0.Sum, h2.Sum}) ||
		held.K != h0.K || held.M != h0.M || held.BlockSize != testBlockSize {
		t.Fatalf("Held = %+v, want blocks 0 and 2 with sums %08x and %08x", held, h0.Sum, h2.Sum)
	}
	if got := s.Staged(); len(got) != 1 || got[0].ID != (ID{blobA, 0, 1}) {
		t.Fatalf("Staged() = %v, want index 1's shard only", got)
	}
	if _, err := s.Held(blobA, 1); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Held of a part only staged: %v, want ErrNotFound", err)
	}
	s.DiscardStagedPart(blobA, 1)
	if got := s.Staged(); len(got) != 0 {
		t.Fatalf("Staged() after DiscardStagedPart = %v", got)
	}
	wantUsage(t, s, PartHeaderSize+3*slot, 2)

	// A part written again merges into the durable one.
	h1, _ := stage(t, s, ID{blobA, 1, 0}, testBlockSize, 4)
	if n, err := s.CommitStagedPart(blobA, 0); err != nil || n != 1 {
		t.Fatalf("second CommitStagedPart = %d, %v; want 1, nil", n, err)
	}
	held, _ = s.Held(blobA, 0)
	if !slices.Equal(held.Blocks, []uint32{0, 1, 2}) || held.Sums[1] != h1.Sum {
		t.Fatalf("Held after the merge = %+v", held)
	}
	// A deleted block (a hole) is not listed as held.
	if err := s.Delete(ID{blobA, 1, 0}); err != nil {
		t.Fatal(err)
	}
	held, _ = s.Held(blobA, 0)
	if !slices.Equal(held.Blocks, []uint32{0, 2}) {
		t.Fatalf("Held after a delete = %v, want blocks 0 and 2", held.Blocks)
	}
}

// TestHeldListsManyBlocksInOrder: Held reads a part's frame headers
// several at a time; it still lists every sound block, in block order
// with its own sum, and leaves out holes and an unsound frame wherever
// they fall among the readers.
func TestHeldListsManyBlocksInOrder(t *testing.T) {
	s := open(t, t.TempDir(), Options{})
	const blocks = 3*heldReaders + 5
	holes := map[uint32]bool{0: true, 5: true, heldReaders: true, 2*heldReaders + 1: true}
	const bad = uint32(heldReaders + 3)
	var want, wantSums []uint32
	for b := range uint32(blocks) {
		if holes[b] {
			continue
		}
		h, _ := stage(t, s, ID{blobA, b, 0}, testBlockSize, uint64(b))
		if b != bad {
			want, wantSums = append(want, b), append(wantSums, h.Sum)
		}
	}
	if _, err := s.CommitStagedPart(blobA, 0); err != nil {
		t.Fatal(err)
	}
	// The bad block's frame claims more bytes than a block holds.
	rewrite(t, s.Path(ID{Blob: blobA, Index: 0}), func(b []byte) []byte {
		copy(b[PartHeaderSize+int64(bad)*slot:], []byte{0xff, 0xff, 0xff, 0xff})
		return b
	})
	held, err := s.Held(blobA, 0)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(held.Blocks, want) || !slices.Equal(held.Sums, wantSums) {
		t.Fatalf("Held lists blocks %v with sums %08x,\nwant %v with %08x", held.Blocks, held.Sums, want, wantSums)
	}
}
