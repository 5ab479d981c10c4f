//go:build !linux

package diskspace

import "syscall"

// blockSize is the unit of st's block counts: f_bsize, the fundamental
// block size, on the BSDs and macOS.
func blockSize(st *syscall.Statfs_t) uint64 { return uint64(st.Bsize) }
