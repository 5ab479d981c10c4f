//go:build unix

package ctlcmd

import (
	"bytes"
	"crypto/sha256"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/zrpcio/zrpc/api/zrpcpb"
)

// TestBlobGetIntoAFIFOWritesIntoIt: a get whose destination is a FIFO (as
// /dev/null is a device), given or found in the destination directory
// under the blob's name, writes the blob into it, without --force, and
// leaves it a FIFO: a temporary file renamed over it would replace the
// node (run as root into /dev/null, that replaced the system's /dev/null
// with a file).
func TestBlobGetIntoAFIFOWritesIntoIt(t *testing.T) {
	t.Setenv(addrEnv, "")
	data := bytes.Repeat([]byte{7, 8, 9}, 40<<10)
	sum := sha256.Sum256(data)
	f := (&blobFake{onGet: fakeGet(&zrpcpb.Blob{Name: "b", Size: uint64(len(data)), Sha256: sum[:]}, data, nil)}).start(t)
	for _, c := range []struct {
		extra []string
		name  string
		toDir bool // DEST is the directory; the FIFO has the blob's name
	}{{nil, "fifo", false}, {[]string{"--force"}, "fifo", false}, {nil, "b", true}} {
		extra := c.extra
		fifo := filepath.Join(t.TempDir(), c.name)
		if err := syscall.Mkfifo(fifo, 0o600); err != nil {
			t.Skipf("mkfifo: %v", err)
		}
		got := make(chan []byte, 1)
		go func() {
			r, err := os.Open(fifo) // blocks until the get opens it for writing
			if err != nil {
				got <- nil
				return
			}
			defer r.Close()
			b, _ := io.ReadAll(r)
			got <- b
		}()
		dest := fifo
		if c.toDir {
			dest = filepath.Dir(fifo)
		}
		res := runZrpcctl(testContext(t), t, f.addr, append([]string{"blob", "get", "b", dest, "--through-agent"}, extra...)...)
		if res.err != nil {
			t.Fatalf("get %v into a FIFO: %v\n%s", extra, res.err, res.stderr)
		}
		fi, err := os.Lstat(fifo)
		if err != nil || fi.Mode()&os.ModeNamedPipe == 0 {
			t.Fatalf("after the get %v %s is %v (%v), want the FIFO still", extra, fifo, fi.Mode(), err)
		}
		checkDirHolds(t, filepath.Dir(fifo), c.name)
		if b := <-got; !bytes.Equal(b, data) {
			t.Fatalf("the FIFO's reader got %d bytes, want the blob's %d", len(b), len(data))
		}
	}
}

// TestBlobGetIntoAFIFOSaysWhatItWroteThere: a get into a FIFO writes the
// bytes as they arrive, so when they turn out not to match the blob's
// digest, the error says the reader has had them, not that nothing was
// written.
func TestBlobGetIntoAFIFOSaysWhatItWroteThere(t *testing.T) {
	t.Setenv(addrEnv, "")
	data := bytes.Repeat([]byte{7, 8, 9}, 1000)
	wrong := sha256.Sum256([]byte("another blob"))
	f := (&blobFake{onGet: fakeGet(&zrpcpb.Blob{Name: "b", Size: uint64(len(data)), Sha256: wrong[:]}, data, nil)}).start(t)
	fifo := filepath.Join(t.TempDir(), "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Skipf("mkfifo: %v", err)
	}
	got := make(chan []byte, 1)
	go func() {
		r, err := os.Open(fifo)
		if err != nil {
			got <- nil
			return
		}
		defer r.Close()
		b, _ := io.ReadAll(r)
		got <- b
	}()
	res := runZrpcctl(testContext(t), t, f.addr, "blob", "get", "b", fifo, "--through-agent")
	want := "the bytes read do not match the blob's SHA-256 digest; the bytes before the error were written to " + fifo
	if res.err == nil || !strings.Contains(res.stderr, want) {
		t.Fatalf("get of a corrupt blob into a FIFO: %v; want stderr to say %q:\n%s", res.err, want, res.stderr)
	}
	if b := <-got; !bytes.Equal(b, data) {
		t.Fatalf("the FIFO's reader got %d bytes, want the %d sent", len(b), len(data))
	}
}

// TestBlobGetForceKeepsTheReplacedFilesMode: a get with --force over an
// existing file gives the new file the old one's permission bits (a
// private file stays private, an executable executable), not those of a
// new file.
func TestBlobGetForceKeepsTheReplacedFilesMode(t *testing.T) {
	t.Setenv(addrEnv, "")
	data := bytes.Repeat([]byte{1, 2, 3}, 1000)
	sum := sha256.Sum256(data)
	f := (&blobFake{onGet: fakeGet(&zrpcpb.Blob{Name: "b", Size: uint64(len(data)), Sha256: sum[:]}, data, nil)}).start(t)
	for _, mode := range []os.FileMode{0o600, 0o755, 0o640} {
		dest := filepath.Join(t.TempDir(), "out")
		if err := os.WriteFile(dest, []byte("old"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(dest, mode); err != nil { // past the umask
			t.Fatal(err)
		}
		res := runZrpcctl(testContext(t), t, f.addr, "blob", "get", "b", dest, "--force", "--through-agent")
		if res.err != nil {
			t.Fatalf("get --force over a file of mode %v: %v\n%s", mode, res.err, res.stderr)
		}
		fi, err := os.Stat(dest)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != mode {
			t.Errorf("get --force over a file of mode %v left mode %v, want the old file's", mode, fi.Mode().Perm())
		}
		if b, _ := os.ReadFile(dest); !bytes.Equal(b, data) {
			t.Errorf("get --force over a file of mode %v: the file holds %d bytes, want the blob's %d", mode, len(b), len(data))
		}
	}
}
