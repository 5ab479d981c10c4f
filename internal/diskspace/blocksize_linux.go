package diskspace

import "syscall"

// blockSize is the unit of st's block counts: on Linux the fragment size
// (f_frsize, what statvfs and df count in), which differs from f_bsize,
// the preferred I/O size, on some file systems (GlusterFS, some FUSE and
// network ones); f_bsize where the file system leaves it 0.
func blockSize(st *syscall.Statfs_t) uint64 {
	if st.Frsize > 0 {
		return uint64(st.Frsize)
	}
	return uint64(st.Bsize)
}
