package shardstore

import (
	"bytes"
	"os"
	"testing"
)

// A staged part written through the page cache (on a file system without
// O_DIRECT) starts its writeback every writebackBytes it takes, so that
// the commit's fsync finds little left to write, and the part still reads
// back whole once committed.
func TestStagingAPartStartsItsWritebackAsItGrows(t *testing.T) {
	refuseDirect(t)
	var starts int
	orig := startWriteback
	startWriteback = func(f *os.File) { starts++; orig(f) }
	t.Cleanup(func() { startWriteback = orig })

	s := open(t, t.TempDir(), Options{})
	var staged int64
	var payloads [][]byte
	for b := uint32(0); staged < 3*writebackBytes; b++ {
		_, p := stage(t, s, ID{blobA, b, 0}, testBlockSize, uint64(b))
		payloads = append(payloads, p)
		staged += frameHeaderSize + int64(len(p))
	}
	if want := int(staged / writebackBytes); starts != want {
		t.Fatalf("staging %d bytes started the writeback %d times, want %d", staged, starts, want)
	}
	if _, err := s.CommitStaged(blobA); err != nil {
		t.Fatal(err)
	}
	for b, want := range payloads {
		if _, got, err := s.Get(ID{blobA, uint32(b), 0}, nil); err != nil || !bytes.Equal(got, want) {
			t.Fatalf("block %d after commit: %v", b, err)
		}
	}
}
