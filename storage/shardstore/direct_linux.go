package shardstore

import (
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// openDirectFile opens path for writing with O_DIRECT.
func openDirectFile(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_WRONLY|syscall.O_DIRECT, 0)
}

// adviseWillNeed starts reading n bytes of f at off into the page cache
// in the background. It is advice: an error changes nothing a read
// relies on, so it is ignored.
func adviseWillNeed(f *os.File, off, n int64) {
	_ = unix.Fadvise(int(f.Fd()), off, n, unix.FADV_WILLNEED)
}
