package shardstore

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Walk calls fn for every stored shard with the bytes of its slot (frame
// header and payload) and its part file's modification time, in blob id
// order and then by index and block. It stops at fn's first error and
// returns it. Walk takes no lock: a shard put or deleted during the walk
// may or may not be seen. Shards that read as corrupt are listed too (the
// scrubber finds them with Verify), those whose frame header the disk
// cannot read among them; part files whose header is bad are not (their
// blocks cannot be told apart), nor those whose blocks cannot be listed
// for another reason: that is logged, and the walk goes on.
func (s *Store) Walk(fn func(id ID, size int64, mod time.Time) error) error {
	return s.WalkStamped(func(id ID, st Stamp) error {
		return fn(id, st.slot, st.Mod())
	})
}

// Stamp identifies one version of a part file, as Walk saw it: a file
// written since (a block rebuilt in it, a new file renamed over it) has
// another Stamp.
type Stamp struct {
	info fs.FileInfo
	slot int64
}

// Size is the part file's size, header included.
func (st Stamp) Size() int64 { return st.info.Size() }

// Mod is the part file's modification time.
func (st Stamp) Mod() time.Time { return st.info.ModTime() }

// same reports whether info is the file st was taken of, unchanged.
func (st Stamp) same(info fs.FileInfo) bool {
	return st.info != nil && os.SameFile(st.info, info) && info.ModTime().Equal(st.info.ModTime()) && info.Size() == st.info.Size()
}

// WalkStamped is Walk with each shard's part file's Stamp, for
// DeleteIfSame.
func (s *Store) WalkStamped(fn func(id ID, st Stamp) error) error {
	return s.WalkParts(PartWalk{Stamped: fn})
}

// WalkBadParts calls fn for every part file whose header is bad (its
// blocks cannot be listed), with its Stamp: orphan collection removes
// those of blobs that no longer exist with DeleteIfSame.
func (s *Store) WalkBadParts(fn func(blob string, index uint16, st Stamp) error) error {
	return s.WalkParts(PartWalk{Bad: fn})
}

// PartWalk is what WalkParts calls.
type PartWalk struct {
	Stamped func(id ID, st Stamp) error                     // as WalkStamped's fn
	Bad     func(blob string, index uint16, st Stamp) error // as WalkBadParts's fn
	// Done, when set, is called after each part file, whatever it
	// held: the walk's progress, for a caller that gives up on a walk
	// that makes none (a hung disk) but not on one that takes long (a
	// large store). An error it returns stops the walk (the caller
	// stopped waiting for it), and WalkParts returns it.
	Done func() error
}

// WalkParts is WalkStamped and WalkBadParts in one walk of the store's
// directory, each part file opened once: orphan collection's. A nil
// Stamped or Bad is not called.
func (s *Store) WalkParts(w PartWalk) error {
	return s.walk(walkFuncs{part: func(path, blob string, index uint16, info fs.FileInfo) error {
		if err := s.walkPart(path, blob, index, info, w); err != nil {
			return err
		}
		if w.Done != nil {
			return w.Done()
		}
		return nil
	}})
}

// walkPart opens the part file at path and calls w.Stamped for every
// shard it holds, with the file's Stamp, or w.Bad for the file when its
// header is bad.
func (s *Store) walkPart(path, blob string, index uint16, info fs.FileInfo, w PartWalk) error {
	pf, err := s.openStored(path, blob, index)
	switch {
	case errors.Is(err, ErrCorrupt) && w.Bad != nil:
		return w.Bad(blob, index, Stamp{info: info})
	case err != nil:
		// Deleted meanwhile, unreadable for now, or a bad header no one
		// asked for (logged at Open, left to DeleteBlob).
		return nil
	case w.Stamped == nil:
		pf.close()
		return nil
	}
	held, err := pf.held()
	slot := pf.hdr.slotLen()
	pf.close()
	if err != nil {
		s.log.Warn("could not list the blocks of a part file; the walk goes on without them", "path", path, "err", err)
		return nil
	}
	for _, b := range held {
		if err := w.Stamped(ID{Blob: blob, Block: b, Index: index}, Stamp{info: info, slot: slot}); err != nil {
			return err
		}
	}
	return nil
}

// isTemp reports whether name is a temporary file of a write.
func isTemp(name string) bool {
	return strings.HasPrefix(name, ".") && strings.HasSuffix(name, tmpSuffix)
}

// walkFuncs are walk's callbacks; nil ones are not called.
type walkFuncs struct {
	part   func(path, blob string, index uint16, info fs.FileInfo) error
	legacy func(path, blob string) // a shard file of the older layout
	temp   func(path string)       // a temporary file of a write
	other  func(path string)       // anything else
}

// walk calls fns for every entry of the store's directory tree, blobs in
// id order, part files by index.
func (s *Store) walk(fns walkFuncs) error {
	prefixes, err := os.ReadDir(s.dir)
	if err != nil {
		return fmt.Errorf("shardstore: walk %s: %w", s.dir, err)
	}
	for _, p := range prefixes {
		pdir := filepath.Join(s.dir, p.Name())
		if !p.IsDir() || len(p.Name()) != 2 {
			call(fns.other, pdir)
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
				call(fns.other, bdir)
				continue
			}
			if err := s.walkBlob(bdir, b.Name(), fns); err != nil {
				return err
			}
		}
	}
	return nil
}

func (s *Store) walkBlob(dir, blob string, fns walkFuncs) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("shardstore: walk %s: %w", dir, err)
	}
	var parts []uint16
	for _, e := range entries {
		path := filepath.Join(dir, e.Name())
		index, isPart := parsePartName(e.Name())
		_, _, isLegacy := parseFileName(e.Name())
		switch {
		case isPart && e.Type().IsRegular():
			parts = append(parts, index)
		case isLegacy && e.Type().IsRegular():
			if fns.legacy != nil {
				fns.legacy(path, blob)
			}
		case isTemp(e.Name()) && e.Type().IsRegular():
			call(fns.temp, path)
		default:
			call(fns.other, path)
		}
	}
	if fns.part == nil {
		return nil
	}
	slices.Sort(parts)
	for _, index := range parts {
		path := filepath.Join(dir, partName(index))
		info, err := os.Lstat(path)
		if errors.Is(err, fs.ErrNotExist) {
			continue // deleted meanwhile
		}
		if err != nil {
			return fmt.Errorf("shardstore: walk %s: %w", path, err)
		}
		if err := fns.part(path, blob, index, info); err != nil {
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
