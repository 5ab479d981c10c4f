package shardstore

import (
	"slices"
	"testing"
)

// WalkParts lists, in one walk, what WalkStamped and WalkBadParts list
// (the shards of the part files whose header is good, the part files
// whose header is bad), and reports its progress after every part file.
func TestWalkPartsIsWalkStampedAndWalkBadPartsInOne(t *testing.T) {
	s := open(t, t.TempDir(), Options{})
	for _, id := range []ID{{blobA, 0, 1}, {blobA, 2, 1}, {blobA, 0, 2}} {
		put(t, s, id, testBlockSize, 1)
	}
	flip(t, s.Path(ID{Blob: blobA, Index: 2}), 30) // a byte of the blob id: the header's checksum fails

	var stamped, bad []ID
	done := 0
	err := s.WalkParts(PartWalk{
		Stamped: func(id ID, _ Stamp) error { stamped = append(stamped, id); return nil },
		Bad: func(blob string, index uint16, _ Stamp) error {
			bad = append(bad, ID{Blob: blob, Index: index})
			return nil
		},
		Done: func() error { done++; return nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := []ID{{blobA, 0, 1}, {blobA, 2, 1}}; !slices.Equal(stamped, want) {
		t.Errorf("WalkParts listed shards %v, want %v", stamped, want)
	}
	if want := []ID{{Blob: blobA, Index: 2}}; !slices.Equal(bad, want) {
		t.Errorf("WalkParts listed bad part files %v, want %v", bad, want)
	}
	if done != 2 {
		t.Errorf("WalkParts reported progress %d times over 2 part files, want 2", done)
	}
}
