package shardstore

import (
	"cmp"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"slices"
)

// A staged part taken out of the staged set becomes the part file: renamed
// into place when there is none (fsynced first, outside the part's and
// the blob's lock), or merged into the existing one, its blocks written
// in place and the file fsynced outside the part's and the blob's lock.

// commitPart makes a staged part durable and readable and returns how
// many shards it holds; on an error the staged part is removed. The
// caller does not hold the blob lock: it is taken, shared, only to rename
// or merge the part, never through an fsync. The caller fsyncs the
// directory.
func (s *Store) commitPart(sp *stagedPart) (int, error) {
	sp.mu.Lock()
	if sp.gone {
		sp.mu.Unlock()
		return 0, nil
	}
	n := len(sp.blocks)
	sp.mu.Unlock()
	if n == 0 {
		sp.drop(s)
		return 0, nil
	}
	if err := s.presync(sp); err != nil {
		sp.drop(s)
		return 0, fmt.Errorf("part %s: %w", sp.path, noSpace(err))
	}
	into, err := s.place(sp)
	if errors.Is(err, errUnsynced) {
		// The part file presync found is gone since, or is replaced
		// (its header went bad, or lays out another block size): the
		// staged part is renamed into place after all, fsynced first
		// outside the locks.
		if err = s.syncStaged(sp); err == nil {
			into, err = s.place(sp)
		}
	}
	if into != nil {
		// Fsynced outside the part's and the blob's lock, as presync
		// is: readers of every part file under that lock would
		// otherwise wait as long as the fsync, and deletes of the blob
		// too. They may read the merged blocks before they are durable,
		// as they would once a failed fsync returned; the commit is
		// answered only after it. A delete meanwhile deletes them, as
		// one after the commit would.
		err = s.fsync(into)
		into.Close()
	}
	if err != nil {
		sp.drop(s)
		return 0, fmt.Errorf("part %s: %w", sp.path, noSpace(err))
	}
	return n, nil
}

// place merges the staged part into its part file (mergeInto), or renames
// it into place when there is none or it is replaced (renameStaged),
// under the blob's lock (shared) and the part's, and returns the merged
// file for the caller to fsync and close. A part to rename that is not
// fsynced yet is errUnsynced: its fsync is not to run under the locks.
func (s *Store) place(sp *stagedPart) (*os.File, error) {
	unlock := s.rlockBlob(sp.hdr.Blob)
	defer unlock()
	pl := s.partLock(sp.hdr.Blob, sp.hdr.Index)
	pl.Lock()
	defer pl.Unlock()
	into, err := s.mergeInto(sp)
	if err == nil && into == nil {
		err = s.renameStaged(sp)
	}
	return into, err
}

// errUnsynced: a staged part to be renamed into place was not fsynced
// (presync found a part file to merge it into); commitPart fsyncs it,
// outside the locks, and places it again.
var errUnsynced = errors.New("staged part not fsynced before its rename")

// presync fsyncs a staged part, taken out of the staged set, whose part
// file does not exist yet, before the part's and the blob's lock are
// taken: readers of every part file under that lock, and deletes of the
// blob, would otherwise wait as long as the fsync, a hung disk's for as
// long as it hangs. One whose part file exists is merged into that file
// (mergeInto), which is fsynced instead.
func (s *Store) presync(sp *stagedPart) error {
	if _, err := os.Lstat(sp.path); !errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return s.syncStaged(sp)
}

// syncStaged writes out what the staged part gathered and fsyncs it.
func (s *Store) syncStaged(sp *stagedPart) error {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	if err := sp.settle(); err != nil {
		return err
	}
	if err := s.fsync(sp.f); err != nil {
		return err
	}
	sp.synced = true
	return nil
}

// renameStaged renames a staged part, fsynced (syncStaged), over its
// final name; the blob's lock (shared) and the part's are held. One not
// fsynced is not renamed: errUnsynced. A DeleteBlob of the blob since the
// part was taken out of the staged set removed its temporary file:
// nothing is renamed then, and the commit fails.
func (s *Store) renameStaged(sp *stagedPart) error {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	if err := sp.stillThere(); err != nil {
		return err
	}
	if !sp.synced {
		return errUnsynced
	}
	old, err := fileSize(sp.path)
	if err != nil {
		return err
	}
	if err := os.Rename(sp.tmp, sp.path); err != nil {
		return err
	}
	sp.gone = true
	sp.f.Close()
	// A part with a bad or different header, replaced, gives back what
	// it was counted with.
	k := partKey{sp.hdr.Blob, sp.hdr.Index}
	s.partGone(k, old)
	s.partCommitted(k, len(sp.blocks))
	return nil
}

// stillThere fails when the staged part's temporary file is no longer
// the file it writes (removed by a DeleteBlob of its blob); sp's lock is
// held.
func (sp *stagedPart) stillThere() error {
	named, err := os.Lstat(sp.tmp)
	if err == nil {
		var open os.FileInfo
		if open, err = sp.f.Stat(); err == nil && !os.SameFile(named, open) {
			err = fs.ErrNotExist
		}
	}
	if err != nil {
		return fmt.Errorf("the staged part file %s was removed while it was committed (its blob deleted meanwhile?); nothing of it is committed: %w: %w",
			sp.tmp, ErrNotFound, err)
	}
	return nil
}

// mergeInto writes the staged blocks into the existing part file in place,
// when there is one with the same header, and returns that file, open,
// for the caller to fsync (outside the part's lock) and close; nil when
// there is none. The other blocks of that file are not touched. A file
// whose header fails its checks, or that the disk cannot read (EIO),
// is replaced by the staged part (errUnsynced while that part is not
// fsynced); one whose header cannot be read for another reason (another
// read error, or not a regular file) is kept, and the merge fails. The
// part's lock is held.
func (s *Store) mergeInto(sp *stagedPart) (merged *os.File, err error) {
	f, err := os.OpenFile(sp.path, os.O_RDWR, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer func() {
		if merged == nil {
			f.Close()
		}
	}()
	pf, err := readPart(f, sp.path, sp.hdr.Blob, sp.hdr.Index)
	if err != nil && !errors.Is(err, ErrCorrupt) {
		// Nothing is known of its blocks: replaced, every one of them
		// would be lost, readable or not.
		return nil, fmt.Errorf("the existing part file cannot be read now; it is kept, with its blocks, and the staged shards are not committed (check the file and its disk): %w", err)
	}
	if err != nil || pf.hdr != sp.hdr {
		// Unreadable, or laid out for another block size: the staged
		// part replaces it, and any block it had is found missing and
		// rebuilt. Not before it is fsynced (renameStaged).
		sp.mu.Lock()
		synced := sp.synced
		sp.mu.Unlock()
		if !synced {
			return nil, errUnsynced
		}
		s.log.Warn("part file replaced by a rewritten one", "path", sp.path, "err", err)
		return nil, nil
	}
	sp.mu.Lock()
	defer sp.mu.Unlock()
	if err := sp.settle(); err != nil {
		return nil, err
	}
	held, err := pf.held()
	if err != nil {
		return nil, err
	}
	size, dShards, err := s.mergeBlocks(pf, sp, held)
	// What the file gained or lost stays counted, on an error too: the
	// blocks written before it are in the file, as Open would count them.
	s.partChanged(partKey{sp.hdr.Blob, sp.hdr.Index}, size-pf.size, dShards)
	if err != nil {
		return nil, err // commitPart drops the staged part, and its share of the usage
	}
	sp.gone = true
	sp.f.Close()
	os.Remove(sp.tmp)
	s.release(sp.size, len(sp.blocks))
	return f, nil
}

// mergeBlocks writes the staged blocks of sp into the part file pf, which
// holds the blocks held, in block order; the caller fsyncs it. A short block
// (the blob's last) written last ends the file: bytes left past it would
// make it read as corrupt however often it is rewritten, so they are cut
// off. It returns the file's size and how many blocks it gained (or lost,
// cut off) since pf was read, on an error too.
func (s *Store) mergeBlocks(pf *partFile, sp *stagedPart, held []uint32) (size int64, dShards int, err error) {
	has := make(map[uint32]bool, len(held))
	for _, b := range held {
		has[b] = true
	}
	size = pf.size
	defer func() {
		if info, serr := pf.f.Stat(); serr == nil {
			size = info.Size()
		}
		if err == nil {
			return
		}
		// A write that failed may have put part of its frame in the
		// file (a disk that filled mid-write): Open counts a block whose
		// frame header is not zero, so count what the file holds now.
		now := *pf
		now.size = size
		if blocks, _, herr := now.heldFrames(); herr == nil {
			dShards = len(blocks) - len(held)
		}
	}()
	blocks := slices.SortedFunc(maps.Keys(sp.blocks), cmp.Compare[uint32])
	staged := &partFile{f: sp.f, path: sp.tmp, hdr: sp.hdr, size: sp.size}
	var buf []byte
	var h Header
	for _, b := range blocks {
		h, buf, err = staged.read(b, buf)
		if err != nil {
			return size, dShards, fmt.Errorf("reread staged block %d: %w", b, err)
		}
		if err := s.injected("write", sp.path); err != nil {
			return size, dShards, err
		}
		if err := writeFramePieces(pf.f, &pf.hdr, &h, [][]byte{buf}); err != nil {
			return size, dShards, err
		}
		size = max(size, pf.hdr.offset(b)+frameHeaderSize+int64(h.ShardLen))
		if !has[b] {
			has[b] = true
			dShards++
		}
	}
	last := blocks[len(blocks)-1]
	if end := pf.hdr.offset(last) + frameHeaderSize + int64(h.ShardLen); h.BlockLen < h.BlockSize && size > end {
		if err := s.injected("truncate", sp.path); err != nil {
			return size, dShards, err
		}
		if err := pf.f.Truncate(end); err != nil {
			return size, dShards, err
		}
		size = end
		for b := range has {
			if b > last {
				dShards--
			}
		}
	}
	return size, dShards, nil
}

// fileSize is the size of the file at path, 0 when there is none.
func fileSize(path string) (int64, error) {
	info, err := os.Lstat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return 0, nil
	case err != nil:
		return 0, err
	}
	return info.Size(), nil
}
