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

// TestBlobPutWithANameAndAFileSaysHowToNameIt: `blob put NAME FILE`, the
// order of other stores' put commands, fails before any agent is asked,
// with the command that does it, whichever of the two is the file; more
// than two say what put takes (no argument: TestBlobInputErrors).
func TestBlobPutWithANameAndAFileSaysHowToNameIt(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "model v3.bin")
	if err := os.WriteFile(file, []byte("weights"), 0o600); err != nil {
		t.Fatal(err)
	}
	want := "name the blob with --name: zrpcctl blob put '" + file + "' --name models/v3.bin"
	for _, args := range [][]string{{"models/v3.bin", file}, {file, "models/v3.bin"}} {
		r := runZrpcctl(testContext(t), t, "127.0.0.1:1", append([]string{"blob", "put"}, args...)...)
		if r.err == nil || !strings.Contains(r.err.Error(), want) {
			t.Errorf("blob put %q: %v, want an error saying %q", args, r.err, want)
		}
	}
	r := runZrpcctl(testContext(t), t, "127.0.0.1:1", "blob", "put", "a", "b", "c")
	if want := "blob put takes one FILE, not 3 arguments"; r.err == nil || !strings.Contains(r.err.Error(), want) {
		t.Errorf("blob put a b c: %v, want an error saying %q", r.err, want)
	}
}

func TestShellWordReadsBackAsOneWord(t *testing.T) {
	for in, want := range map[string]string{
		"models/v3.bin":   "models/v3.bin",
		"./a-b_c.tar.gz":  "./a-b_c.tar.gz",
		"with space":      "'with space'",
		"it's":            `'it'\''s'`,
		"":                "''",
		"$HOME/x;rm -rf ": "'$HOME/x;rm -rf '",
	} {
		if got := shellWord(in); got != want {
			t.Errorf("shellWord(%q) = %s, want %s", in, got, want)
		}
	}
}
