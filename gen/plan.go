package gen

import (
	"bytes"
	"errors"
	"fmt"
	"go/format"
	"io"
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
	// logic, go.mod): Write creates them, and overwrites them only while
	// they are as gen wrote them (ManifestName records that).
	User bool
	// Action is what Write does with the file.
	Action Action

	// unrecorded: not listed in ManifestName (go.mod and go.sum, which a
	// run into an existing module does not write, yet still needs).
	unrecorded bool
	// sum is the SHA-256 (hex) a file planned for Remove from the
	// manifest must still have when Write removes it.
	sum string
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
	// Remove deletes a file gen wrote from the same .proto on an earlier
	// run that this run no longer writes (its service was renamed, its
	// go_package moved): left, it would declare again what the new files
	// declare, or keep a removed package in use.
	Remove
	// Orphan leaves a file an earlier run wrote from the same .proto that
	// this run no longer writes, because it was changed since: the user
	// deletes it, or moves what they added elsewhere.
	Orphan
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
	case Remove:
		return "removed"
	case Orphan:
		return "left"
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

	// manifest is ManifestName's content once the plan is written.
	manifest []byte
}

// newPlan formats the Go files, checks that every file can be written
// where it goes, and decides each file's Action from what is on disk and
// what earlier runs wrote (w).
func newPlan(out string, files []PlannedFile, w *written) (*Plan, error) {
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
		if err := f.decide(out, w); err != nil {
			return nil, err
		}
	}
	return &Plan{Out: out, Files: files}, nil
}

// maxNameLen is the longest file name (one path element, in bytes) that
// file systems commonly allow (NAME_MAX).
const maxNameLen = 255

// decide sets f.Action, failing when f's name is too long, its place is
// taken by a directory or one of its parents is a file. A file the user
// owns is theirs once it is not as gen wrote it (w): until then gen
// keeps it up to date like the files it generates.
func (f *PlannedFile) decide(out string, w *written) error {
	for elem := range strings.SplitSeq(f.Path, "/") {
		if len(elem) > maxNameLen {
			return badInput("cannot write %s: its name is %d bytes long, file systems allow %d; shorten the name in the .proto it comes from (file, package, service or method)",
				filepath.Join(out, filepath.FromSlash(f.Path)), len(elem), maxNameLen)
		}
	}
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
	case f.User && !w.asWritten(f.Path, old):
		f.Action = Keep
	case bytes.Equal(old, f.Content):
		f.Action = Unchanged
	default:
		f.Action = Overwrite
	}
	return nil
}

// Write writes the files whose Action is Create or Overwrite. Every file
// is first written in full to a temporary file beside its place; only when
// all are, are they renamed into place. A failure before that point
// removes the temporary files and the directories Write made, leaving the
// output directory as it was. A file planned as new that appeared since
// the plan was made is not overwritten: Write fails.
func (p *Plan) Write() error {
	var (
		staged []stagedFile
		made   []string // directories Write created, parents first
	)
	undo := func() {
		for _, s := range staged {
			os.Remove(s.tmp)
		}
		for i := len(made) - 1; i >= 0; i-- {
			os.Remove(made[i]) // only removes it while empty
		}
	}
	for _, f := range p.Files {
		if f.Action != Create && f.Action != Overwrite {
			continue
		}
		dst := filepath.Join(p.Out, filepath.FromSlash(f.Path))
		dirs, err := mkdirs(filepath.Dir(dst))
		made = append(made, dirs...)
		if err != nil {
			undo()
			return fmt.Errorf("write %s: %w", dst, err)
		}
		if f.Action == Create {
			if _, err := os.Stat(dst); err == nil {
				undo()
				return badInput("write %s: it appeared since gen read the directory; not overwritten (run gen again)", dst)
			}
		}
		tmp, err := stageFile(dst, f.Content)
		if err != nil {
			undo()
			return err
		}
		staged = append(staged, stagedFile{tmp: tmp, dst: dst})
	}
	for i, s := range staged {
		if err := os.Rename(s.tmp, s.dst); err != nil {
			for _, rest := range staged[i:] {
				os.Remove(rest.tmp)
			}
			return fmt.Errorf("write %s: %w (%d of %d files were written; fix the cause and run gen again)", s.dst, err, i, len(staged))
		}
	}
	for _, f := range p.Files {
		if f.Action != Remove {
			continue
		}
		dst := filepath.Join(p.Out, filepath.FromSlash(f.Path))
		if f.sum != "" {
			// Changed since the plan was made: the user's now.
			if content, err := os.ReadFile(dst); err != nil || sha256Hex(content) != f.sum {
				continue
			}
		}
		if err := os.Remove(dst); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("remove %s, generated from this .proto by an earlier run and no longer: %w; delete it by hand", dst, err)
		}
		os.Remove(filepath.Dir(dst)) // only removes it while empty
	}
	return p.writeManifest()
}

// writeManifest records in ManifestName what Write wrote, unless it
// already says so.
func (p *Plan) writeManifest() error {
	if p.manifest == nil {
		return nil
	}
	dst := filepath.Join(p.Out, ManifestName)
	if old, err := os.ReadFile(dst); err == nil && bytes.Equal(old, p.manifest) {
		return nil
	}
	tmp, err := stageFile(dst, p.manifest)
	if err == nil {
		err = os.Rename(tmp, dst)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("record the generated files in %s: %w (the files are written; run gen again)", dst, err)
	}
	return nil
}

// generatedHeader begins every file zrpcctl gen writes that the user does
// not own; the line after it, or one of the next few, names its .proto.
const generatedHeader = "// Code generated by zrpcctl gen. DO NOT EDIT.\n"

// staleFiles lists the files under out that an earlier run generated from
// the .proto called source (their header says so) and that files, this
// run's, no longer has: a renamed service's client and server. Hidden
// directories, vendor and testdata are not searched, nor the directories
// of another module or service below out (a go.mod, an internal/server:
// theirs may come from a .proto of the same name); nor is anything past
// the first 20,000 files.
func staleFiles(out, source string, files []PlannedFile) ([]PlannedFile, error) {
	planned := make(map[string]bool, len(files))
	for _, f := range files {
		planned[f.Path] = true
	}
	wantSource := "\n// source: " + source + "\n"
	var stale []PlannedFile
	seen := 0
	err := filepath.WalkDir(out, func(p string, d fs.DirEntry, err error) error {
		switch {
		case err != nil:
			if p == out && errors.Is(err, fs.ErrNotExist) {
				return fs.SkipAll // a new output directory
			}
			return err
		case d.IsDir():
			if p != out && (strings.HasPrefix(d.Name(), ".") || d.Name() == "vendor" || d.Name() == "testdata" || otherRoot(p)) {
				return fs.SkipDir
			}
			return nil
		case !d.Type().IsRegular() || !strings.HasSuffix(d.Name(), ".go"):
			return nil
		}
		if seen++; seen > 20_000 {
			return fs.SkipAll
		}
		rel, err := filepath.Rel(out, p)
		if err != nil || planned[filepath.ToSlash(rel)] {
			return err
		}
		head, err := readHead(p, 1024)
		if err != nil {
			return err
		}
		if strings.HasPrefix(head, generatedHeader) && strings.Contains(head, wantSource) {
			stale = append(stale, PlannedFile{Path: filepath.ToSlash(rel), Action: Remove})
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("look for files an earlier run generated in %s: %w", out, err)
	}
	return stale, nil
}

// otherRoot reports whether dir, below the output directory, is the root
// of another module (it has a go.mod) or of another service gen wrote (it
// has an internal/server directory).
func otherRoot(dir string) bool {
	if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
		return true
	}
	st, err := os.Stat(filepath.Join(dir, "internal", "server"))
	return err == nil && st.IsDir()
}

// readHead returns up to n bytes from the start of the file at p.
func readHead(p string, n int) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	b := make([]byte, n)
	m, err := io.ReadFull(f, b)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return "", err
	}
	return string(b[:m]), nil
}

// stagedFile is a file's new content in a temporary file beside dst.
type stagedFile struct{ tmp, dst string }

// mkdirs creates dir and its missing parents, returning those it created,
// parents first.
func mkdirs(dir string) ([]string, error) {
	var missing []string
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(d); err == nil {
			break
		} else if !errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
		missing = append(missing, d)
		if filepath.Dir(d) == d {
			break
		}
	}
	var made []string
	for i := len(missing) - 1; i >= 0; i-- {
		if err := os.Mkdir(missing[i], 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
			return made, err
		} else if err == nil {
			made = append(made, missing[i])
		}
	}
	return made, nil
}

// stageFile writes content to a new temporary file in dst's directory
// (with a name short enough for any dst gen writes) and returns its path.
func stageFile(dst string, content []byte) (string, error) {
	tmp, err := os.CreateTemp(filepath.Dir(dst), ".zrpcgen-*")
	if err != nil {
		return "", fmt.Errorf("write %s: %w", dst, err)
	}
	_, err = tmp.Write(content)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp.Name(), 0o644)
	}
	if err != nil {
		os.Remove(tmp.Name())
		return "", fmt.Errorf("write %s: %w", dst, err)
	}
	return tmp.Name(), nil
}
