package gen

import (
	"bytes"
	"errors"
	"fmt"
	"go/format"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
)

// PlannedFile is one file of a Plan.
type PlannedFile struct {
	// Path is slash-separated, relative to the output directory.
	Path    string
	Content []byte
	// User marks files the user owns after the first run (main, config,
	// logic, go.mod): Write creates them but never overwrites them.
	User bool
	// Action is what Write does with the file.
	Action Action
}

// Action is what Plan.Write does with a file.
type Action int

const (
	// Create writes a file that does not exist yet.
	Create Action = iota
	// Overwrite replaces a generated file whose content changed.
	Overwrite
	// Unchanged leaves a generated file that already has this content.
	Unchanged
	// Keep leaves a file the user owns as it is.
	Keep
)

func (a Action) String() string {
	switch a {
	case Create:
		return "created"
	case Overwrite:
		return "updated"
	case Unchanged:
		return "unchanged"
	case Keep:
		return "kept"
	}
	return fmt.Sprintf("Action(%d)", int(a))
}

// Plan is a generated service, checked, not yet written.
type Plan struct {
	// Out is the output directory.
	Out string
	// Registry is the name the service registers as ("user.rpc");
	// ConfigFile its config, relative to Out.
	Registry, ConfigFile string
	Files                []PlannedFile
}

// newPlan formats the Go files, checks that every file can be written
// where it goes, and decides each file's Action from what is on disk.
func newPlan(out string, files []PlannedFile) (*Plan, error) {
	seen := map[string]bool{}
	for i := range files {
		f := &files[i]
		if seen[f.Path] {
			return nil, fmt.Errorf("generated two files at %s", f.Path)
		}
		seen[f.Path] = true
		if strings.HasSuffix(f.Path, ".go") {
			src, err := format.Source(f.Content)
			if err != nil {
				return nil, fmt.Errorf("format generated %s (a bug in zrpcctl gen): %w", f.Path, err)
			}
			f.Content = src
		}
		if err := f.decide(out); err != nil {
			return nil, err
		}
	}
	return &Plan{Out: out, Files: files}, nil
}

// decide sets f.Action, failing when f's place is taken by a directory or
// one of its parents is a file.
func (f *PlannedFile) decide(out string) error {
	for dir := path.Dir(f.Path); dir != "."; dir = path.Dir(dir) {
		st, err := os.Stat(filepath.Join(out, filepath.FromSlash(dir)))
		if err == nil && !st.IsDir() {
			return badInput("cannot write %s: %s is a file, not a directory", filepath.Join(out, f.Path), filepath.Join(out, dir))
		}
	}
	p := filepath.Join(out, filepath.FromSlash(f.Path))
	old, err := os.ReadFile(p)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		f.Action = Create
	case err != nil:
		if st, serr := os.Stat(p); serr == nil && st.IsDir() {
			return badInput("cannot write %s: it is a directory", p)
		}
		return fmt.Errorf("read %s: %w", p, err)
	case f.User:
		f.Action = Keep
	case bytes.Equal(old, f.Content):
		f.Action = Unchanged
	default:
		f.Action = Overwrite
	}
	return nil
}

// Write writes the files whose Action is Create or Overwrite, each through
// a temporary file renamed into place.
func (p *Plan) Write() error {
	for _, f := range p.Files {
		if f.Action != Create && f.Action != Overwrite {
			continue
		}
		dst := filepath.Join(p.Out, filepath.FromSlash(f.Path))
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return fmt.Errorf("write %s: %w", dst, err)
		}
		if err := writeFile(dst, f.Content); err != nil {
			return err
		}
	}
	return nil
}

func writeFile(dst string, content []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(dst), "."+filepath.Base(dst)+".*")
	if err != nil {
		return fmt.Errorf("write %s: %w", dst, err)
	}
	_, err = tmp.Write(content)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp.Name(), 0o644)
	}
	if err == nil {
		err = os.Rename(tmp.Name(), dst)
	}
	if err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("write %s: %w", dst, err)
	}
	return nil
}
