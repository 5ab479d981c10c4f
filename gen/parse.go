package gen

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"github.com/bufbuild/protocompile"
	"github.com/bufbuild/protocompile/linker"
	"github.com/bufbuild/protocompile/reporter"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
)

// ParseConfig names the .proto file to compile and where its imports are.
type ParseConfig struct {
	// File is the path of the .proto file on disk.
	File string
	// ImportPaths are the directories imports are searched in, in order
	// (protoc's -I). The file's own directory is searched when it lies in
	// none of them. The file's import name always means File itself, even
	// where an import path holds another file of that name. The well-known
	// types (google/protobuf/*.proto) need no import path.
	ImportPaths []string
}

// Parsed is a compiled .proto file and everything it imports.
type Parsed struct {
	// Name is the file's import name ("user.proto"), relative to the import
	// path it was found in.
	Name string
	// Desc is the compiled file.
	Desc protoreflect.FileDescriptor
	// Files holds the file and its imports, dependencies first, as protoc
	// hands them to a plugin.
	Files []*descriptorpb.FileDescriptorProto
	// OnDisk maps the import name of every file read from disk (the file,
	// and imports that are not built-in well-known types) to its path.
	OnDisk map[string]string
}

// SourceError is one problem in a .proto file, at a position.
type SourceError struct {
	File         string // path on disk when known, else the import name
	Line, Column int
	Err          error
}

func (e *SourceError) Error() string {
	return fmt.Sprintf("%s:%d:%d: %v", e.File, e.Line, e.Column, e.Err)
}

func (e *SourceError) Unwrap() error { return e.Err }

// Parse compiles cfg.File. A file with errors yields all of them, each a
// *SourceError, joined.
func Parse(ctx context.Context, cfg ParseConfig) (*Parsed, error) {
	st, err := os.Stat(cfg.File)
	if err != nil {
		return nil, &inputError{fmt.Errorf("read proto file: %w", err)}
	}
	if st.IsDir() {
		return nil, badInput("read proto file: %s is a directory", cfg.File)
	}
	name, paths, err := importName(cfg)
	if err != nil {
		return nil, err
	}
	res := &diskResolver{paths: paths, root: name, rootPath: cfg.File, found: map[string]string{}}
	var errs []error
	comp := protocompile.Compiler{
		Resolver:       protocompile.WithStandardImports(res),
		SourceInfoMode: protocompile.SourceInfoStandard,
		Reporter: reporter.NewReporter(func(e reporter.ErrorWithPos) error {
			pos := e.GetPosition()
			errs = append(errs, &SourceError{File: res.display(pos.Filename), Line: pos.Line, Column: pos.Col, Err: e.Unwrap()})
			return nil // keep going: report every error at once
		}, nil),
	}
	files, err := comp.Compile(ctx, name)
	var ewp reporter.ErrorWithPos
	if len(errs) == 0 && errors.As(err, &ewp) {
		pos := ewp.GetPosition()
		errs = append(errs, &SourceError{File: res.display(pos.Filename), Line: pos.Line, Column: pos.Col, Err: ewp.Unwrap()})
	}
	if len(errs) > 0 {
		return nil, &inputError{fmt.Errorf("compile %s:\n%w", cfg.File, errors.Join(errs...))}
	}
	if err != nil {
		return nil, fmt.Errorf("compile %s: %w", cfg.File, err)
	}
	p := &Parsed{Name: name, Desc: files[0], OnDisk: res.snapshot()}
	collectFiles(files[0], map[string]bool{}, &p.Files)
	return p, nil
}

// importName finds the import path the file lies in, as protoc does, and
// returns its name relative to it with the import paths to search.
func importName(cfg ParseConfig) (string, []string, error) {
	abs, err := filepath.Abs(cfg.File)
	if err != nil {
		return "", nil, fmt.Errorf("resolve %s: %w", cfg.File, err)
	}
	paths := append([]string(nil), cfg.ImportPaths...)
	for _, ip := range paths {
		ipAbs, err := filepath.Abs(ip)
		if err != nil {
			return "", nil, fmt.Errorf("resolve import path %s: %w", ip, err)
		}
		if st, err := os.Stat(ipAbs); err != nil || !st.IsDir() {
			return "", nil, badInput("import path %s is not a directory", ip)
		}
		if rel, err := filepath.Rel(ipAbs, abs); err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
			return filepath.ToSlash(rel), paths, nil
		}
	}
	// Not under any -I: its own directory is searched last, like goctl.
	return filepath.Base(abs), append(paths, filepath.Dir(cfg.File)), nil
}

// diskResolver reads .proto files from import paths and remembers where
// each was found, so that errors and callers can name the real path.
type diskResolver struct {
	paths []string
	// root is the import name of the file being compiled, rootPath that
	// file: the name always means it, even when an import path holds
	// another file of that name (else that one would be compiled).
	root, rootPath string
	mu             sync.Mutex
	found          map[string]string
}

func (r *diskResolver) FindFileByPath(name string) (protocompile.SearchResult, error) {
	if filepath.IsAbs(name) || strings.HasPrefix(name, "../") || strings.Contains(name, "/../") {
		return protocompile.SearchResult{}, fmt.Errorf("import %q must be relative to an import path", name)
	}
	var candidates []string
	if name == r.root {
		candidates = []string{r.rootPath}
	} else {
		for _, ip := range r.paths {
			candidates = append(candidates, filepath.Join(ip, filepath.FromSlash(name)))
		}
	}
	for _, p := range candidates {
		data, err := os.ReadFile(p)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return protocompile.SearchResult{}, fmt.Errorf("read %s: %w", p, err)
		}
		r.mu.Lock()
		r.found[name] = p
		r.mu.Unlock()
		return protocompile.SearchResult{Source: bytes.NewReader(data)}, nil
	}
	return protocompile.SearchResult{}, fmt.Errorf("%q not found in import paths %s (add one with -I): %w",
		name, strings.Join(r.paths, ", "), fs.ErrNotExist)
}

func (r *diskResolver) display(name string) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if p, ok := r.found[name]; ok {
		return p
	}
	return name
}

func (r *diskResolver) snapshot() map[string]string {
	r.mu.Lock()
	defer r.mu.Unlock()
	m := make(map[string]string, len(r.found))
	for k, v := range r.found {
		m[k] = v
	}
	return m
}

// collectFiles appends fd's imports depth first, then fd, each once.
func collectFiles(fd protoreflect.FileDescriptor, seen map[string]bool, out *[]*descriptorpb.FileDescriptorProto) {
	if seen[fd.Path()] {
		return
	}
	seen[fd.Path()] = true
	imports := fd.Imports()
	for i := range imports.Len() {
		collectFiles(imports.Get(i).FileDescriptor, seen, out)
	}
	if r, ok := fd.(linker.Result); ok {
		*out = append(*out, r.FileDescriptorProto())
		return
	}
	*out = append(*out, protodesc.ToFileDescriptorProto(fd))
}

// sortedKeys returns m's keys in order.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
