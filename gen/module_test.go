package gen

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"
)

// TestIsNotDirByErrno: ENOTDIR is recognised by its errno however it is
// wrapped, and no other error is taken for it because of its text.
func TestIsNotDirByErrno(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"path error", &fs.PathError{Op: "open", Path: "a/b", Err: syscall.ENOTDIR}, true},
		{"wrapped errno", fmt.Errorf("read go.mod: %w", syscall.ENOTDIR), true},
		{"other errno", &fs.PathError{Op: "open", Path: "a/b", Err: syscall.ENOENT}, false},
		{"text only", &fs.PathError{Op: "open", Path: "a/b", Err: errors.New("parent is not a directory we can read")}, false},
	} {
		if got := isNotDir(tc.err); got != tc.want {
			t.Errorf("%s: isNotDir(%v) = %v, want %v", tc.name, tc.err, got, tc.want)
		}
	}
}

// TestEnclosingModuleBelowAFile: a directory that cannot exist because a
// path element is a file is looked for above that file.
func TestEnclosingModuleBelowAFile(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("ENOTDIR is a Unix error")
	}
	root := t.TempDir()
	if err := os.WriteFile(filepath.Join(root, "go.mod"), []byte("module example.com/m\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "file"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	got, path, found, err := enclosingModule(filepath.Join(root, "file", "sub"))
	if err != nil || !found || path != "example.com/m" {
		t.Fatalf("enclosingModule below a file: %q %q %v %v, want the module at %s", got, path, found, err, root)
	}
	if want, _ := filepath.EvalSymlinks(root); got != root && got != want {
		t.Errorf("module root %s, want %s", got, root)
	}
}
