package diskspace

import (
	"syscall"
	"testing"
)

// TestBlockSizeIsTheFragmentSize: Linux counts a file system's blocks in
// f_frsize units; f_bsize is the preferred I/O size, 32 times larger on
// GlusterFS, and only stands in when f_frsize is 0.
func TestBlockSizeIsTheFragmentSize(t *testing.T) {
	for _, tc := range []struct {
		st   syscall.Statfs_t
		want uint64
	}{
		{syscall.Statfs_t{Bsize: 4096, Frsize: 4096}, 4096},
		{syscall.Statfs_t{Bsize: 128 << 10, Frsize: 4096}, 4096},
		{syscall.Statfs_t{Bsize: 4096}, 4096},
	} {
		if got := blockSize(&tc.st); got != tc.want {
			t.Errorf("f_bsize %d, f_frsize %d: block size %d, want %d", tc.st.Bsize, tc.st.Frsize, got, tc.want)
		}
	}
}
