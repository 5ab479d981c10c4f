package shardstore

import (
	"os"
	"syscall"
)

// openDirectFile opens path for writing with O_DIRECT.
func openDirectFile(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_WRONLY|syscall.O_DIRECT, 0)
}
