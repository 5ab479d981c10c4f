package raftstore

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"go.etcd.io/bbolt"
)

// encodeLog appends the binary form of l that raft.db kept, which
// decodeLog reads.
func encodeLog(dst []byte, l *raft.Log) []byte {
	dst = append(dst, logEncodingV1, byte(l.Type))
	dst = binary.AppendUvarint(dst, l.Index)
	dst = binary.AppendUvarint(dst, l.Term)
	dst = binary.AppendUvarint(dst, uint64(len(l.Data)))
	dst = append(dst, l.Data...)
	dst = binary.AppendUvarint(dst, uint64(len(l.Extensions)))
	dst = append(dst, l.Extensions...)
	if l.AppendedAt.IsZero() {
		return append(dst, 0)
	}
	dst = append(dst, flagAppendedAt)
	return binary.AppendVarint(dst, l.AppendedAt.UnixNano())
}

// legacyFixture writes a copy of testdata/raft-v1.db.gz, a raft.db written
// by zrpc before raft-wal, to dir/raft.db and returns its path. Its log is
// entries 1..301 of a one-node cluster "n1": the bootstrap configuration,
// the leader's no-op and barrier, and 298 registrations of service "api"
// (ids "1".."298", testInstance); CurrentTerm and LastVoteTerm are 2.
func legacyFixture(t testing.TB, dir string) string {
	t.Helper()
	f, err := os.Open("testdata/raft-v1.db.gz")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, legacyLogFile)
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

const (
	fixtureLast      = 301
	fixtureTerm      = 2
	fixtureInstances = 298
)

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

// TestLegacyLogRefusesForeignFile: a raft.db that is not a zrpc Raft log
// is refused, naming the file, and left as it was.
func TestLegacyLogRefusesForeignFile(t *testing.T) {
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
			l, err := openLegacyLog(path, "")
			if err == nil {
				l.Close()
				t.Fatalf("openLegacyLog succeeded on a foreign file")
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

func TestLegacyDecodeLogErrors(t *testing.T) {
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
