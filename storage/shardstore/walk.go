package shardstore

import (
	"cmp"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Walk calls fn for every stored shard with its file's size (header
// included) and modification time, in blob id order and then by block and
// index. It stops at fn's first error and returns it. Walk takes no lock: a
// shard put or deleted during the walk may or may not be seen. Shards that
// read as corrupt are listed too (the scrubber finds them with Verify).
func (s *Store) Walk(fn func(id ID, size int64, mod time.Time) error) error {
	return s.walk(func(_ string, id ID, info fs.FileInfo) error {
		return fn(id, info.Size(), info.ModTime())
	}, nil, nil)
}

// Stamp identifies one version of a shard file, as Walk saw it: a file
// written over it since (a rewrite renames a new file over the name) has
// another Stamp.
type Stamp struct{ info fs.FileInfo }

// Size is the file's size, header included.
func (st Stamp) Size() int64 { return st.info.Size() }

// Mod is the file's modification time.
func (st Stamp) Mod() time.Time { return st.info.ModTime() }

// same reports whether info is the file st was taken of, unchanged.
func (st Stamp) same(info fs.FileInfo) bool {
	return st.info != nil && os.SameFile(st.info, info) && info.ModTime().Equal(st.info.ModTime()) && info.Size() == st.info.Size()
}

// WalkStamped is Walk with each file's Stamp, for DeleteIfSame.
func (s *Store) WalkStamped(fn func(id ID, st Stamp) error) error {
	return s.walk(func(_ string, id ID, info fs.FileInfo) error {
		return fn(id, Stamp{info})
	}, nil, nil)
}

// isTemp reports whether name is a temporary file of write.
func isTemp(name string) bool {
	return strings.HasPrefix(name, ".") && strings.HasSuffix(name, tmpSuffix)
}

// walk calls shard for every shard file, temp (when not nil) for every
// temporary file and other (when not nil) for every entry that is neither.
func (s *Store) walk(shard func(path string, id ID, info fs.FileInfo) error, temp, other func(path string)) error {
	prefixes, err := os.ReadDir(s.dir)
	if err != nil {
		return fmt.Errorf("shardstore: walk %s: %w", s.dir, err)
	}
	for _, p := range prefixes {
		pdir := filepath.Join(s.dir, p.Name())
		if !p.IsDir() || len(p.Name()) != 2 {
			call(other, pdir)
			continue
		}
		blobs, err := os.ReadDir(pdir)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("shardstore: walk %s: %w", pdir, err)
		}
		for _, b := range blobs {
			bdir := filepath.Join(pdir, b.Name())
			if !b.IsDir() || !validBlob(b.Name()) || b.Name()[:2] != p.Name() {
				call(other, bdir)
				continue
			}
			if err := s.walkBlob(bdir, b.Name(), shard, temp, other); err != nil {
				return err
			}
		}
	}
	return nil
}

func (s *Store) walkBlob(dir, blob string, shard func(string, ID, fs.FileInfo) error, temp, other func(string)) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("shardstore: walk %s: %w", dir, err)
	}
	ids := make([]ID, 0, len(entries))
	for _, e := range entries {
		path := filepath.Join(dir, e.Name())
		block, index, ok := parseFileName(e.Name())
		switch {
		case ok && e.Type().IsRegular():
			ids = append(ids, ID{Blob: blob, Block: block, Index: index})
		case isTemp(e.Name()) && e.Type().IsRegular():
			call(temp, path)
		default:
			call(other, path)
		}
	}
	slices.SortFunc(ids, func(a, b ID) int {
		return cmp.Or(cmp.Compare(a.Block, b.Block), cmp.Compare(a.Index, b.Index))
	})
	for _, id := range ids {
		path := filepath.Join(dir, fileName(id.Block, id.Index))
		info, err := os.Lstat(path)
		if errors.Is(err, fs.ErrNotExist) {
			continue // deleted meanwhile
		}
		if err != nil {
			return fmt.Errorf("shardstore: walk %s: %w", path, err)
		}
		if err := shard(path, id, info); err != nil {
			return err
		}
	}
	return nil
}

func call(fn func(string), path string) {
	if fn != nil {
		fn(path)
	}
}
