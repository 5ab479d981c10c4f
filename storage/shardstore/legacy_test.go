package shardstore

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// writeLegacy writes shard h as the older layout did: one file per shard
// per block, a 96-byte header and the payload.
func writeLegacy(t testing.TB, dir string, h Header, payload []byte) string {
	t.Helper()
	bdir := filepath.Join(dir, h.ID.Blob[:2], h.ID.Blob)
	if err := os.MkdirAll(bdir, 0o700); err != nil {
		t.Fatal(err)
	}
	var hdr [HeaderSize]byte
	h.marshal(hdr[:])
	path := filepath.Join(bdir, fileName(h.ID.Block, h.ID.Index))
	if err := os.WriteFile(path, append(hdr[:], payload...), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestOpenConvertsShardFilesOfTheOlderLayout(t *testing.T) {
	dir := t.TempDir()
	want := make(map[ID][]byte)
	var legacy []string
	for b := range uint32(5) {
		blockLen := uint32(testBlockSize)
		if b == 4 {
			blockLen = 777
		}
		for _, i := range []uint16{0, 3} {
			h, p := shard(ID{blobA, b, i}, blockLen, 1)
			legacy = append(legacy, writeLegacy(t, dir, h, p))
			want[h.ID] = p
		}
	}
	h, p := shard(ID{blobB, 2, 1}, 1000, 1)
	legacy = append(legacy, writeLegacy(t, dir, h, p))
	want[h.ID] = p
	// A rotten one is not converted: it reads as missing, for repair.
	rh, rp := shard(ID{blobA, 1, 5}, testBlockSize, 1)
	rp[3] ^= 1
	legacy = append(legacy, writeLegacy(t, dir, rh, rp))

	s := open(t, dir, Options{})
	for _, path := range legacy {
		if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("shard file %s of the older layout left after Open: %v", path, err)
		}
	}
	if got := blobFiles(t, s, blobA); !slices.Equal(got, []string{"0.part", "3.part"}) {
		t.Fatalf("blob A's directory holds %q after conversion, want one part file per index", got)
	}
	for id, p := range want {
		got, data, err := s.Get(id, nil)
		if err != nil || !bytes.Equal(data, p) || got.BlockLen != uint32(codecBlockLen(id)) {
			t.Fatalf("Get %s after conversion = %+v, %v", id, got, err)
		}
	}
	if _, _, err := s.Get(rh.ID, nil); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get of the rotten shard after conversion = %v, want ErrNotFound", err)
	}
	if _, n := s.Usage(); n != len(want) {
		t.Fatalf("Usage counts %d shards, want %d", n, len(want))
	}
	// Reopening finds the part files as they are.
	s2 := open(t, dir, Options{})
	b1, n1 := s.Usage()
	wantUsage(t, s2, b1, n1)
}

// codecBlockLen is the block length the conversion test gave id.
func codecBlockLen(id ID) int {
	switch {
	case id.Blob == blobB:
		return 1000
	case id.Block == 4:
		return 777
	}
	return testBlockSize
}

func TestConversionCutShortByACrashIsFinishedAtOpen(t *testing.T) {
	dir := t.TempDir()
	var shards []Header
	var payloads [][]byte
	for b := range uint32(4) {
		h, p := shard(ID{blobA, b, 2}, testBlockSize, 1)
		writeLegacy(t, dir, h, p)
		shards, payloads = append(shards, h), append(payloads, p)
	}
	// A first conversion wrote the part file with two of the blocks, then
	// the agent crashed before removing the older files.
	s := open(t, t.TempDir(), Options{})
	for _, h := range shards[:2] {
		h.BlockSize = testBlockSize
		if err := s.Put(h, payloads[h.ID.Block]); err != nil {
			t.Fatal(err)
		}
	}
	part, err := os.ReadFile(s.Path(shards[0].ID))
	if err != nil {
		t.Fatal(err)
	}
	partPath := filepath.Join(dir, blobA[:2], blobA, partName(2))
	if err := os.WriteFile(partPath, part, 0o600); err != nil {
		t.Fatal(err)
	}
	s2 := open(t, dir, Options{})
	for i, h := range shards {
		if _, got, err := s2.Get(h.ID, nil); err != nil || !bytes.Equal(got, payloads[i]) {
			t.Fatalf("Get %s after the conversion was finished: %v", h.ID, err)
		}
	}
	if got := blobFiles(t, s2, blobA); !slices.Equal(got, []string{"2.part"}) {
		t.Fatalf("blob directory holds %q, want the one part file", got)
	}
	wantUsage(t, s2, partSize(4), 4)
}
