package shardstore

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/zrpcio/zrpc/internal/testlog"
	"github.com/zrpcio/zrpc/storage/codec"
)

const blobA = "0123456789abcdef0123456789abcdef"
const blobB = "fedcba9876543210"

// testBlockSize is the block size of the test blobs: 4+2 shards of 1 KiB.
const testBlockSize = 4096

func open(t testing.TB, dir string, opts Options) *Store {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = testlog.New(t, "shardstore")
	}
	s, err := Open(dir, opts)
	if err != nil {
		t.Fatalf("Open(%s): %v", dir, err)
	}
	return s
}

// shardOf returns a consistent header and payload for id in a k+m block
// of blockLen bytes of a blob of blockSize-byte blocks, the payload's
// bytes derived from seed.
func shardOf(id ID, k, m uint8, blockLen, blockSize uint32, seed uint64) (Header, []byte) {
	r := rand.New(rand.NewPCG(seed, uint64(id.Block)<<16|uint64(id.Index)))
	payload := make([]byte, codec.ShardLen(int(blockLen), int(k)))
	for i := range payload {
		payload[i] = byte(r.Uint32())
	}
	return Header{ID: id, K: k, M: m, BlockLen: blockLen, ShardLen: uint32(len(payload)), Sum: codec.Checksum(payload), BlockSize: blockSize}, payload
}

// shard is shardOf for a 4+2 blob of testBlockSize-byte blocks.
func shard(id ID, blockLen uint32, seed uint64) (Header, []byte) {
	return shardOf(id, 4, 2, blockLen, testBlockSize, seed)
}

func put(t testing.TB, s *Store, id ID, blockLen uint32, seed uint64) (Header, []byte) {
	t.Helper()
	h, payload := shard(id, blockLen, seed)
	if err := s.Put(h, payload); err != nil {
		t.Fatalf("Put %s: %v", id, err)
	}
	return h, payload
}

func wantUsage(t testing.TB, s *Store, bytes int64, shards int) {
	t.Helper()
	if b, n := s.Usage(); b != bytes || n != shards {
		t.Fatalf("Usage = %d bytes, %d shards; want %d, %d", b, n, bytes, shards)
	}
}

// slot is the bytes of one full block's slot in a test part file.
const slot = frameHeaderSize + testBlockSize/4

// partSize is the size of a part file holding blocks 0..n-1, all full.
func partSize(n int) int64 { return PartHeaderSize + int64(n)*slot }

func TestPutGetRoundTrip(t *testing.T) {
	s := open(t, t.TempDir(), Options{})
	for _, tc := range []struct {
		id       ID
		blockLen uint32
	}{
		{ID{blobA, 0, 0}, testBlockSize},
		{ID{blobA, 7, 5}, 1000},
		{ID{blobB, 3, 3}, 1},
		{ID{blobB, 2, 3}, testBlockSize},
	} {
		h, payload := put(t, s, tc.id, tc.blockLen, 1)
		got, data, err := s.Get(tc.id, nil)
		if err != nil {
			t.Fatalf("Get %s: %v", tc.id, err)
		}
		if got != h || !bytes.Equal(data, payload) || data == nil {
			t.Fatalf("Get %s = %+v, %d bytes; want %+v, %d bytes", tc.id, got, len(data), h, len(payload))
		}
		if st, err := s.Stat(tc.id); err != nil || st != h {
			t.Fatalf("Stat %s = %+v, %v; want %+v", tc.id, st, err, h)
		}
		if err := s.Verify(tc.id); err != nil {
			t.Fatalf("Verify %s: %v", tc.id, err)
		}
	}
	// A big enough dst is used; a small one is not.
	id := ID{blobA, 7, 5}
	dst := make([]byte, 0, 1000)
	if _, data, _ := s.Get(id, dst); &data[0] != &dst[:1][0] {
		t.Error("Get did not read into a dst with room")
	}
	if _, data, _ := s.Get(id, make([]byte, 3)); len(data) != codec.ShardLen(1000, 4) {
		t.Errorf("Get with a small dst returned %d bytes", len(data))
	}
	// Missing: past the end of a part file, a hole in it, no part file.
	for _, missing := range []ID{{blobA, 99, 0}, {blobA, 3, 5}, {blobA, 0, 1}} {
		if _, _, err := s.Get(missing, nil); !errors.Is(err, ErrNotFound) {
			t.Errorf("Get of missing %s = %v, want ErrNotFound", missing, err)
		}
		if _, err := s.Stat(missing); !errors.Is(err, ErrNotFound) {
			t.Errorf("Stat of missing %s = %v, want ErrNotFound", missing, err)
		}
		if err := s.Verify(missing); !errors.Is(err, ErrNotFound) {
			t.Errorf("Verify of missing %s = %v, want ErrNotFound", missing, err)
		}
	}
}

// blobFiles lists the names in blob's directory.
func blobFiles(t testing.TB, s *Store, blob string) []string {
	t.Helper()
	entries, err := os.ReadDir(s.blobDir(blob))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// stageBlob stages blocks full blocks (the last one short) of shard
// indexes of blobA and returns the payloads by index and block.
func stageBlob(t testing.TB, s *Store, blocks int, indexes ...uint16) map[ID][]byte {
	t.Helper()
	out := make(map[ID][]byte)
	for b := range blocks {
		blockLen := uint32(testBlockSize)
		if b == blocks-1 {
			blockLen = 1001
		}
		for _, i := range indexes {
			id := ID{blobA, uint32(b), i}
			h, p := shard(id, blockLen, 1)
			if err := s.Stage(h, p); err != nil {
				t.Fatalf("Stage %s: %v", id, err)
			}
			out[id] = p
		}
	}
	return out
}

func TestAPutMakesOnePartFilePerIndex(t *testing.T) {
	s := open(t, t.TempDir(), Options{})
	shards := stageBlob(t, s, 12, 0, 4)
	if n, err := s.CommitStaged(blobA); err != nil || n != 24 {
		t.Fatalf("CommitStaged = %d, %v; want 24, nil", n, err)
	}
	if got := blobFiles(t, s, blobA); !slices.Equal(got, []string{"0.part", "4.part"}) {
		t.Fatalf("blob directory holds %q, want one part file per index", got)
	}
	for id, want := range shards {
		if _, got, err := s.Get(id, nil); err != nil || !bytes.Equal(got, want) {
			t.Fatalf("Get %s: %v", id, err)
		}
	}
	size := PartHeaderSize + 11*slot + frameHeaderSize + int64(codec.ShardLen(1001, 4))
	info, err := os.Stat(s.Path(ID{Blob: blobA, Index: 4}))
	if err != nil || info.Size() != size {
		t.Fatalf("part file: %v, %v; want %d bytes", info, err, size)
	}
	wantUsage(t, s, 2*size, 24)
	wantUsage(t, open(t, s.dir, Options{}), 2*size, 24)
}

func TestCrashMidPutLeavesNothingVisible(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, Options{})
	stageBlob(t, s, 5, 0, 1)
	if got := blobFiles(t, s, blobA); len(got) != 2 || !isTemp(got[0]) || !isTemp(got[1]) {
		t.Fatalf("blob directory during the put holds %q, want two temporary files", got)
	}
	if _, _, err := s.Get(ID{blobA, 0, 0}, nil); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get of a staged shard = %v, want ErrNotFound", err)
	}
	// The agent crashes: the next Open finds only temporary files.
	s2 := open(t, dir, Options{})
	if got := blobFiles(t, s2, blobA); len(got) != 0 {
		t.Fatalf("blob directory after reopening holds %q, want nothing", got)
	}
	if _, _, err := s2.Get(ID{blobA, 0, 0}, nil); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get after the crash = %v, want ErrNotFound", err)
	}
	wantUsage(t, s2, 0, 0)
	if n := walked(t, s2); n != 0 {
		t.Fatalf("Walk lists %d shards after the crash", n)
	}
}

// flip flips one byte of the file at path.
func flip(t testing.TB, path string, off int64) {
	t.Helper()
	rewrite(t, path, func(b []byte) []byte { b[off] ^= 0x5a; return b })
}

func TestFlippedByteMakesOnlyItsBlockCorrupt(t *testing.T) {
	s := open(t, t.TempDir(), Options{})
	shards := stageBlob(t, s, 10, 2)
	if _, err := s.CommitStaged(blobA); err != nil {
		t.Fatal(err)
	}
	bad := ID{blobA, 7, 2}
	off, err := s.PayloadOffset(bad)
	if err != nil {
		t.Fatal(err)
	}
	flip(t, s.Path(bad), off+100)
	h, data, err := s.Get(bad, nil)
	var ce *CorruptError
	if !errors.As(err, &ce) || ce.Block != 7 || !errors.Is(err, ErrCorrupt) || data != nil || h != (Header{}) {
		t.Fatalf("Get of the flipped block = %+v, %d bytes, %v; want a CorruptError for block 7", h, len(data), err)
	}
	if !strings.Contains(err.Error(), s.Path(bad)) || !strings.Contains(err.Error(), "block 7") {
		t.Errorf("error %q does not name the file and the block", err)
	}
	if err := s.Verify(bad); !errors.As(err, &ce) || ce.Block != 7 {
		t.Errorf("Verify = %v, want block 7 corrupt", err)
	}
	for id, want := range shards {
		if id == bad {
			continue
		}
		if _, got, err := s.Get(id, nil); err != nil || !bytes.Equal(got, want) {
			t.Fatalf("Get %s next to a corrupt block: %v", id, err)
		}
	}
	if got, err := s.VerifyPart(blobA, 2); err != nil || !slices.Equal(got, []uint32{7}) {
		t.Fatalf("VerifyPart = %v, %v; want block 7", got, err)
	}
}

func TestRepairRewritesOnlyTheBadBlock(t *testing.T) {
	s := open(t, t.TempDir(), Options{})
	shards := stageBlob(t, s, 10, 2)
	if _, err := s.CommitStaged(blobA); err != nil {
		t.Fatal(err)
	}
	path := s.Path(ID{Blob: blobA, Index: 2})
	good, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	before, _ := os.Stat(path)
	bad := ID{blobA, 7, 2}
	off, _ := s.PayloadOffset(bad)
	flip(t, path, off+100)
	// Other blocks get damaged behind the store's back too, after the
	// scrub: repair must not touch them, so they stay damaged.
	other, _ := s.PayloadOffset(ID{blobA, 3, 2})
	flip(t, path, other+5)
	damaged, _ := os.ReadFile(path)

	// Repair stages the rebuilt shard and commits it.
	h, p := shard(bad, testBlockSize, 1)
	if !bytes.Equal(p, shards[bad]) {
		t.Fatal("test shard differs from the stored one")
	}
	if err := s.Stage(h, p); err != nil {
		t.Fatal(err)
	}
	if n, err := s.CommitStaged(blobA); err != nil || n != 1 {
		t.Fatalf("CommitStaged = %d, %v; want 1", n, err)
	}
	after, _ := os.Stat(path)
	if !os.SameFile(before, after) {
		t.Fatal("repair of one block replaced the whole part file")
	}
	got, _ := os.ReadFile(path)
	slotStart, slotEnd := off-frameHeaderSize, off+int64(len(p))
	for i := range got {
		want := damaged[i]
		if int64(i) >= slotStart && int64(i) < slotEnd {
			want = good[i]
		}
		if got[i] != want {
			t.Fatalf("byte %d after repair = %#x, want %#x (block 7 spans %d-%d)", i, got[i], want, slotStart, slotEnd)
		}
	}
	if bad, err := s.VerifyPart(blobA, 2); err != nil || !slices.Equal(bad, []uint32{3}) {
		t.Fatalf("VerifyPart after repair = %v, %v; want only block 3 (damaged after)", bad, err)
	}
	wantUsage(t, s, int64(len(good)), 10)
}

func TestTruncatedPartFile(t *testing.T) {
	s := open(t, t.TempDir(), Options{})
	shards := stageBlob(t, s, 6, 1)
	if _, err := s.CommitStaged(blobA); err != nil {
		t.Fatal(err)
	}
	path := s.Path(ID{Blob: blobA, Index: 1})
	cut := partSize(3) + slot/2 // in the middle of block 3
	if err := os.Truncate(path, cut); err != nil {
		t.Fatal(err)
	}
	var ce *CorruptError
	if _, _, err := s.Get(ID{blobA, 3, 1}, nil); !errors.As(err, &ce) || ce.Block != 3 {
		t.Fatalf("Get of the cut block = %v, want block 3 corrupt", err)
	}
	for _, b := range []uint32{4, 5} {
		if _, _, err := s.Get(ID{blobA, b, 1}, nil); !errors.Is(err, ErrNotFound) {
			t.Fatalf("Get of block %d past the cut = %v, want ErrNotFound", b, err)
		}
	}
	for b := range uint32(3) {
		id := ID{blobA, b, 1}
		if _, got, err := s.Get(id, nil); err != nil || !bytes.Equal(got, shards[id]) {
			t.Fatalf("Get %s before the cut: %v", id, err)
		}
	}
}

func rewrite(t testing.TB, path string, edit func([]byte) []byte) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, edit(b), 0o600); err != nil {
		t.Fatal(err)
	}
}

// corrupt applies damage to the part file of id and checks that every
// read reports ErrCorrupt naming the file and returns no data.
func corrupt(t *testing.T, s *Store, id ID, damage func(path string)) {
	t.Helper()
	damage(s.Path(id))
	h, data, err := s.Get(id, nil)
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), s.Path(id)) {
		t.Fatalf("Get = %v, want ErrCorrupt naming %s", err, s.Path(id))
	}
	if data != nil || h != (Header{}) {
		t.Fatalf("Get of a corrupt shard returned %d bytes and %+v", len(data), h)
	}
	if err := s.Verify(id); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Verify = %v, want ErrCorrupt", err)
	}
}

func TestCorruptShardsAreNeverReturned(t *testing.T) {
	s := open(t, t.TempDir(), Options{})
	id := ID{blobA, 1, 1}
	for _, tc := range []struct {
		name string
		edit func([]byte) []byte
	}{
		{"truncated payload", func(b []byte) []byte { return b[:len(b)-1] }},
		{"truncated header", func(b []byte) []byte { return b[:PartHeaderSize-1] }},
		{"empty file", func(b []byte) []byte { return nil }},
		{"trailing byte after a short block", func(b []byte) []byte { return append(b, 0) }},
		{"flipped payload bit", func(b []byte) []byte { b[partSize(1)+frameHeaderSize+17] ^= 0x10; return b }},
		{"flipped last payload bit", func(b []byte) []byte { b[len(b)-1] ^= 0x80; return b }},
		{"flipped frame checksum", func(b []byte) []byte { b[partSize(1)+5] ^= 0x01; return b }},
		{"block length over the block size", func(b []byte) []byte { b[partSize(1)+2] = 0xff; return b }},
		{"wrong magic", func(b []byte) []byte { copy(b, "ZPRU"); return b }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			put(t, s, id, 3000, 1)
			corrupt(t, s, id, func(path string) { rewrite(t, path, tc.edit) })
			if err := os.Remove(s.Path(id)); err != nil {
				t.Fatal(err)
			}
		})
	}
	// Every single bit of the part header matters.
	put(t, s, id, 3000, 1)
	good, err := os.ReadFile(s.Path(id))
	if err != nil {
		t.Fatal(err)
	}
	for i := range PartHeaderSize * 8 {
		corrupt(t, s, id, func(path string) {
			rewrite(t, path, func([]byte) []byte {
				b := bytes.Clone(good)
				b[i/8] ^= 1 << (i % 8)
				return b
			})
		})
	}
}

func TestPartFileOfAnotherBlobOrIndexIsRefused(t *testing.T) {
	s := open(t, t.TempDir(), Options{})
	for _, to := range []ID{{blobA, 1, 2}, {blobB, 1, 1}} {
		from := ID{blobA, 1, 1}
		put(t, s, from, testBlockSize, 1)
		if err := os.MkdirAll(filepath.Dir(s.Path(to)), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(s.Path(from), s.Path(to)); err != nil {
			t.Fatal(err)
		}
		corrupt(t, s, to, func(string) {})
		if _, err := s.Stat(to); !errors.Is(err, ErrCorrupt) {
			t.Errorf("Stat of %s holding %s = %v, want ErrCorrupt", to, from, err)
		}
		if !strings.Contains(fmt.Sprint(s.Verify(to)), "file holds shard 1 of blob "+blobA) {
			t.Errorf("Verify of %s does not say what the file holds: %v", to, s.Verify(to))
		}
		os.Remove(s.Path(to))
	}
}

func TestOpenRemovesTemporaryFilesAndCountsBadParts(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, Options{})
	put(t, s, ID{blobA, 0, 0}, testBlockSize, 1)
	bad := ID{blobA, 0, 1}
	put(t, s, bad, testBlockSize, 1)
	rewrite(t, s.Path(bad), func(b []byte) []byte { b[5] = 9; return b }) // K

	blobDir := filepath.Dir(s.Path(bad))
	tmp := filepath.Join(blobDir, ".2.part.12345.tmp")
	if err := os.WriteFile(tmp, []byte("half a part"), 0o600); err != nil {
		t.Fatal(err)
	}
	stranger := filepath.Join(blobDir, "README")
	if err := os.WriteFile(stranger, []byte("not ours"), 0o600); err != nil {
		t.Fatal(err)
	}

	s2 := open(t, dir, Options{})
	if _, err := os.Stat(tmp); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("temporary file still there after Open: %v", err)
	}
	if _, err := os.Stat(stranger); err != nil {
		t.Errorf("Open removed a file it does not own: %v", err)
	}
	wantUsage(t, s2, 2*partSize(1), 1)
	if s2.BadAtOpen() != 1 {
		t.Errorf("BadAtOpen = %d, want 1", s2.BadAtOpen())
	}
	if _, _, err := s2.Get(bad, nil); !errors.Is(err, ErrCorrupt) {
		t.Errorf("Get of the bad shard = %v, want ErrCorrupt", err)
	}
	// Repair rewrites it: the bad part file is replaced.
	put(t, s2, bad, testBlockSize, 1)
	if err := s2.Verify(bad); err != nil {
		t.Errorf("Verify after rewrite: %v", err)
	}
	wantUsage(t, s2, 2*partSize(1), 2)
}

func TestMaxBytes(t *testing.T) {
	s := open(t, t.TempDir(), Options{MaxBytes: 2*partSize(1) + 10})
	put(t, s, ID{blobA, 0, 0}, testBlockSize, 1)
	put(t, s, ID{blobA, 0, 1}, testBlockSize, 1)
	full := ID{blobA, 0, 2}
	h, payload := shard(full, testBlockSize, 1)
	if err := s.Put(h, payload); !errors.Is(err, ErrNoSpace) {
		t.Fatalf("Put past MaxBytes = %v, want ErrNoSpace", err)
	}
	if err := s.Stage(h, payload); !errors.Is(err, ErrNoSpace) {
		t.Fatalf("Stage past MaxBytes = %v, want ErrNoSpace", err)
	}
	wantUsage(t, s, 2*partSize(1), 2)
	if _, _, err := s.Get(full, nil); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get of the refused shard = %v, want ErrNotFound", err)
	}
	if got := blobFiles(t, s, blobA); len(got) != 2 {
		t.Errorf("blob directory holds %q after a refused Put, want 2 part files", got)
	}
	if _, err := s.DeleteBlob(blobA); err != nil {
		t.Fatal(err)
	}
	if err := s.Put(h, payload); err != nil {
		t.Errorf("Put after freeing space: %v", err)
	}
	wantUsage(t, s, partSize(1), 1)
}

func TestInvalidIDs(t *testing.T) {
	s := open(t, t.TempDir(), Options{})
	for _, blob := range []string{
		"", "../x", "../../../../etc", "0123456789ABCDEF", "0123456789abcde",
		strings.Repeat("a", 65), "0123456789abcdeg", "01234567/9abcdef", "0123456789abcde\x00",
	} {
		id := ID{Blob: blob}
		h, payload := shardOf(id, 1, 0, 10, 10, 1)
		errs := map[string]error{"Put": s.Put(h, payload), "Stage": s.Stage(h, payload), "Verify": s.Verify(id), "Delete": s.Delete(id)}
		_, _, errs["Get"] = s.Get(id, nil)
		_, errs["Stat"] = s.Stat(id)
		_, errs["DeleteBlob"] = s.DeleteBlob(blob)
		_, errs["CommitStaged"] = s.CommitStaged(blob)
		_, errs["VerifyPart"] = s.VerifyPart(blob, 0)
		_, errs["PayloadOffset"] = s.PayloadOffset(id)
		for op, err := range errs {
			if !errors.Is(err, ErrInvalidID) {
				t.Errorf("%s(%q) = %v, want ErrInvalidID", op, blob, err)
			}
		}
		if p := s.Path(id); p != "" {
			t.Errorf("Path(%q) = %q, want empty", blob, p)
		}
	}
	if p := s.Path(ID{Blob: strings.Repeat("f", 64)}); p == "" {
		t.Error("Path of a 64-digit blob id is empty")
	}
}

func TestPutRejectsInconsistentHeaders(t *testing.T) {
	s := open(t, t.TempDir(), Options{})
	id := ID{blobA, 1, 1}
	for _, tc := range []struct {
		name string
		edit func(*Header, *[]byte)
		is   error
	}{
		{"checksum", func(h *Header, _ *[]byte) { h.Sum++ }, ErrCorrupt},
		{"payload shorter than header", func(_ *Header, p *[]byte) { *p = (*p)[1:] }, ErrInvalidHeader},
		{"k = 0", func(h *Header, _ *[]byte) { h.K = 0 }, ErrInvalidHeader},
		{"index outside the scheme", func(h *Header, _ *[]byte) { h.ID.Index = 6 }, ErrInvalidHeader},
		{"k+m over 256", func(h *Header, _ *[]byte) { h.K, h.M = 200, 57 }, ErrInvalidHeader},
		{"shard length against block length", func(h *Header, _ *[]byte) { h.BlockLen += 4 }, ErrInvalidHeader},
		{"no block size", func(h *Header, _ *[]byte) { h.BlockSize = 0 }, ErrInvalidHeader},
		{"block larger than the block size", func(h *Header, _ *[]byte) { h.BlockSize = h.BlockLen - 1 }, ErrInvalidHeader},
	} {
		h, payload := shard(id, 4000, 1)
		tc.edit(&h, &payload)
		if err := s.Put(h, payload); !errors.Is(err, tc.is) {
			t.Errorf("%s: Put = %v, want %v", tc.name, err, tc.is)
		}
		if err := s.Stage(h, payload); !errors.Is(err, tc.is) {
			t.Errorf("%s: Stage = %v, want %v", tc.name, err, tc.is)
		}
	}
	h, payload := shardOf(ID{blobA, 0, 1}, 1, 0, 0, 10, 1)
	if err := s.Put(h, payload); !errors.Is(err, ErrInvalidHeader) {
		t.Errorf("Put of an empty block = %v, want ErrInvalidHeader", err)
	}
	wantUsage(t, s, 0, 0)
	// A staged part has one scheme and block size.
	stage(t, s, ID{blobA, 0, 1}, testBlockSize, 1)
	for _, h := range []Header{
		func() Header { h, _ := shardOf(ID{blobA, 1, 1}, 4, 2, testBlockSize, 2*testBlockSize, 1); return h }(),
		func() Header { h, _ := shardOf(ID{blobA, 1, 1}, 4, 3, testBlockSize, testBlockSize, 1); return h }(),
	} {
		_, p := shardOf(h.ID, h.K, h.M, h.BlockLen, h.BlockSize, 1)
		if err := s.Stage(h, p); !errors.Is(err, ErrInvalidHeader) {
			t.Errorf("Stage of a shard unlike its part (%d+%d, block size %d) = %v, want ErrInvalidHeader", h.K, h.M, h.BlockSize, err)
		}
	}
}

func TestDeleteBlob(t *testing.T) {
	s := open(t, t.TempDir(), Options{})
	for block := range uint32(3) {
		for index := range uint16(2) {
			put(t, s, ID{blobA, block, index}, testBlockSize, 1)
		}
	}
	put(t, s, ID{blobB, 0, 0}, testBlockSize, 1)
	n, err := s.DeleteBlob(blobA)
	if err != nil || n != 6 {
		t.Fatalf("DeleteBlob = %d, %v; want 6, nil", n, err)
	}
	if _, err := os.Stat(filepath.Dir(s.Path(ID{Blob: blobA}))); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("blob directory left after DeleteBlob: %v", err)
	}
	wantUsage(t, s, partSize(1), 1)
	if n, err := s.DeleteBlob(blobA); n != 0 || err != nil {
		t.Errorf("DeleteBlob of a gone blob = %d, %v", n, err)
	}
	// Delete of a blob's last shard drops its part file and directory.
	if err := s.Delete(ID{blobB, 0, 0}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Dir(s.Path(ID{Blob: blobB}))); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("blob directory left after deleting its last shard: %v", err)
	}
	wantUsage(t, s, 0, 0)
}

func TestDeleteLeavesAHole(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, Options{})
	for block := range uint32(3) {
		put(t, s, ID{blobA, block, 0}, testBlockSize, 1)
	}
	if err := s.Delete(ID{blobA, 1, 0}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Get(ID{blobA, 1, 0}, nil); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get of a deleted shard = %v, want ErrNotFound", err)
	}
	for _, b := range []uint32{0, 2} {
		if _, _, err := s.Get(ID{blobA, b, 0}, nil); err != nil {
			t.Fatalf("Get of block %d next to a deleted one: %v", b, err)
		}
	}
	wantUsage(t, s, partSize(3), 2)
	wantUsage(t, open(t, dir, Options{}), partSize(3), 2)
}

func walked(t testing.TB, s *Store) int {
	t.Helper()
	n := 0
	if err := s.Walk(func(ID, int64, time.Time) error { n++; return nil }); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestWalkListsExactlyTheStoredShards(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, Options{})
	var want []ID
	for _, blob := range []string{blobB, blobA, "ab00000000000000"} {
		for _, block := range []uint32{10, 2, 1} {
			for _, index := range []uint16{1, 0} {
				id := ID{blob, block, index}
				put(t, s, id, testBlockSize, 1)
				want = append(want, id)
			}
		}
	}
	if err := s.Delete(ID{blobA, 2, 1}); err != nil {
		t.Fatal(err)
	}
	want = slices.DeleteFunc(want, func(id ID) bool { return id == ID{blobA, 2, 1} })
	slices.SortFunc(want, func(a, b ID) int {
		return strings.Compare(fmt.Sprintf("%s %05d %010d", a.Blob, a.Index, a.Block), fmt.Sprintf("%s %05d %010d", b.Blob, b.Index, b.Block))
	})
	// Not shards: a temporary file, a stranger.
	os.WriteFile(filepath.Join(filepath.Dir(s.Path(ID{Blob: blobA})), ".1.part.9.tmp"), nil, 0o600)
	os.WriteFile(filepath.Join(dir, "notes.txt"), nil, 0o600)

	var got []ID
	err := s.Walk(func(id ID, size int64, mod time.Time) error {
		if size != slot || mod.IsZero() {
			t.Errorf("Walk %s: size %d, mod %v", id, size, mod)
		}
		got = append(got, id)
		return nil
	})
	if err != nil || !slices.Equal(got, want) {
		t.Fatalf("Walk = %v, %v\nwant %v", got, err, want)
	}
	stop := errors.New("stop")
	calls := 0
	if err := s.Walk(func(ID, int64, time.Time) error { calls++; return stop }); err != stop || calls != 1 {
		t.Errorf("Walk returning an error = %v after %d calls, want stop after 1", err, calls)
	}
}

func TestConcurrentUse(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, Options{})
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(g), 1))
			for range 60 {
				blob := []string{blobA, blobB}[r.IntN(2)]
				id := ID{blob, uint32(r.IntN(4)), uint16(r.IntN(6))}
				switch r.IntN(6) {
				case 0, 1:
					// A DeleteBlob of the blob while a Put or a commit
					// fsyncs fails it: ErrNotFound.
					h, p := shard(id, testBlockSize, uint64(r.IntN(3)))
					if err := s.Put(h, p); err != nil && !errors.Is(err, ErrNotFound) {
						t.Errorf("Put %s: %v", id, err)
					}
				case 2:
					h, p := shard(id, testBlockSize, uint64(r.IntN(3)))
					if err := s.Stage(h, p); err != nil && !errors.Is(err, ErrNotFound) {
						t.Errorf("Stage %s: %v", id, err)
					}
					if r.IntN(2) == 0 {
						if _, err := s.CommitStaged(blob); err != nil && !errors.Is(err, ErrNotFound) {
							t.Errorf("CommitStaged %s: %v", blob, err)
						}
					}
				case 3:
					if _, _, err := s.Get(id, nil); err != nil && !errors.Is(err, ErrNotFound) {
						t.Errorf("Get %s: %v", id, err)
					}
				case 4:
					if err := s.Delete(id); err != nil {
						t.Errorf("Delete %s: %v", id, err)
					}
				case 5:
					if r.IntN(10) == 0 {
						if _, err := s.DeleteBlob(blob); err != nil {
							t.Errorf("DeleteBlob %s: %v", blob, err)
						}
					}
				}
			}
		})
	}
	wg.Wait()
	for _, blob := range []string{blobA, blobB} {
		if _, err := s.CommitStaged(blob); err != nil {
			t.Fatal(err)
		}
	}
	bytes, shards := s.Usage()
	n := 0
	s.Walk(func(id ID, size int64, _ time.Time) error {
		if err := s.Verify(id); err != nil {
			t.Errorf("Verify %s: %v", id, err)
		}
		n++
		return nil
	})
	var files int64
	filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			info, _ := d.Info()
			files += info.Size()
		}
		return nil
	})
	if files != bytes || n != shards {
		t.Errorf("Usage = %d bytes, %d shards; the directory holds %d, %d", bytes, shards, files, n)
	}
	wantUsage(t, open(t, dir, Options{}), bytes, shards)
}

func TestOpenRejectsBadOptions(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		dir  string
		opts Options
	}{
		{"", Options{}},
		{t.TempDir(), Options{MaxBytes: -1}},
		{file, Options{}},
		{filepath.Join(file, "sub"), Options{}},
	} {
		if _, err := Open(tc.dir, tc.opts); err == nil {
			t.Errorf("Open(%q, %+v) succeeded", tc.dir, tc.opts)
		}
	}
}

func TestFileNames(t *testing.T) {
	for _, tc := range []struct {
		name  string
		index uint16
		ok    bool
	}{
		{"0.part", 0, true},
		{"65535.part", 1<<16 - 1, true},
		{"12.part", 12, true},
		{"012.part", 0, false},
		{"+12.part", 0, false},
		{"65536.part", 0, false},
		{".part", 0, false},
		{"1.2.part", 0, false},
		{"12.part.tmp", 0, false},
		{".12.part.55.tmp", 0, false},
	} {
		index, ok := parsePartName(tc.name)
		if ok != tc.ok || index != tc.index {
			t.Errorf("parsePartName(%q) = %d, %v; want %d, %v", tc.name, index, ok, tc.index, tc.ok)
		}
		if tc.ok && partName(index) != tc.name {
			t.Errorf("partName(%d) = %q, want %q", index, partName(index), tc.name)
		}
	}
	for _, tc := range []struct {
		name  string
		block uint32
		index uint16
		ok    bool
	}{
		{"0.0.shard", 0, 0, true},
		{"4294967295.65535.shard", 1<<32 - 1, 1<<16 - 1, true},
		{"012.3.shard", 0, 0, false},
		{"12.shard", 0, 0, false},
		{".12.3.shard.55.tmp", 0, 0, false},
	} {
		block, index, ok := parseFileName(tc.name)
		if ok != tc.ok || block != tc.block || index != tc.index {
			t.Errorf("parseFileName(%q) = %d, %d, %v; want %d, %d, %v", tc.name, block, index, ok, tc.block, tc.index, tc.ok)
		}
	}
}

// Get reads into the caller's buffer: reading shard after shard allocates
// only what opening the part file takes, never a payload.
func TestGetIntoACallersBufferAllocatesNoPayload(t *testing.T) {
	s := open(t, t.TempDir(), Options{})
	const shardLen = 256 << 10
	h, payload := shardOf(ID{blobA, 0, 0}, 4, 2, 4*shardLen, 4*shardLen, 1)
	if err := s.Put(h, payload); err != nil {
		t.Fatal(err)
	}
	dst := make([]byte, shardLen)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	const reads = 20
	for range reads {
		_, got, err := s.Get(h.ID, dst)
		if err != nil || &got[0] != &dst[0] {
			t.Fatalf("Get into a buffer with room: %v, or not into the buffer", err)
		}
	}
	runtime.ReadMemStats(&after)
	if per := (after.TotalAlloc - before.TotalAlloc) / reads; per > shardLen/16 {
		t.Errorf("Get into a buffer with room allocated %d bytes per read of a %d-byte shard", per, shardLen)
	}
}
