package shardstore

import (
	"os"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// residentPages reports, page by page, which pages of the file at path
// are in the page cache.
func residentPages(t *testing.T, path string) []bool {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	m, err := unix.Mmap(int(f.Fd()), 0, int(info.Size()), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(m)
	vec := make([]byte, (len(m)+os.Getpagesize()-1)/os.Getpagesize())
	if _, _, errno := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(unsafe.SliceData(m))), uintptr(len(m)),
		uintptr(unsafe.Pointer(unsafe.SliceData(vec)))); errno != 0 {
		t.Fatalf("mincore: %v", errno)
	}
	out := make([]bool, len(vec))
	for i, v := range vec {
		out[i] = v&1 != 0
	}
	return out
}

// A part written with O_DIRECT has its headers read back into the page
// cache while it is written, so that the commit's list of what it holds
// (Held) reads none of them from the disk.
func TestDirectPartKeepsItsHeadersCached(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, Options{})
	before := directWrites.Load()
	var blocks []uint32
	for b := range uint32(12) {
		blocks = append(blocks, b)
	}
	stageBlocks(t, s, blocks)
	if directWrites.Load() == before {
		t.Skip("the test directory's file system wrote no chunk with O_DIRECT")
	}
	if _, err := s.CommitStagedPart(blobA, 0); err != nil {
		t.Fatal(err)
	}
	path := s.Path(ID{Blob: blobA, Index: 0})
	hdr := partHeader{K: 4, M: 2, BlockSize: directBlockSize}
	page := int64(os.Getpagesize())
	var missing []int64
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		resident := residentPages(t, path)
		missing = missing[:0]
		if !resident[0] {
			missing = append(missing, 0)
		}
		for _, b := range blocks {
			off := hdr.offset(b)
			for _, p := range []int64{off / page, (off + frameHeaderSize - 1) / page} {
				if !resident[p] {
					missing = append(missing, off)
				}
			}
		}
		if len(missing) == 0 || time.Now().After(deadline) {
			break
		}
	}
	if len(missing) > 0 {
		t.Fatalf("after the commit, the pages of the headers at offsets %v are not in the page cache", missing)
	}
}
