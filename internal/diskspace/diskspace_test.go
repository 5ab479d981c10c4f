package diskspace

import (
	"math"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestFreeIsStatfsAvailableSpace: Free is what statfs says an
// unprivileged writer has (within what other writers change between the
// two reads), and a directory that is not there is an error naming it.
func TestFreeIsStatfsAvailableSpace(t *testing.T) {
	dir := t.TempDir()
	got, err := Free(dir)
	if err != nil {
		t.Fatal(err)
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	want := uint64(st.Bavail) * uint64(st.Bsize)
	if got == 0 || max(got, want)-min(got, want) > 64<<20 {
		t.Fatalf("Free = %d, statfs says %d", got, want)
	}
	gone := filepath.Join(dir, "gone")
	if _, err := Free(gone); err == nil || !strings.Contains(err.Error(), gone) {
		t.Fatalf("Free of a missing directory: %v, want an error naming it", err)
	}
}

// TestFreeOfAFileSystemWithoutBound: block counts times the block size
// past 2^64 (a file system reporting its counts at their largest) is all
// the room there is, not the low bits of the product.
func TestFreeOfAFileSystemWithoutBound(t *testing.T) {
	for _, tc := range []struct {
		blocks, size, want uint64
	}{
		{0, 4096, 0},
		{1 << 20, 4096, 1 << 32},
		{math.MaxUint64, 4096, math.MaxUint64},
		{1 << 52, 1 << 12, math.MaxUint64}, // exactly 2^64
		{1<<52 - 1, 1 << 12, math.MaxUint64 - (1<<12 - 1)},
	} {
		if got := times(tc.blocks, tc.size); got != tc.want {
			t.Errorf("%d blocks of %d bytes = %d bytes, want %d", tc.blocks, tc.size, got, tc.want)
		}
	}
}
