package shardstore

import (
	"os"
	"sync"
	"testing"
)

// A part written with O_DIRECT asks for its headers to be read back into
// the page cache while it is written, so that the commit's list of what
// it holds (Held) reads none of them from the disk. The test checks what
// the store asks of the kernel, not what the kernel keeps: read-ahead is
// advice, which the kernel may skip or evict under memory pressure.
func TestDirectPartAsksForItsHeadersToBeCached(t *testing.T) {
	type span struct{ off, n int64 }
	var (
		mu     sync.Mutex
		asked  []span
		origAd = advise
	)
	advise = func(f *os.File, off, n int64) {
		mu.Lock()
		asked = append(asked, span{off, n})
		mu.Unlock()
		origAd(f, off, n)
	}
	t.Cleanup(func() { advise = origAd })

	s := open(t, t.TempDir(), Options{})
	before := directWrites.Load()
	var blocks []uint32
	for b := range uint32(12) {
		blocks = append(blocks, b)
	}
	stageBlocks(t, s, blocks)
	chunks := directWrites.Load() - before
	if chunks == 0 {
		t.Skip("the test directory's file system wrote no chunk with O_DIRECT")
	}
	if _, err := s.CommitStagedPart(blobA, 0); err != nil {
		t.Fatal(err)
	}

	// The first chunks went to the disk directly, in order from offset
	// 0; the rest went through the page cache and are in it already.
	direct := chunks * directChunk
	mu.Lock()
	covered := make([]bool, direct)
	for _, a := range asked {
		for o := max(a.off, 0); o < min(a.off+a.n, direct); o++ {
			covered[o] = true
		}
	}
	mu.Unlock()
	hdr := partHeader{K: 4, M: 2, BlockSize: directBlockSize}
	headers := []span{{0, PartHeaderSize}}
	for _, b := range blocks {
		headers = append(headers, span{hdr.offset(b), frameHeaderSize})
	}
	var missing []int64
	for _, h := range headers {
		for o := h.off; o < min(h.off+h.n, direct); o++ {
			if !covered[o] {
				missing = append(missing, h.off)
				break
			}
		}
	}
	if len(missing) > 0 {
		t.Fatalf("the headers at offsets %v were written past the page cache (%d chunks of %d bytes) and never asked to be read back",
			missing, chunks, directChunk)
	}
	if direct <= hdr.offset(blocks[1]) {
		t.Fatalf("only %d bytes were written directly: the test's blocks no longer reach past the first header", direct)
	}
}
