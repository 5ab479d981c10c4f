package shardstore

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
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

// shard returns a consistent header and payload for id in a k+m block of
// blockLen bytes, the payload's bytes derived from seed.
func shard(id ID, k, m uint8, blockLen uint32, seed uint64) (Header, []byte) {
	r := rand.New(rand.NewPCG(seed, uint64(id.Block)<<16|uint64(id.Index)))
	payload := make([]byte, codec.ShardLen(int(blockLen), int(k)))
	for i := range payload {
		payload[i] = byte(r.Uint32())
	}
	return Header{ID: id, K: k, M: m, BlockLen: blockLen, ShardLen: uint32(len(payload)), Sum: codec.Checksum(payload)}, payload
}

func put(t testing.TB, s *Store, id ID, blockLen uint32, seed uint64) (Header, []byte) {
	t.Helper()
	h, payload := shard(id, 4, 2, blockLen, seed)
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

func TestPutGetRoundTrip(t *testing.T) {
	s := open(t, t.TempDir(), Options{})
	for _, tc := range []struct {
		id       ID
		blockLen uint32
	}{
		{ID{blobA, 0, 0}, 1 << 20},
		{ID{blobA, 7, 5}, 1000},
		{ID{blobB, 1<<32 - 1, 3}, 1},
		{ID{blobB, 2, 0}, 0},
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
	if _, _, err := s.Get(ID{blobA, 99, 0}, nil); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get of a missing shard = %v, want ErrNotFound", err)
	}
	for _, fn := range []func(ID) error{
		func(id ID) error { _, err := s.Stat(id); return err },
		s.Verify,
	} {
		if err := fn(ID{blobA, 99, 0}); !errors.Is(err, ErrNotFound) {
			t.Errorf("missing shard = %v, want ErrNotFound", err)
		}
	}
}

func TestOverwriteAndUsage(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, Options{})
	id := ID{blobA, 1, 2}
	put(t, s, id, 4000, 1)
	wantUsage(t, s, HeaderSize+1000, 1)
	put(t, s, ID{blobA, 1, 3}, 4000, 1)
	wantUsage(t, s, 2*(HeaderSize+1000), 2)

	// Repair rewrites a shard, here with another length.
	h, payload := put(t, s, id, 400, 2)
	wantUsage(t, s, 2*HeaderSize+1000+100, 2)
	if got, data, err := s.Get(id, nil); err != nil || got != h || !bytes.Equal(data, payload) {
		t.Fatalf("Get after overwrite = %+v, %v; want the new shard", got, err)
	}

	// Reopening counts the same.
	s2 := open(t, dir, Options{})
	wantUsage(t, s2, 2*HeaderSize+1000+100, 2)

	if err := s.Delete(id); err != nil {
		t.Fatal(err)
	}
	wantUsage(t, s, HeaderSize+1000, 1)
	if err := s.Delete(id); err != nil {
		t.Errorf("Delete of a missing shard: %v", err)
	}
	wantUsage(t, s, HeaderSize+1000, 1)
	if _, _, err := s.Get(id, nil); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get after Delete = %v, want ErrNotFound", err)
	}
	wantUsage(t, open(t, dir, Options{}), HeaderSize+1000, 1)
}

// corrupt applies damage to the file of id and checks that every read
// reports ErrCorrupt naming the file and returns no data.
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

func rewrite(t *testing.T, path string, edit func([]byte) []byte) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, edit(b), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestCorruptShardsAreNeverReturned(t *testing.T) {
	s := open(t, t.TempDir(), Options{})
	id := ID{blobA, 3, 1}
	for _, tc := range []struct {
		name string
		edit func([]byte) []byte
	}{
		{"truncated payload", func(b []byte) []byte { return b[:len(b)-1] }},
		{"truncated header", func(b []byte) []byte { return b[:HeaderSize-1] }},
		{"empty file", func(b []byte) []byte { return nil }},
		{"trailing byte", func(b []byte) []byte { return append(b, 0) }},
		{"flipped payload bit", func(b []byte) []byte { b[HeaderSize+17] ^= 0x10; return b }},
		{"flipped last payload bit", func(b []byte) []byte { b[len(b)-1] ^= 0x80; return b }},
		{"wrong magic", func(b []byte) []byte { copy(b, "ZSHE"); return b }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			put(t, s, id, 5000, 1)
			corrupt(t, s, id, func(path string) { rewrite(t, path, tc.edit) })
		})
	}
	// Every single bit of the header matters.
	put(t, s, id, 5000, 1)
	good, err := os.ReadFile(s.Path(id))
	if err != nil {
		t.Fatal(err)
	}
	for i := range HeaderSize * 8 {
		corrupt(t, s, id, func(path string) {
			rewrite(t, path, func([]byte) []byte {
				b := bytes.Clone(good)
				b[i/8] ^= 1 << (i % 8)
				return b
			})
		})
	}
}

func TestShardMovedToAnotherPathIsCorrupt(t *testing.T) {
	s := open(t, t.TempDir(), Options{})
	for _, to := range []ID{{blobA, 1, 2}, {blobA, 2, 1}, {blobB, 1, 1}} {
		from := ID{blobA, 1, 1}
		put(t, s, from, 5000, 1)
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
	}
}

func TestOpenRemovesTemporaryFilesAndCountsBadShards(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, Options{})
	put(t, s, ID{blobA, 0, 0}, 4000, 1)
	bad := ID{blobA, 0, 1}
	put(t, s, bad, 4000, 1)
	rewrite(t, s.Path(bad), func(b []byte) []byte { b[5] = 9; return b }) // K

	// A crash mid-Put leaves a temporary file beside the shards.
	blobDir := filepath.Dir(s.Path(bad))
	tmp := filepath.Join(blobDir, ".0.2.shard.12345.tmp")
	if err := os.WriteFile(tmp, []byte("half a shard"), 0o600); err != nil {
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
	wantUsage(t, s2, 2*(HeaderSize+1000), 2)
	if s2.BadAtOpen() != 1 {
		t.Errorf("BadAtOpen = %d, want 1", s2.BadAtOpen())
	}
	if _, _, err := s2.Get(bad, nil); !errors.Is(err, ErrCorrupt) {
		t.Errorf("Get of the bad shard = %v, want ErrCorrupt", err)
	}
	// Repair overwrites it.
	put(t, s2, bad, 4000, 1)
	if err := s2.Verify(bad); err != nil {
		t.Errorf("Verify after rewrite: %v", err)
	}
}

func TestMaxBytes(t *testing.T) {
	dir := t.TempDir()
	one := int64(HeaderSize + 1000)
	s := open(t, dir, Options{MaxBytes: 2*one + 10})
	put(t, s, ID{blobA, 0, 0}, 4000, 1)
	put(t, s, ID{blobA, 0, 1}, 4000, 1)
	full := ID{blobA, 0, 2}
	h, payload := shard(full, 4, 2, 4000, 1)
	if err := s.Put(h, payload); !errors.Is(err, ErrNoSpace) {
		t.Fatalf("Put past MaxBytes = %v, want ErrNoSpace", err)
	}
	wantUsage(t, s, 2*one, 2)
	if _, _, err := s.Get(full, nil); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get of the refused shard = %v, want ErrNotFound", err)
	}
	entries, _ := os.ReadDir(filepath.Dir(s.Path(full)))
	if len(entries) != 2 {
		t.Errorf("blob directory holds %d entries after a refused Put, want 2", len(entries))
	}
	// An overwrite that grows by what is left fits, one byte more does not
	// and leaves the old shard in place; shrinking always fits.
	grown, _ := put(t, s, ID{blobA, 0, 0}, 4040, 1) // +10 bytes
	wantUsage(t, s, 2*one+10, 2)
	h2, p2 := shard(ID{blobA, 0, 0}, 4, 2, 4044, 1)
	if err := s.Put(h2, p2); !errors.Is(err, ErrNoSpace) {
		t.Fatalf("overwrite past MaxBytes = %v, want ErrNoSpace", err)
	}
	if got, err := s.Stat(ID{blobA, 0, 0}); err != nil || got != grown {
		t.Fatalf("Stat after a refused overwrite = %+v, %v; want %+v", got, err, grown)
	}
	put(t, s, ID{blobA, 0, 0}, 40, 1)
	put(t, s, ID{blobA, 0, 1}, 40, 1)
	if err := s.Put(h, payload); err != nil {
		t.Errorf("Put after freeing space: %v", err)
	}
	wantUsage(t, s, 2*(HeaderSize+10)+one, 3)
}

func TestInvalidIDs(t *testing.T) {
	s := open(t, t.TempDir(), Options{})
	for _, blob := range []string{
		"", "../x", "../../../../etc", "0123456789ABCDEF", "0123456789abcde",
		strings.Repeat("a", 65), "0123456789abcdeg", "01234567/9abcdef", "0123456789abcde\x00",
	} {
		id := ID{Blob: blob}
		h, payload := shard(id, 1, 0, 10, 1)
		errs := map[string]error{"Put": s.Put(h, payload), "Verify": s.Verify(id), "Delete": s.Delete(id)}
		_, _, errs["Get"] = s.Get(id, nil)
		_, errs["Stat"] = s.Stat(id)
		_, errs["DeleteBlob"] = s.DeleteBlob(blob)
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
	id := ID{blobA, 0, 1}
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
	} {
		h, payload := shard(id, 4, 2, 4000, 1)
		tc.edit(&h, &payload)
		if err := s.Put(h, payload); !errors.Is(err, tc.is) {
			t.Errorf("%s: Put = %v, want %v", tc.name, err, tc.is)
		}
	}
	wantUsage(t, s, 0, 0)
}

func TestDeleteBlob(t *testing.T) {
	s := open(t, t.TempDir(), Options{})
	for block := range uint32(3) {
		for index := range uint16(2) {
			put(t, s, ID{blobA, block, index}, 400, 1)
		}
	}
	put(t, s, ID{blobB, 0, 0}, 400, 1)
	n, err := s.DeleteBlob(blobA)
	if err != nil || n != 6 {
		t.Fatalf("DeleteBlob = %d, %v; want 6, nil", n, err)
	}
	if _, err := os.Stat(filepath.Dir(s.Path(ID{Blob: blobA}))); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("blob directory left after DeleteBlob: %v", err)
	}
	wantUsage(t, s, HeaderSize+100, 1)
	if n, err := s.DeleteBlob(blobA); n != 0 || err != nil {
		t.Errorf("DeleteBlob of a gone blob = %d, %v", n, err)
	}
	// Delete of a blob's last shard drops its directory too.
	if err := s.Delete(ID{blobB, 0, 0}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Dir(s.Path(ID{Blob: blobB}))); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("blob directory left after deleting its last shard: %v", err)
	}
	wantUsage(t, s, 0, 0)
}

func TestWalkListsExactlyTheStoredShards(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, Options{})
	var want []ID
	for _, blob := range []string{blobB, blobA, "ab00000000000000"} {
		for _, block := range []uint32{10, 2, 1} {
			for _, index := range []uint16{1, 0} {
				id := ID{blob, block, index}
				put(t, s, id, 40, 1)
				want = append(want, id)
			}
		}
	}
	if err := s.Delete(ID{blobA, 2, 1}); err != nil {
		t.Fatal(err)
	}
	want = slices.DeleteFunc(want, func(id ID) bool { return id == ID{blobA, 2, 1} })
	slices.SortFunc(want, func(a, b ID) int {
		return strings.Compare(fmt.Sprintf("%s %010d %05d", a.Blob, a.Block, a.Index), fmt.Sprintf("%s %010d %05d", b.Blob, b.Block, b.Index))
	})
	// Not shards: a temporary file, a stranger.
	os.WriteFile(filepath.Join(filepath.Dir(s.Path(ID{Blob: blobA})), ".1.1.shard.9.tmp"), nil, 0o600)
	os.WriteFile(filepath.Join(dir, "notes.txt"), nil, 0o600)

	var got []ID
	err := s.Walk(func(id ID, size int64, mod time.Time) error {
		if size != HeaderSize+10 || mod.IsZero() {
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
				switch r.IntN(5) {
				case 0, 1:
					h, p := shard(id, 4, 2, uint32(r.IntN(8000)), 1)
					if err := s.Put(h, p); err != nil {
						t.Errorf("Put %s: %v", id, err)
					}
				case 2:
					if _, _, err := s.Get(id, nil); err != nil && !errors.Is(err, ErrNotFound) {
						t.Errorf("Get %s: %v", id, err)
					}
				case 3:
					if err := s.Delete(id); err != nil {
						t.Errorf("Delete %s: %v", id, err)
					}
				case 4:
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
	bytes, shards := s.Usage()
	var walked int64
	n := 0
	s.Walk(func(id ID, size int64, _ time.Time) error {
		if err := s.Verify(id); err != nil {
			t.Errorf("Verify %s: %v", id, err)
		}
		walked += size
		n++
		return nil
	})
	if walked != bytes || n != shards {
		t.Errorf("Usage = %d bytes, %d shards; the directory holds %d, %d", bytes, shards, walked, n)
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
		block uint32
		index uint16
		ok    bool
	}{
		{"0.0.shard", 0, 0, true},
		{"4294967295.65535.shard", 1<<32 - 1, 1<<16 - 1, true},
		{"12.3.shard", 12, 3, true},
		{"012.3.shard", 0, 0, false},
		{"12.03.shard", 0, 0, false},
		{"+12.3.shard", 0, 0, false},
		{"4294967296.0.shard", 0, 0, false},
		{"0.65536.shard", 0, 0, false},
		{"12.shard", 0, 0, false},
		{"12.3.4.shard", 0, 0, false},
		{"12.3.shard.tmp", 0, 0, false},
		{".12.3.shard.55.tmp", 0, 0, false},
	} {
		block, index, ok := parseFileName(tc.name)
		if ok != tc.ok || block != tc.block || index != tc.index {
			t.Errorf("parseFileName(%q) = %d, %d, %v; want %d, %d, %v", tc.name, block, index, ok, tc.block, tc.index, tc.ok)
		}
		if tc.ok && fileName(block, index) != tc.name {
			t.Errorf("fileName(%d, %d) = %q, want %q", block, index, fileName(block, index), tc.name)
		}
	}
}
