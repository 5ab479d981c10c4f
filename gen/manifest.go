package gen

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
)

// ManifestName is the file in the output directory where gen records the
// files it wrote there and their SHA-256 as written. A later run removes
// those it no longer writes (a go_package that moved the messages, a
// renamed proto package that renamed the client and its example) and
// brings up to date the files the user owns but never changed (main.go
// importing the messages' package); a file changed since gen wrote it is
// left alone.
const ManifestName = ".zrpcgen"

// manifestMarker is the manifest's generated_by: a file without it is
// not gen's manifest.
const manifestMarker = "zrpcctl gen"

// manifestNote tells whoever opens the manifest what it is.
const manifestNote = "Generated: the files zrpcctl gen wrote in this directory, with their SHA-256 as written. " +
	"A later run removes those it no longer writes, unless changed since. Do not edit; delete it to have gen forget them."

// maxManifestBytes bounds the manifest gen reads: one line per file of
// a service is a few KiB.
const maxManifestBytes = 1 << 20

// manifest is the content of ManifestName.
type manifest struct {
	GeneratedBy string          `json:"generated_by"`
	Note        string          `json:"note"`
	Files       []manifestEntry `json:"files"`
}

// manifestEntry is one file gen wrote.
type manifestEntry struct {
	// Path is slash-separated, relative to the output directory.
	Path string `json:"path"`
	// Source is the .proto the file was generated from (Parsed.Name).
	Source string `json:"source"`
	// SHA256 is the hex SHA-256 of the content gen wrote.
	SHA256 string `json:"sha256"`
}

// written is what an earlier run recorded of the files it wrote from one
// .proto: path → SHA-256 as written. others are the entries of other
// .proto files, kept as they are.
type written struct {
	source string
	sums   map[string]string
	others []manifestEntry
}

// readManifest reads the manifest in out for the .proto source. A missing
// manifest is an empty one (an output directory gen never wrote, or
// wrote before it kept one: nothing is removed).
func readManifest(out, source string) (*written, error) {
	w := &written{source: source, sums: map[string]string{}}
	p := filepath.Join(out, ManifestName)
	f, err := os.Open(p)
	if errors.Is(err, fs.ErrNotExist) {
		return w, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", p, err)
	}
	defer f.Close()
	src, err := io.ReadAll(io.LimitReader(f, maxManifestBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", p, err)
	}
	var m manifest
	bad := func(why string) error {
		return badInput("%s is not the list of files zrpcctl gen wrote (%s); delete it and run gen again (the files an earlier run wrote and this one no longer does are then left for you to delete)", p, why)
	}
	switch {
	case len(src) > maxManifestBytes:
		return nil, bad(fmt.Sprintf("larger than %d KiB", maxManifestBytes>>10))
	case json.Unmarshal(src, &m) != nil:
		return nil, bad("not its JSON")
	case m.GeneratedBy != manifestMarker:
		return nil, bad(fmt.Sprintf("generated_by is %q", m.GeneratedBy))
	}
	for _, e := range m.Files {
		// A manifest that came with the directory (a clone) must not
		// make gen touch a file outside it.
		if !filepath.IsLocal(filepath.FromSlash(e.Path)) || path.Clean(e.Path) != e.Path || len(e.SHA256) != sha256.Size*2 {
			return nil, bad(fmt.Sprintf("entry %q", e.Path))
		}
		if e.Source == source {
			w.sums[e.Path] = e.SHA256
		} else {
			w.others = append(w.others, e)
		}
	}
	return w, nil
}

// asWritten reports whether content is what gen wrote at rel.
func (w *written) asWritten(rel string, content []byte) bool {
	sum, ok := w.sums[rel]
	return ok && sum == sha256Hex(content)
}

// stale plans what becomes of the files an earlier run wrote from this
// .proto that files no longer has: Remove while they are as written,
// Orphan once changed. Files gone since, or reached through a symbolic
// link, are left out.
func (w *written) stale(out string, files []PlannedFile) ([]PlannedFile, error) {
	planned := make(map[string]bool, len(files))
	for _, f := range files {
		planned[f.Path] = true
	}
	var stale []PlannedFile
	for _, rel := range sortedKeys(w.sums) {
		if planned[rel] || throughLink(out, rel) {
			continue
		}
		p := filepath.Join(out, filepath.FromSlash(rel))
		content, err := os.ReadFile(p)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			continue
		case err != nil:
			return nil, fmt.Errorf("read %s, generated from this .proto by an earlier run: %w", p, err)
		case w.asWritten(rel, content):
			stale = append(stale, PlannedFile{Path: rel, Action: Remove, sum: w.sums[rel]})
		default:
			stale = append(stale, PlannedFile{Path: rel, Action: Orphan})
		}
	}
	return stale, nil
}

// throughLink reports whether rel, below out, is or lies under a symbolic
// link (or cannot be checked).
func throughLink(out, rel string) bool {
	p := out
	for elem := range strings.SplitSeq(rel, "/") {
		p = filepath.Join(p, elem)
		st, err := os.Lstat(p)
		if err != nil {
			return !errors.Is(err, fs.ErrNotExist)
		}
		if st.Mode()&fs.ModeSymlink != 0 {
			return true
		}
	}
	return false
}

// next is the manifest after files were written: every file whose
// content is then what gen wrote, the earlier entries of files changed
// since (kept and orphaned ones: gen still names them), and the entries
// of other .proto files.
func (w *written) next(files []PlannedFile) []byte {
	m := manifest{GeneratedBy: manifestMarker, Note: manifestNote, Files: slices.Clone(w.others)}
	for _, f := range files {
		switch {
		case f.unrecorded:
		case f.Action == Create || f.Action == Overwrite || f.Action == Unchanged:
			m.Files = append(m.Files, manifestEntry{Path: f.Path, Source: w.source, SHA256: sha256Hex(f.Content)})
		case f.Action == Keep || f.Action == Orphan:
			if sum, ok := w.sums[f.Path]; ok {
				m.Files = append(m.Files, manifestEntry{Path: f.Path, Source: w.source, SHA256: sum})
			}
		}
	}
	slices.SortFunc(m.Files, func(a, b manifestEntry) int {
		return strings.Compare(a.Path+"\x00"+a.Source, b.Path+"\x00"+b.Source)
	})
	b, _ := json.MarshalIndent(m, "", "  ")
	return append(b, '\n')
}

func sha256Hex(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}
