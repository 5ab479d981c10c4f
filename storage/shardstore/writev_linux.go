package shardstore

import (
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// maxIovecs is how many buffers one pwritev takes (Linux's IOV_MAX).
const maxIovecs = 1024

// writeAtv writes bufs, in order, at offset off of f, with as few
// pwritev calls as the kernel allows; it may change bufs.
func writeAtv(f *os.File, bufs [][]byte, off int64) error {
	raw, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var werr error
	err = raw.Write(func(fd uintptr) bool {
		for bufs = advance(bufs, 0); len(bufs) > 0; {
			n, err := unix.Pwritev(int(fd), bufs[:min(len(bufs), maxIovecs)], off)
			switch {
			case err == unix.EINTR:
				continue
			case err != nil:
				werr = &os.PathError{Op: "pwritev", Path: f.Name(), Err: err}
				return true
			case n == 0:
				werr = &os.PathError{Op: "pwritev", Path: f.Name(), Err: io.ErrShortWrite}
				return true
			}
			off += int64(n)
			bufs = advance(bufs, n)
		}
		return true
	})
	if err != nil {
		return err
	}
	return werr
}
