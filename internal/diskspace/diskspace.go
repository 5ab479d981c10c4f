// Package diskspace tells how much room a file system has left.
package diskspace

import (
	"fmt"
	"syscall"
)

// Free is how many bytes an unprivileged writer may still put on the file
// system holding dir.
func Free(dir string) (uint64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, fmt.Errorf("statfs %s: %w", dir, err)
	}
	return uint64(st.Bavail) * uint64(st.Bsize), nil
}
