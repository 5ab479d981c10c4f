package ctlcmd

import (
	"bytes"
	"errors"
	"io"
	"testing"
	"time"
)

// blockReader returns src in reads of at most block bytes, as a blob
// reader does once a block's shards are at hand.
type blockReader struct {
	src   []byte
	block int
}

func (r *blockReader) Read(p []byte) (int, error) {
	if len(r.src) == 0 {
		return 0, io.EOF
	}
	n := copy(p[:min(len(p), r.block)], r.src)
	r.src = r.src[n:]
	return n, nil
}

// writeCounter records every write (and, unlike *os.File, has no
// ReadFrom that would choose its own buffer).
type writeCounter struct {
	buf    bytes.Buffer
	writes int
	fail   error
}

func (w *writeCounter) Write(p []byte) (int, error) {
	w.writes++
	if w.fail != nil {
		return 0, w.fail
	}
	return w.buf.Write(p)
}

func TestBlobGetCopyWritesEachBlockInOneWrite(t *testing.T) {
	src := bytes.Repeat([]byte("0123456789abcdef"), 4<<20/16+100) // 4 MiB and 1,600 bytes
	var out bytes.Buffer
	bar := newProgressBarTo(&out, "get big", int64(len(src)), (&fakeClock{t: time.Unix(1000, 0)}).now)
	w := &writeCounter{}
	n, err := copyWithProgress(w, &blockReader{src: src, block: copyBlock}, bar)
	if err != nil {
		t.Fatal(err)
	}
	if n != int64(len(src)) || !bytes.Equal(w.buf.Bytes(), src) {
		t.Fatalf("copied %d bytes (equal: %v), want the %d read", n, bytes.Equal(w.buf.Bytes(), src), len(src))
	}
	if w.writes != 5 {
		t.Fatalf("%d writes for 4 blocks and a short one, want 5 (one per read)", w.writes)
	}
	if bar.done != int64(len(src)) {
		t.Fatalf("progress at %d bytes, want %d", bar.done, len(src))
	}
}

func TestBlobGetCopyStopsAtTheFirstWriteError(t *testing.T) {
	disk := errors.New("no space left on device")
	w := &writeCounter{fail: disk}
	bar := newProgressBarTo(nil, "get big", 3<<20, time.Now)
	n, err := copyWithProgress(w, &blockReader{src: make([]byte, 3<<20), block: copyBlock}, bar)
	if !errors.Is(err, disk) || n != 0 || w.writes != 1 {
		t.Fatalf("copy = %d, %v after %d writes; want 0, %v after 1", n, err, w.writes, disk)
	}
}
