//go:build !linux

package shardstore

import "os"

// writeAtv writes bufs, in order, at offset off of f.
func writeAtv(f *os.File, bufs [][]byte, off int64) error {
	for _, b := range bufs {
		if _, err := f.WriteAt(b, off); err != nil {
			return err
		}
		off += int64(len(b))
	}
	return nil
}
