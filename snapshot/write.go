package snapshot

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// WriteFile writes a snapshot file to path atomically: write fills a
// temporary file next to path, which is synced, then checked by verify
// (given the temporary file's path), and only then renamed to path (and
// the directory synced). On any failure the temporary file is removed and
// path is left as it was. When only the directory sync after the rename
// fails, the error is a *DirSyncError: the file at path is complete.
func WriteFile(path string, write func(w io.Writer) error, verify func(tmp string) error) error {
	// The rename at the end replaces whatever has the name: a device
	// node, a FIFO, a symlink such as /dev/stdout would become a file.
	if fi, err := os.Lstat(path); err == nil && !fi.Mode().IsRegular() {
		return fmt.Errorf("%s exists and is not a regular file (%s): a snapshot is written to a temporary file and renamed to its name once verified; give the name of a file", path, fi.Mode().Type())
	}
	dir, base := filepath.Split(path)
	return writeAtomic(dir, base, write, verify, func() string { return base })
}

// WriteFileIn is WriteFile for a file of dir whose name depends on the
// header write returns (e.g. its index): the file is renamed to
// name(header) once verified. It returns the file's path.
func WriteFileIn(dir string, write func(w io.Writer) (Header, error), name func(Header) string, verify func(tmp string) error) (string, error) {
	var hdr Header
	var final string
	err := writeAtomic(dir, "snapshot",
		func(w io.Writer) (err error) {
			hdr, err = write(w)
			return err
		},
		verify,
		func() string {
			final = name(hdr)
			return final
		})
	return filepath.Join(dir, final), err
}

func writeAtomic(dir, base string, write func(w io.Writer) error, verify func(tmp string) error, name func() string) (err error) {
	if dir == "" {
		dir = "."
	}
	f, err := os.CreateTemp(dir, "."+base+".tmp-*")
	if err != nil {
		return fmt.Errorf("create a temporary file in %s: %w", dir, err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	bw := bufio.NewWriterSize(f, 256<<10)
	if err := write(bw); err != nil {
		return err
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", tmp, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", tmp, err)
	}
	if err := verify(tmp); err != nil {
		return fmt.Errorf("verify the written snapshot: %w", err)
	}
	path := filepath.Join(dir, name())
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("rename %s to %s: %w", tmp, path, err)
	}
	if err := syncDir(dir); err != nil {
		return &DirSyncError{Path: path, Err: err}
	}
	return nil
}

// DirSyncError is the error of a write whose file is at Path, complete
// and verified, but whose directory could not be synced after the rename:
// until the system writes the directory back, a power loss could undo the
// rename (leaving whatever had the name before, or nothing).
type DirSyncError struct {
	Path string
	Err  error
}

func (e *DirSyncError) Error() string {
	return fmt.Sprintf("%s is written, complete and verified, but its directory could not be synced, so a power loss could still lose it (run sync, or write it again): %v", e.Path, e.Err)
}

func (e *DirSyncError) Unwrap() error { return e.Err }

// IsTemporary reports whether name is a temporary file WriteFile or
// WriteFileIn leaves behind only when the process dies mid-write.
func IsTemporary(name string) bool {
	return strings.HasPrefix(name, ".") && strings.Contains(name, ".tmp-")
}

// syncDir makes a rename in dir durable. It is a variable so that tests
// can make it fail.
var syncDir = func(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open %s to sync it: %w", dir, err)
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil && !errors.Is(err, os.ErrInvalid) {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}

// InspectFile opens and inspects the file at path.
func InspectFile(path string) (*Info, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	info, err := Inspect(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return info, nil
}
