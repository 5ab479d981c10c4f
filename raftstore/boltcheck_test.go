package raftstore

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fixtureBytes returns the bytes of the raft.db fixture and its page size.
func fixtureBytes(t *testing.T) ([]byte, int) {
	t.Helper()
	b, err := os.ReadFile(legacyFixture(t, t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	pageSize := int(binary.NativeEndian.Uint32(b[boltPageHeaderSize+8:]))
	if len(b) < 8*pageSize {
		t.Fatalf("fixture has only %d bytes", len(b))
	}
	return b, pageSize
}

// TestBoltOpenRefusesDamagedFile: a truncated or corrupt raft log is
// refused with an error naming the file and saying what to do; it never
// crashes the process and is left as it was.
func TestBoltOpenRefusesDamagedFile(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 9))
	random := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		return b
	}
	// current returns the root page and the pages in use of the newer
	// meta page, the one bbolt uses.
	current := func(b []byte, ps int) (root, pages int) {
		e := binary.NativeEndian
		m0, m1 := b[boltPageHeaderSize:], b[ps+boltPageHeaderSize:]
		m := m0
		if e.Uint64(m1[48:]) > e.Uint64(m0[48:]) {
			m = m1
		}
		return int(e.Uint64(m[16:])), int(e.Uint64(m[40:]))
	}
	tests := []struct {
		name   string
		damage func(b []byte, pageSize int) []byte
	}{
		{"truncated to half", func(b []byte, _ int) []byte { return b[:len(b)/2] }},
		{"truncated by one page in use", func(b []byte, ps int) []byte {
			_, pages := current(b, ps)
			return b[:(pages-1)*ps]
		}},
		{"truncated to the meta pages", func(b []byte, ps int) []byte { return b[:2*ps] }},
		{"truncated inside meta page 1", func(b []byte, ps int) []byte { return b[:ps+40] }},
		{"random bytes", func(b []byte, _ int) []byte { return random(len(b)) }},
		{"flipped byte in meta page 0", func(b []byte, _ int) []byte { b[boltPageHeaderSize+41] ^= 0x10; return b }},
		{"flipped byte in meta page 1", func(b []byte, ps int) []byte { b[ps+boltPageHeaderSize+49] ^= 0x01; return b }},
		{"root page overwritten", func(b []byte, ps int) []byte {
			r, _ := current(b, ps)
			copy(b[r*ps:(r+1)*ps], random(ps))
			return b
		}},
		{"data pages overwritten", func(b []byte, ps int) []byte {
			copy(b[2*ps:], random(len(b)-2*ps))
			return b
		}},
		{"every page header zeroed", func(b []byte, ps int) []byte {
			for off := 2 * ps; off < len(b); off += ps {
				clear(b[off : off+boltPageHeaderSize])
			}
			return b
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "raft.db")
			good, pageSize := fixtureBytes(t)
			bad := tc.damage(bytes.Clone(good), pageSize)
			if err := os.WriteFile(path, bad, 0o600); err != nil {
				t.Fatal(err)
			}
			l, err := openLegacyLog(path, "agent-7")
			if err == nil {
				l.Close()
				t.Fatal("openLegacyLog accepted a damaged file")
			}
			if !errors.Is(err, ErrCorruptStore) {
				t.Errorf("err = %v, want ErrCorruptStore", err)
			}
			t.Log(err)
			msg := err.Error()
			for _, want := range []string{"raft log " + path + " is corrupt or truncated (", "restore the data dir from a backup", "zrpcctl raft remove-peer agent-7"} {
				if !strings.Contains(msg, want) {
					t.Errorf("err = %q, want it to say %q", msg, want)
				}
			}
			after, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(after, bad) {
				t.Error("the damaged file was modified")
			}
		})
	}
}
