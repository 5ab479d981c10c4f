package ctlcmd

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestBlobPutSourceSeeksWhenTheFileCan: the reader `blob put` hands the
// client can seek when the source is a file (so a put that lost shards
// with a dying agent starts over), and not when it is a pipe; either way
// it calls first before the first read, once.
func TestBlobPutSourceSeeksWhenTheFileCan(t *testing.T) {
	path := filepath.Join(t.TempDir(), "src")
	if err := os.WriteFile(path, []byte("hello"), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	firsts := 0
	r := readFirst(f, func() { firsts++ })
	s, ok := r.(io.Seeker)
	if !ok {
		t.Fatal("the reader of a file cannot seek")
	}
	for range 2 {
		b, err := io.ReadAll(r)
		if err != nil || string(b) != "hello" {
			t.Fatalf("read %q, %v", b, err)
		}
		if _, err := s.Seek(0, io.SeekStart); err != nil {
			t.Fatal(err)
		}
	}
	if firsts != 1 {
		t.Fatalf("first called %d times, want once", firsts)
	}
	if _, ok := readFirst(strings.NewReader("x"), nil).(io.Seeker); !ok {
		t.Fatal("the reader of a seekable source cannot seek")
	}
	if _, ok := readFirst(io.MultiReader(strings.NewReader("x")), nil).(io.Seeker); ok {
		t.Fatal("the reader of a pipe claims it can seek")
	}
}
