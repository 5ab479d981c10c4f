package shardstore

import (
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"unsafe"
)

// Direct writes of staged parts. A put stages each part file's frames in
// block order, one after the other, so the part's bytes arrive as one
// sequence: the staged part gathers them in an aligned buffer and writes
// each full chunk with O_DIRECT (Linux), straight from that buffer to the
// disk, instead of copying every byte into new page-cache pages that the
// commit's fsync then writes out. On the 2-core VM of docs/benchmarks.md
// a 256 MiB file written and fsynced that way took a fifth of the system
// CPU of a buffered write: its host makes the first write to guest memory
// not used lately expensive, and page cache for a new file is such memory.
// The part file's format is unchanged.
//
// The bytes not yet written, at most one chunk from the last chunk
// boundary, wait in the buffer. Whatever else touches the staged file (a
// frame that does not follow the last one, a discard, a move, a merge,
// the commit's fsync) first settles the part: the waiting bytes are
// written through the page cache and the part writes buffered from then
// on. A file system that refuses O_DIRECT (tmpfs), or a direct write that
// fails, leaves the part on the buffered path too; nothing is lost, since
// the chunk is written buffered then. When that write fails as well (a
// disk that filled), the shards whose bytes waited are not in the file:
// the part is lost, and its later shards and its commit fail saying so,
// rather than commit those shards as holes. The commit's fsync makes the
// part durable either way: it flushes the disk's cache and commits the
// blocks a direct write allocated.

// directAlign is the alignment of a direct write's memory, offset and
// length: the page size, a multiple of every disk's logical block size.
const directAlign = 4096

// directChunk is the bytes a staged part gathers before a direct write.
const directChunk = 1 << 20

// chunkPool holds aligned chunk buffers of directChunk bytes.
var chunkPool = sync.Pool{New: func() any {
	b := alignedBuffer(directChunk)
	return &b
}}

// alignedBuffer returns n bytes whose first is directAlign-aligned.
func alignedBuffer(n int) []byte {
	b := make([]byte, n+directAlign)
	skip := 0
	if r := int(uintptr(unsafe.Pointer(unsafe.SliceData(b))) % directAlign); r != 0 {
		skip = directAlign - r
	}
	return b[skip : skip+n : skip+n]
}

// openDirect opens path for O_DIRECT writes; a variable so that tests can
// refuse it.
var openDirect = openDirectFile

// advise asks the kernel to read a range of a file into the page cache
// in the background; a variable so that tests can see what is asked.
var advise = adviseWillNeed

// directWriter is what a staged part writes with O_DIRECT and gathers for
// it; the part's lock guards it.
type directWriter struct {
	f   *os.File // the O_DIRECT descriptor; nil once the part writes buffered
	buf *[]byte  // chunk buffer from chunkPool; nil once settled
	at  int64    // file offset of (*buf)[0], a multiple of directChunk
	n   int      // bytes gathered in buf
}

// startDirect sets sp up to gather its bytes from offset 0, the header
// first, when the file system takes O_DIRECT writes; it reports whether
// it did (otherwise the caller writes the header itself).
func (sp *stagedPart) startDirect(header []byte) bool {
	f, err := openDirect(sp.tmp)
	if err != nil {
		return false
	}
	buf := chunkPool.Get().(*[]byte)
	sp.dw = directWriter{f: f, buf: buf, n: copy(*buf, header)}
	return true
}

// follows reports whether a frame at off continues the gathered bytes.
func (sp *stagedPart) follows(off int64) bool {
	return sp.dw.buf != nil && off == sp.dw.at+int64(sp.dw.n)
}

// gather appends bufs to the gathered bytes, writing each chunk that
// fills.
func (sp *stagedPart) gather(bufs [][]byte) error {
	for _, b := range bufs {
		for len(b) > 0 {
			c := copy((*sp.dw.buf)[sp.dw.n:], b)
			sp.dw.n += c
			b = b[c:]
			if sp.dw.n == directChunk {
				if err := sp.writeGathered(); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// writeGathered writes the gathered bytes at their offset: with O_DIRECT
// when they are a whole chunk and the part still writes directly, else
// (or when the direct write fails) through the page cache. When that
// fails too (a full disk), the shards whose bytes were gathered, answered
// as staged already, are lost: the part is marked lost (sp.lost), so that
// it is never committed without them.
func (sp *stagedPart) writeGathered() error {
	if sp.lost != nil {
		return sp.lost
	}
	b := (*sp.dw.buf)[:sp.dw.n]
	var err error
	if sp.fault != nil {
		err = sp.fault()
	}
	written := false
	if err == nil && sp.dw.f != nil && sp.dw.n == directChunk {
		if _, derr := sp.dw.f.WriteAt(b, sp.dw.at); derr == nil {
			written = true
			directWrites.Add(1)
			sp.prefetchHeaders(sp.dw.at, int64(sp.dw.n))
		} else {
			sp.closeDirect()
		}
	}
	if err == nil && !written {
		_, err = sp.f.WriteAt(b, sp.dw.at)
	}
	if err != nil {
		sp.lost = fmt.Errorf("staged part %s: %w: the shards staged in it are lost (their bytes were not written)", sp.path, err)
		return sp.lost
	}
	sp.dw.at += int64(sp.dw.n)
	sp.dw.n = 0
	return nil
}

// prefetchHeaders asks the kernel to read back, in the background, the
// headers (the part's and its frames') within the n bytes at off that a
// direct write just put on the disk, bypassing the page cache. The
// commit lists what the part holds by reading every frame header
// (Held): without this each one would be a disk read at the end of the
// put, one after the other; with it they come from the page cache, read
// while the rest of the part streams in. The kernel keeps the page cache
// coherent with direct writes, so what it reads back is what was written.
func (sp *stagedPart) prefetchHeaders(off, n int64) {
	end := off + n
	if off < PartHeaderSize {
		advise(sp.f, 0, PartHeaderSize)
	}
	slot := sp.hdr.slotLen()
	first := max(off-PartHeaderSize-frameHeaderSize, 0) / slot
	for b := first; ; b++ {
		o := PartHeaderSize + b*slot
		if o >= end {
			return
		}
		if lo, hi := max(o, off), min(o+frameHeaderSize, end); lo < hi {
			advise(sp.f, lo, hi-lo)
		}
	}
}

// settle writes the gathered bytes through the page cache and makes the
// part write buffered from now on. The part's lock is held.
func (sp *stagedPart) settle() error {
	if sp.lost != nil {
		return sp.lost
	}
	if sp.dw.buf == nil {
		return nil
	}
	sp.closeDirect()
	var err error
	if sp.dw.n > 0 {
		err = sp.writeGathered()
	}
	chunkPool.Put(sp.dw.buf)
	sp.dw.buf = nil
	return err
}

// closeDirect closes the O_DIRECT descriptor, if open.
func (sp *stagedPart) closeDirect() {
	if sp.dw.f != nil {
		sp.dw.f.Close()
		sp.dw.f = nil
	}
}

// dropDirect forgets the gathered bytes (the part is being removed).
func (sp *stagedPart) dropDirect() {
	sp.closeDirect()
	if sp.dw.buf != nil {
		chunkPool.Put(sp.dw.buf)
		sp.dw.buf = nil
	}
}

// directWrites counts the chunks written with O_DIRECT, for tests.
var directWrites atomic.Int64
