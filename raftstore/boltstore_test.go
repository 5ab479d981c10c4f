package raftstore

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// Compile-time interface checks.
var (
	_ raft.LogStore    = (*BoltStore)(nil)
	_ raft.StableStore = (*BoltStore)(nil)
	_ io.Closer        = (*BoltStore)(nil)
)

func openTestBolt(t testing.TB, path string) *BoltStore {
	t.Helper()
	s, err := OpenBoltStore(BoltOptions{Path: path, NoSync: true, Timeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatalf("OpenBoltStore(%s): %v", path, err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func testBoltLog(i uint64) *raft.Log {
	return &raft.Log{Index: i, Term: i/10 + 1, Type: raft.LogCommand, Data: fmt.Appendf(nil, "data-%d", i)}
}

// storeBoltRange stores first..last in batches of up to 1000.
func storeBoltRange(t testing.TB, s *BoltStore, first, last uint64) {
	t.Helper()
	var batch []*raft.Log
	for i := first; ; i++ { // no i <= last: last may be MaxUint64
		batch = append(batch, testBoltLog(i))
		if len(batch) == 1000 || i == last {
			if err := s.StoreLogs(batch); err != nil {
				t.Fatalf("StoreLogs: %v", err)
			}
			batch = batch[:0]
		}
		if i == last {
			return
		}
	}
}

func checkBoltIndexes(t *testing.T, s *BoltStore, wantFirst, wantLast uint64) {
	t.Helper()
	first, err := s.FirstIndex()
	if err != nil || first != wantFirst {
		t.Errorf("FirstIndex() = %d, %v; want %d", first, err, wantFirst)
	}
	last, err := s.LastIndex()
	if err != nil || last != wantLast {
		t.Errorf("LastIndex() = %d, %v; want %d", last, err, wantLast)
	}
}

// boltLogDiff describes how got differs from want, "" if equal.
func boltLogDiff(want, got *raft.Log) string {
	var d []string
	if got.Index != want.Index || got.Term != want.Term || got.Type != want.Type {
		d = append(d, fmt.Sprintf("index/term/type %d/%d/%d, want %d/%d/%d",
			got.Index, got.Term, got.Type, want.Index, want.Term, want.Type))
	}
	if !bytes.Equal(got.Data, want.Data) {
		d = append(d, fmt.Sprintf("data %.32q (%d bytes), want %.32q (%d bytes)", got.Data, len(got.Data), want.Data, len(want.Data)))
	}
	if !bytes.Equal(got.Extensions, want.Extensions) {
		d = append(d, fmt.Sprintf("extensions %q, want %q", got.Extensions, want.Extensions))
	}
	if !got.AppendedAt.Equal(want.AppendedAt) || got.AppendedAt.IsZero() != want.AppendedAt.IsZero() {
		d = append(d, fmt.Sprintf("appended at %v, want %v", got.AppendedAt, want.AppendedAt))
	}
	return strings.Join(d, "; ")
}

func TestBoltFirstLastIndex(t *testing.T) {
	tests := []struct {
		name                string
		first, last         uint64 // stored range; last == 0 means nothing stored
		wantFirst, wantLast uint64
	}{
		{"empty", 0, 0, 0, 0},
		{"single", 7, 7, 7, 7},
		{"from one", 1, 100, 1, 100},
		{"after compaction", 5000, 6500, 5000, 6500},
		{"high indexes", math.MaxUint64 - 3, math.MaxUint64, math.MaxUint64 - 3, math.MaxUint64},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := openTestBolt(t, filepath.Join(t.TempDir(), "raft.db"))
			if tt.last != 0 {
				storeBoltRange(t, s, tt.first, tt.last)
			}
			checkBoltIndexes(t, s, tt.wantFirst, tt.wantLast)
		})
	}
}

func TestBoltLogRoundTrip(t *testing.T) {
	big := make([]byte, 1<<20)
	for i := range big {
		big[i] = byte(i * 7)
	}
	logs := []*raft.Log{
		{Index: 1},
		{Index: 2, Term: 3, Type: raft.LogConfiguration, Data: []byte("cfg"), Extensions: []byte("ext"),
			AppendedAt: time.Unix(1700000000, 123456789)},
		{Index: 3, Term: math.MaxUint64, Type: raft.LogBarrier, Extensions: []byte{0, 1, 2}},
		{Index: 4, Term: 4, Type: raft.LogCommand, Data: big, AppendedAt: time.Now()},
		{Index: 5, Term: 4, Type: raft.LogNoop, AppendedAt: time.Unix(-5, 0)},
		{Index: 6, Term: 4, Type: raft.LogType(200), Data: []byte{0}},
	}
	// stale fills the destination with values GetLog must overwrite.
	stale := raft.Log{Index: 99, Term: 99, Type: raft.LogAddPeerDeprecated, Data: []byte("old"),
		Extensions: []byte("old"), AppendedAt: time.Unix(1, 1)}
	tests := []struct {
		name  string
		store func(s *BoltStore) error
	}{
		{"StoreLog", func(s *BoltStore) error {
			for _, l := range logs {
				if err := s.StoreLog(l); err != nil {
					return err
				}
			}
			return nil
		}},
		{"StoreLogs", func(s *BoltStore) error { return s.StoreLogs(logs) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := openTestBolt(t, filepath.Join(t.TempDir(), "raft.db"))
			if err := tt.store(s); err != nil {
				t.Fatalf("store: %v", err)
			}
			for _, want := range logs {
				got := stale
				if err := s.GetLog(want.Index, &got); err != nil {
					t.Fatalf("GetLog(%d): %v", want.Index, err)
				}
				if d := boltLogDiff(want, &got); d != "" {
					t.Errorf("GetLog(%d): %s", want.Index, d)
				}
			}
			checkBoltIndexes(t, s, 1, uint64(len(logs)))
		})
	}
}

func TestBoltGetLogMissing(t *testing.T) {
	s := openTestBolt(t, filepath.Join(t.TempDir(), "raft.db"))
	var l raft.Log
	if err := s.GetLog(1, &l); err != raft.ErrLogNotFound {
		t.Errorf("GetLog(1) on empty store = %v, want raft.ErrLogNotFound", err)
	}
	storeBoltRange(t, s, 10, 20)
	for _, idx := range []uint64{0, 9, 21, math.MaxUint64} {
		if err := s.GetLog(idx, &l); err != raft.ErrLogNotFound {
			t.Errorf("GetLog(%d) = %v, want raft.ErrLogNotFound", idx, err)
		}
	}
}

func TestBoltDeleteRange(t *testing.T) {
	tests := []struct {
		name                string
		n                   uint64 // entries 1..n are stored
		min, max            uint64
		wantFirst, wantLast uint64
	}{
		{"head like compaction", 5000, 1, 3000, 3001, 5000},
		{"tail like conflict truncation", 5000, 4001, 5000, 1, 4000},
		{"whole range", 5000, 1, 5000, 0, 0},
		{"beyond both ends", 5000, 0, math.MaxUint64, 0, 0},
		{"middle", 5000, 100, 200, 1, 5000},
		{"single entry", 5000, 5000, 5000, 1, 4999},
		{"empty range min>max", 5000, 10, 9, 1, 5000},
		{"nothing in range", 5000, 6000, 7000, 1, 5000},
		{"large head", 60000, 1, 59990, 59991, 60000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := openTestBolt(t, filepath.Join(t.TempDir(), "raft.db"))
			storeBoltRange(t, s, 1, tt.n)
			if err := s.DeleteRange(tt.min, tt.max); err != nil {
				t.Fatalf("DeleteRange(%d, %d): %v", tt.min, tt.max, err)
			}
			checkBoltIndexes(t, s, tt.wantFirst, tt.wantLast)
			var l raft.Log
			for i := uint64(1); i <= tt.n; i++ {
				err := s.GetLog(i, &l)
				if deleted := i >= tt.min && i <= tt.max; deleted && err != raft.ErrLogNotFound {
					t.Fatalf("GetLog(%d) after delete = %v, want raft.ErrLogNotFound", i, err)
				} else if !deleted && (err != nil || l.Index != i) {
					t.Fatalf("GetLog(%d) = index %d, %v; want kept", i, l.Index, err)
				}
			}
			// The log must still accept appends after the delete.
			storeBoltRange(t, s, tt.n+1, tt.n+3)
			if last, err := s.LastIndex(); err != nil || last != tt.n+3 {
				t.Errorf("LastIndex() after re-append = %d, %v; want %d", last, err, tt.n+3)
			}
		})
	}
}

func TestBoltDeleteRangeAtMaxIndex(t *testing.T) {
	s := openTestBolt(t, filepath.Join(t.TempDir(), "raft.db"))
	storeBoltRange(t, s, math.MaxUint64-3, math.MaxUint64)
	if err := s.DeleteRange(math.MaxUint64-1, math.MaxUint64); err != nil {
		t.Fatal(err)
	}
	checkBoltIndexes(t, s, math.MaxUint64-3, math.MaxUint64-2)
}

func TestBoltStableStore(t *testing.T) {
	s := openTestBolt(t, filepath.Join(t.TempDir(), "raft.db"))
	tests := []struct {
		key, val []byte
	}{
		{[]byte("CurrentTerm-bytes"), []byte("v1")},
		{[]byte("binary"), []byte{0, 0xff, 0}},
		{[]byte("overwritten"), []byte("first")},
		{[]byte("overwritten"), []byte("second")},
		{[]byte("big"), bytes.Repeat([]byte("x"), 100000)},
	}
	for _, tt := range tests {
		if err := s.Set(tt.key, tt.val); err != nil {
			t.Fatalf("Set(%q): %v", tt.key, err)
		}
		got, err := s.Get(tt.key)
		if err != nil || !bytes.Equal(got, tt.val) {
			t.Errorf("Get(%q) = %.20q, %v; want %.20q", tt.key, got, err, tt.val)
		}
	}
	got, _ := s.Get([]byte("binary"))
	got[0] = 'X' // must not write through to the store
	if again, _ := s.Get([]byte("binary")); again[0] != 0 {
		t.Errorf("Get returned a slice aliasing the store")
	}

	for _, v := range []uint64{0, 1, 42, math.MaxUint64} {
		if err := s.SetUint64([]byte("u"), v); err != nil {
			t.Fatalf("SetUint64(%d): %v", v, err)
		}
		if got, err := s.GetUint64([]byte("u")); err != nil || got != v {
			t.Errorf("GetUint64 = %d, %v; want %d", got, err, v)
		}
	}
	if _, err := s.GetUint64([]byte("binary")); !errors.Is(err, ErrCorruptStore) {
		t.Errorf("GetUint64 of a 3-byte value = %v, want ErrCorruptStore", err)
	}

	missing := []struct {
		name string
		call func() error
	}{
		{"Get", func() error { _, err := s.Get([]byte("nope")); return err }},
		{"GetUint64", func() error { _, err := s.GetUint64([]byte("nope")); return err }},
	}
	for _, m := range missing {
		err := m.call()
		if err == nil || err.Error() != "not found" || !errors.Is(err, ErrKeyNotFound) {
			t.Errorf("%s(missing) = %v, want error with text %q", m.name, err, "not found")
		}
	}
}

func TestBoltPersistence(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "raft.db")
	s, err := OpenBoltStore(BoltOptions{Path: path}) // fsync on, default timeout
	if err != nil {
		t.Fatal(err)
	}
	storeBoltRange(t, s, 1, 50)
	if err := s.DeleteRange(1, 9); err != nil {
		t.Fatal(err)
	}
	if err := s.Set([]byte("k"), []byte("v")); err != nil {
		t.Fatal(err)
	}
	if err := s.SetUint64([]byte("CurrentTerm"), 7); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Errorf("file mode = %v, want 0600", perm)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("data dir holds %d entries, want only raft.db (temporary file left behind?)", len(entries))
	}

	s = openTestBolt(t, path)
	checkBoltIndexes(t, s, 10, 50)
	for i := uint64(10); i <= 50; i++ {
		var l raft.Log
		if err := s.GetLog(i, &l); err != nil {
			t.Fatalf("GetLog(%d): %v", i, err)
		}
		if d := boltLogDiff(testBoltLog(i), &l); d != "" {
			t.Errorf("GetLog(%d): %s", i, d)
		}
	}
	if v, err := s.Get([]byte("k")); err != nil || string(v) != "v" {
		t.Errorf("Get(k) = %q, %v", v, err)
	}
	if v, err := s.GetUint64([]byte("CurrentTerm")); err != nil || v != 7 {
		t.Errorf("GetUint64(CurrentTerm) = %d, %v", v, err)
	}
}

// writeBoltFile creates a plain bbolt file at path, filled by fill.
func writeBoltFile(t *testing.T, path string, fill func(tx *bbolt.Tx) error) {
	t.Helper()
	db, err := bbolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(fill); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
}

func putBolt(tx *bbolt.Tx, bucket, key, val string) error {
	b, err := tx.CreateBucketIfNotExists([]byte(bucket))
	if err != nil {
		return err
	}
	return b.Put([]byte(key), []byte(val))
}

func TestBoltOpenForeignFile(t *testing.T) {
	tests := []struct {
		name    string
		create  func(t *testing.T, path string)
		wantMsg string
	}{
		{"random bytes", func(t *testing.T, path string) {
			b := make([]byte, 16<<10)
			r := rand.New(rand.NewPCG(1, 2))
			for i := range b {
				b[i] = byte(r.Uint32())
			}
			if err := os.WriteFile(path, b, 0o600); err != nil {
				t.Fatal(err)
			}
		}, "not a bbolt file"},
		{"short text", func(t *testing.T, path string) {
			if err := os.WriteFile(path, []byte("hello, world\n"), 0o600); err != nil {
				t.Fatal(err)
			}
		}, "not a bbolt file"},
		{"empty file", func(t *testing.T, path string) {
			if err := os.WriteFile(path, nil, 0o600); err != nil {
				t.Fatal(err)
			}
		}, "file is empty"},
		{"bbolt without marker", func(t *testing.T, path string) {
			writeBoltFile(t, path, func(tx *bbolt.Tx) error { return putBolt(tx, "other", "k", "v") })
		}, "format marker missing"},
		{"bbolt with empty meta bucket", func(t *testing.T, path string) {
			writeBoltFile(t, path, func(tx *bbolt.Tx) error { return putBolt(tx, "meta", "other", "v") })
		}, "format marker missing"},
		{"bbolt with wrong marker", func(t *testing.T, path string) {
			writeBoltFile(t, path, func(tx *bbolt.Tx) error { return putBolt(tx, "meta", "format", "someone-else-v9") })
		}, `"someone-else-v9"`},
		{"marker but no logs bucket", func(t *testing.T, path string) {
			writeBoltFile(t, path, func(tx *bbolt.Tx) error { return putBolt(tx, "meta", "format", formatMarker) })
		}, `bucket "logs" missing`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "raft.db")
			tt.create(t, path)
			before, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			s, err := OpenBoltStore(BoltOptions{Path: path, Timeout: 200 * time.Millisecond})
			if err == nil {
				s.Close()
				t.Fatalf("OpenBoltStore succeeded on a foreign file")
			}
			if !errors.Is(err, ErrCorruptStore) {
				t.Errorf("err = %v, want ErrCorruptStore", err)
			}
			if msg := err.Error(); !strings.Contains(msg, path) || !strings.Contains(msg, tt.wantMsg) {
				t.Errorf("err = %q, want it to name %s and say %q", msg, path, tt.wantMsg)
			}
			after, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(before, after) {
				t.Errorf("foreign file was modified (%d bytes before, %d after)", len(before), len(after))
			}
		})
	}
}

func TestBoltOpenLocked(t *testing.T) {
	path := filepath.Join(t.TempDir(), "raft.db")
	first := openTestBolt(t, path)

	const timeout = 100 * time.Millisecond
	start := time.Now()
	s, err := OpenBoltStore(BoltOptions{Path: path, Timeout: timeout})
	elapsed := time.Since(start)
	if err == nil {
		s.Close()
		t.Fatal("second OpenBoltStore of a locked file succeeded")
	}
	if elapsed > timeout+2*time.Second {
		t.Errorf("second open took %v, want about %v", elapsed, timeout)
	}
	if msg := err.Error(); !strings.Contains(msg, path) || !strings.Contains(msg, "another agent") {
		t.Errorf("err = %q, want it to name the path and mention another agent", msg)
	}
	if !errors.Is(err, bolterrors.ErrTimeout) || errors.Is(err, ErrCorruptStore) {
		t.Errorf("err = %v, want bolterrors.ErrTimeout and not ErrCorruptStore", err)
	}

	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = OpenBoltStore(BoltOptions{Path: path, Timeout: timeout})
	if err != nil {
		t.Fatalf("open after the first store closed: %v", err)
	}
	s.Close()
}

func TestBoltClosedStore(t *testing.T) {
	s := openTestBolt(t, filepath.Join(t.TempDir(), "raft.db"))
	storeBoltRange(t, s, 1, 3)
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close = %v, want nil", err)
	}
	var l raft.Log
	calls := []struct {
		name string
		call func() error
	}{
		{"FirstIndex", func() error { _, err := s.FirstIndex(); return err }},
		{"LastIndex", func() error { _, err := s.LastIndex(); return err }},
		{"GetLog", func() error { return s.GetLog(1, &l) }},
		{"StoreLog", func() error { return s.StoreLog(testBoltLog(4)) }},
		{"StoreLogs", func() error { return s.StoreLogs([]*raft.Log{testBoltLog(4)}) }},
		{"DeleteRange", func() error { return s.DeleteRange(1, 2) }},
		{"Set", func() error { return s.Set([]byte("k"), []byte("v")) }},
		{"Get", func() error { _, err := s.Get([]byte("k")); return err }},
		{"SetUint64", func() error { return s.SetUint64([]byte("k"), 1) }},
		{"GetUint64", func() error { _, err := s.GetUint64([]byte("k")); return err }},
	}
	for _, c := range calls {
		if err := c.call(); err == nil || err == raft.ErrLogNotFound || err == ErrKeyNotFound {
			t.Errorf("%s on closed store = %v, want a closed-store error", c.name, err)
		}
	}
}

func TestBoltCorruptEntry(t *testing.T) {
	s := openTestBolt(t, filepath.Join(t.TempDir(), "raft.db"))
	key := func(i uint64) []byte { return binary.BigEndian.AppendUint64(nil, i) }
	err := s.db.Update(func(tx *bbolt.Tx) error {
		b := tx.Bucket(bucketLogs)
		if err := b.Put(key(1), []byte("garbage")); err != nil {
			return err
		}
		return b.Put(key(2), encodeLog(nil, testBoltLog(3))) // index mismatch
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, idx := range []uint64{1, 2} {
		var l raft.Log
		if err := s.GetLog(idx, &l); !errors.Is(err, ErrCorruptStore) {
			t.Errorf("GetLog(%d) = %v, want ErrCorruptStore", idx, err)
		}
	}
}

func TestBoltDecodeLogErrors(t *testing.T) {
	valid := encodeLog(nil, &raft.Log{Index: 300, Term: 2, Type: raft.LogCommand, Data: []byte("abc"),
		Extensions: []byte("x"), AppendedAt: time.Unix(1700000000, 0)})
	tests := []struct {
		name string
		in   []byte
	}{
		{"nil", nil},
		{"version only", []byte{logEncodingV1}},
		{"unknown version", append([]byte{9}, valid[1:]...)},
		{"data length past end", []byte{logEncodingV1, 0, 1, 1, 200, 1, 'a'}},
		{"huge data length", append([]byte{logEncodingV1, 0, 1, 1}, binary.AppendUvarint(nil, math.MaxUint64)...)},
		{"overlong varint", append([]byte{logEncodingV1, 0}, bytes.Repeat([]byte{0xff}, 11)...)},
		{"unknown flags", []byte{logEncodingV1, 0, 1, 1, 0, 0, 4}},
		{"missing appended-at", []byte{logEncodingV1, 0, 1, 1, 0, 0, flagAppendedAt}},
		{"trailing bytes", append(bytes.Clone(valid), 0)},
	}
	for i := range len(valid) {
		tests = append(tests, struct {
			name string
			in   []byte
		}{fmt.Sprintf("truncated to %d", i), valid[:i]})
	}
	for _, tt := range tests {
		var l raft.Log
		if err := decodeLog(tt.in, &l); !errors.Is(err, ErrCorruptStore) {
			t.Errorf("%s: decodeLog(%x) = %v, want ErrCorruptStore", tt.name, tt.in, err)
		}
	}
	var l raft.Log
	if err := decodeLog(valid, &l); err != nil || l.Index != 300 {
		t.Errorf("decodeLog(valid) = %+v, %v", l, err)
	}
}

func FuzzDecodeLog(f *testing.F) {
	for _, l := range []*raft.Log{
		{},
		{Index: 1, Term: 1, Type: raft.LogCommand, Data: []byte("hello")},
		{Index: 1 << 40, Term: 9, Type: raft.LogConfiguration, Data: []byte{1, 2}, Extensions: []byte{3},
			AppendedAt: time.Unix(1700000000, 5)},
	} {
		f.Add(encodeLog(nil, l), l.Index, l.Term, uint8(l.Type), l.Data, l.Extensions, l.AppendedAt.UnixNano())
	}
	f.Add([]byte("garbage"), uint64(0), uint64(0), uint8(0), []byte(nil), []byte(nil), int64(0))
	f.Add([]byte{logEncodingV1, 0, 0xff, 0xff}, uint64(math.MaxUint64), uint64(1), uint8(255), []byte{}, []byte{0}, int64(math.MinInt64))

	f.Fuzz(func(t *testing.T, raw []byte, index, term uint64, typ uint8, data, ext []byte, nanos int64) {
		// Arbitrary input: no panic, and a successful decode re-encodes to
		// something that decodes to the same log.
		var got raft.Log
		if err := decodeLog(raw, &got); err != nil {
			if !errors.Is(err, ErrCorruptStore) {
				t.Fatalf("decodeLog error %v does not wrap ErrCorruptStore", err)
			}
		} else {
			var again raft.Log
			if err := decodeLog(encodeLog(nil, &got), &again); err != nil {
				t.Fatalf("re-decode of %+v: %v", got, err)
			}
			if d := boltLogDiff(&got, &again); d != "" {
				t.Fatalf("re-decode: %s", d)
			}
		}

		// A log built from the inputs round-trips through encode→decode.
		want := raft.Log{Index: index, Term: term, Type: raft.LogType(typ), Data: data, Extensions: ext}
		if nanos != 0 {
			want.AppendedAt = time.Unix(0, nanos)
		}
		var dec raft.Log
		if err := decodeLog(encodeLog(nil, &want), &dec); err != nil {
			t.Fatalf("decode of encoded %+v: %v", want, err)
		}
		if d := boltLogDiff(&want, &dec); d != "" {
			t.Fatalf("round trip: %s", d)
		}
	})
}

// countingFSM counts applied command entries.
type countingFSM struct {
	mu sync.Mutex
	n  uint64
}

func (f *countingFSM) Apply(l *raft.Log) any {
	if l.Type == raft.LogCommand {
		f.mu.Lock()
		f.n++
		f.mu.Unlock()
	}
	return nil
}

func (f *countingFSM) count() uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.n
}

func (f *countingFSM) Snapshot() (raft.FSMSnapshot, error) { return countingSnapshot(f.count()), nil }

func (f *countingFSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	var b [8]byte
	if _, err := io.ReadFull(rc, b[:]); err != nil {
		return err
	}
	f.mu.Lock()
	f.n = binary.BigEndian.Uint64(b[:])
	f.mu.Unlock()
	return nil
}

type countingSnapshot uint64

func (c countingSnapshot) Persist(sink raft.SnapshotSink) error {
	if _, err := sink.Write(binary.BigEndian.AppendUint64(nil, uint64(c))); err != nil {
		_ = sink.Cancel()
		return err
	}
	return sink.Close()
}

func (countingSnapshot) Release() {}

func TestBoltUnderRaft(t *testing.T) {
	path := filepath.Join(t.TempDir(), "raft.db")
	snaps := raft.NewInmemSnapshotStore()
	conf := raft.DefaultConfig()
	conf.LocalID = "n1"
	conf.HeartbeatTimeout = 50 * time.Millisecond
	conf.ElectionTimeout = 50 * time.Millisecond
	conf.LeaderLeaseTimeout = 50 * time.Millisecond
	conf.CommitTimeout = 5 * time.Millisecond
	conf.SnapshotThreshold = 1 << 20 // replay must come from the log
	conf.LogOutput = io.Discard

	// start runs a raft node on a freshly opened store (fsync on).
	start := func(addr raft.ServerAddress) (*raft.Raft, *BoltStore, *countingFSM, raft.ServerAddress) {
		t.Helper()
		store, err := OpenBoltStore(BoltOptions{Path: path})
		if err != nil {
			t.Fatal(err)
		}
		addr, trans := raft.NewInmemTransport(addr)
		fsm := &countingFSM{}
		r, err := raft.NewRaft(conf, fsm, store, store, snaps, trans)
		if err != nil {
			t.Fatalf("NewRaft: %v", err)
		}
		t.Cleanup(func() {
			_ = r.Shutdown().Error()
			_ = trans.Close()
			_ = store.Close()
		})
		return r, store, fsm, addr
	}

	r, store, fsm, addr := start("")
	boot := raft.Configuration{Servers: []raft.Server{{ID: conf.LocalID, Address: addr}}}
	if err := r.BootstrapCluster(boot).Error(); err != nil {
		t.Fatalf("bootstrap: %v", err)
	}
	eventually(t, 10*time.Second, "leadership", func() bool { return r.State() == raft.Leader })
	const n = 100
	for i := range n {
		if err := r.Apply([]byte{byte(i)}, 5*time.Second).Error(); err != nil {
			t.Fatalf("Apply %d: %v", i, err)
		}
	}
	if got := fsm.count(); got != n {
		t.Fatalf("FSM applied %d entries, want %d", got, n)
	}
	if err := r.Shutdown().Error(); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	lastBefore, err := store.LastIndex()
	if err != nil {
		t.Fatal(err)
	}
	if err := store.Close(); err != nil {
		t.Fatal(err)
	}

	r, store, fsm, _ = start(addr)
	if last, err := store.LastIndex(); err != nil || last < n || last < lastBefore {
		t.Fatalf("LastIndex after reopen = %d, %v; want >= %d and >= %d", last, err, n, lastBefore)
	}
	if ok, err := raft.HasExistingState(store, store, snaps); err != nil || !ok {
		t.Fatalf("HasExistingState = %v, %v; want true", ok, err)
	}
	if term, err := store.GetUint64([]byte("CurrentTerm")); err != nil || term == 0 {
		t.Errorf("CurrentTerm = %d, %v; want > 0", term, err)
	}
	eventually(t, 10*time.Second, "FSM replay", func() bool { return fsm.count() >= n })
	if got := fsm.count(); got != n {
		t.Errorf("replayed FSM count = %d, want %d", got, n)
	}
	if err := r.Apply([]byte("after restart"), 5*time.Second).Error(); err != nil {
		t.Fatalf("Apply after restart: %v", err)
	}
	if got := fsm.count(); got != n+1 {
		t.Errorf("FSM count after one more apply = %d, want %d", got, n+1)
	}
}

func BenchmarkStoreLogs(b *testing.B) {
	for _, batch := range []int{1, 64} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			s, err := OpenBoltStore(BoltOptions{Path: filepath.Join(b.TempDir(), "raft.db")}) // fsync on
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			data := bytes.Repeat([]byte("d"), 256)
			logs := make([]*raft.Log, batch)
			for i := range logs {
				logs[i] = &raft.Log{Term: 1, Type: raft.LogCommand, Data: data, AppendedAt: time.Now()}
			}
			b.SetBytes(int64(batch * len(data)))
			b.ResetTimer()
			next := uint64(1)
			for range b.N {
				for _, l := range logs {
					l.Index = next
					next++
				}
				if err := s.StoreLogs(logs); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkGetLog(b *testing.B) {
	s := openTestBolt(b, filepath.Join(b.TempDir(), "raft.db"))
	const n = 10000
	storeBoltRange(b, s, 1, n)
	b.ResetTimer()
	var l raft.Log
	for i := range b.N {
		if err := s.GetLog(uint64(i%n)+1, &l); err != nil {
			b.Fatal(err)
		}
	}
}
