//go:build unix

package shardstore

import (
	"errors"
	"io/fs"
	"os"
	"syscall"
	"testing"
)

// TestACommitKeepsAPartFileItCannotReadForAnotherReason: a commit into
// a part file that cannot be read for another reason than what it holds
// (here its name holds a pipe, which cannot be read at an offset) fails
// and leaves the file in place. Replaced, a part file that could not be
// read at that moment would lose every block it held but the staged
// ones, although nothing said they were bad.
func TestACommitKeepsAPartFileItCannotReadForAnotherReason(t *testing.T) {
	s := open(t, t.TempDir(), Options{})
	id := ID{blobA, 1, 2}
	path := s.Path(id)
	if err := os.MkdirAll(s.blobDir(blobA), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(path, 0o600); err != nil {
		t.Fatal(err)
	}
	// Held open for writing, so that an open of it for reading does not
	// wait for a writer.
	pipe, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pipe.Close() })
	h, p := shard(id, testBlockSize, 1)
	if err := s.Stage(h, p); err != nil {
		t.Fatal(err)
	}
	if n, err := s.CommitStaged(blobA); err == nil || errors.Is(err, ErrCorrupt) {
		t.Fatalf("CommitStaged into a part file that cannot be read = %d, %v; want an error, not ErrCorrupt", n, err)
	}
	info, err := os.Lstat(path)
	if err != nil || info.Mode()&fs.ModeNamedPipe == 0 {
		t.Fatalf("the part file after the commit: %v, %v; want it kept as it was", info, err)
	}
	wantUsage(t, s, 0, 0)
	noTempFiles(t, s)
}
