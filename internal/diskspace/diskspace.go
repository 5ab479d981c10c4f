// Package diskspace tells how much room a file system has left.
package diskspace

import (
	"fmt"
	"math"
	"math/bits"
	"syscall"
)

// Free is how many bytes an unprivileged writer may still put on the file
// system holding dir.
func Free(dir string) (uint64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, fmt.Errorf("statfs %s: %w", dir, err)
	}
	return times(uint64(st.Bavail), blockSize(&st)), nil
}

// times is blocks*size, or the largest uint64 when that overflows: a file
// system that says it has no bound (some network and FUSE ones report
// every block count at its largest) has room, not the few bytes a
// wrapped product would say.
func times(blocks, size uint64) uint64 {
	hi, lo := bits.Mul64(blocks, size)
	if hi != 0 {
		return math.MaxUint64
	}
	return lo
}
