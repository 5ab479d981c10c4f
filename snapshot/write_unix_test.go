//go:build unix

package snapshot

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestWriteFileRefusesANameThatIsNoRegularFile: the rename that ends a
// write replaces whatever has the name, so a FIFO (or a device, or a
// symlink such as /dev/stdout) is refused before anything is written, and
// left as it is.
func TestWriteFileRefusesANameThatIsNoRegularFile(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Skipf("mkfifo: %v", err)
	}
	link := filepath.Join(dir, "link")
	if err := os.Symlink(fifo, link); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{fifo, link} {
		wrote := false
		err := WriteFile(path, func(w io.Writer) error {
			wrote = true
			return nil
		}, func(string) error { return nil })
		if err == nil || !strings.Contains(err.Error(), "not a regular file") || wrote {
			t.Fatalf("WriteFile(%s) = %v (write called: %v), want a refusal before writing", path, err, wrote)
		}
	}
	if fi, err := os.Lstat(fifo); err != nil || fi.Mode()&os.ModeNamedPipe == 0 {
		t.Fatalf("the FIFO is now %v (%v)", fi.Mode(), err)
	}
	if fi, err := os.Lstat(link); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Fatalf("the symlink is now %v (%v)", fi.Mode(), err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 2 {
		t.Fatalf("the directory holds %d entries, want the FIFO and the link alone", len(entries))
	}
}
