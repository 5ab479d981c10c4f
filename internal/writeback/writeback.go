// Package writeback has the kernel write a file's dirty pages to disk
// while the file is still being written, so that the fsync that makes it
// durable finds little left to do. Without it the disk sees nothing of a
// large file until its fsync (the kernel's background writeback waits
// for a tenth of memory to be dirty), and the fsync waits for all of it.
package writeback

import "os"

// Interval is how many bytes a Writer takes between two starts of its
// file's writeback: large enough that the calls cost nothing next to the
// writes, small enough that the disk works beside the writer.
const Interval = 8 << 20

// Start asks the kernel to begin writing f's dirty pages, without waiting
// for them (sync_file_range with SYNC_FILE_RANGE_WRITE on Linux; nothing
// elsewhere). It is advice: an fsync is still what makes f durable and
// reports a failed write.
func Start(f *os.File) { start(f) }

// Writer writes to a file and starts its writeback every Interval bytes.
// Its zero value is not usable; make one with NewWriter.
type Writer struct {
	f         *os.File
	unflushed int64
	// start is Start; tests count the calls through it.
	start func(*os.File)
}

// NewWriter returns a Writer that writes to f.
func NewWriter(f *os.File) *Writer { return &Writer{f: f, start: Start} }

// Write writes p to the file, then starts the writeback when the bytes
// written crossed a multiple of Interval (once per write at most: a start
// covers everything written so far).
func (w *Writer) Write(p []byte) (int, error) {
	n, err := w.f.Write(p)
	if w.unflushed += int64(n); w.unflushed >= Interval {
		w.start(w.f)
		w.unflushed %= Interval
	}
	return n, err
}
