package shardstore

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// stagedFile is a shard written by Stage: a temporary file whose fsync
// runs in the background.
type stagedFile struct {
	tmp    string
	size   int64
	at     time.Time
	synced *syncResult
}

// syncResult is the outcome of a background fsync, once done is closed.
type syncResult struct {
	done chan struct{}
	err  error
}

// StagedShard is a shard written by Stage and not yet committed.
type StagedShard struct {
	ID ID
	At time.Time
}

// Stage writes a shard of a put in progress to a temporary file and starts
// its fsync in the background, so that the disk writes it back while the
// put goes on. A put stages many shards and then makes them durable and
// visible together with CommitStaged, which waits for those fsyncs and
// renames: no rename and no directory fsync per shard, as Put needs. A staged shard is not readable (Get, Stat, Verify and Walk do not
// see it) until it is committed; Discard, DeleteBlob or, after a crash,
// Open remove it. It counts in Usage from the moment it is staged.
func (s *Store) Stage(h Header, payload []byte) error {
	if err := checkPut(&h, payload); err != nil {
		return err
	}
	size := int64(HeaderSize + len(payload))
	if err := s.reserve(h.ID, size, 1); err != nil {
		return err
	}
	bl := s.blobLock(h.ID.Blob)
	bl.RLock()
	tmp, err := s.writeTemp(s.Path(h.ID), &h, payload, false)
	bl.RUnlock()
	if err != nil {
		s.release(size, 1)
		if errors.Is(err, syscall.ENOSPC) {
			return fmt.Errorf("shardstore: stage %s: %w: %w", h.ID, ErrNoSpace, err)
		}
		return fmt.Errorf("shardstore: stage %s: %w", h.ID, err)
	}
	res := &syncResult{done: make(chan struct{})}
	go func() {
		s.syncSem <- struct{}{}
		res.err = s.syncFile(tmp)
		<-s.syncSem
		close(res.done)
	}()
	s.stagedMu.Lock()
	byID := s.staged[h.ID.Blob]
	if byID == nil {
		byID = make(map[ID]stagedFile)
		s.staged[h.ID.Blob] = byID
	}
	old, had := byID[h.ID]
	byID[h.ID] = stagedFile{tmp: tmp, size: size, at: time.Now(), synced: res}
	s.stagedMu.Unlock()
	if had {
		s.dropStaged(old)
	}
	return nil
}

// syncParallel bounds the background fsyncs of staged shards; the file
// system's journal commits concurrent fsyncs together.
const syncParallel = 16

// CommitStaged makes every staged shard of blob durable and readable: it
// waits for their fsyncs, renames each over its final name and fsyncs the
// blob's directory once. It returns how many shards it
// committed. On an error the blob's staged shards that were not committed
// are removed.
func (s *Store) CommitStaged(blob string) (int, error) {
	if err := checkBlob(blob); err != nil {
		return 0, err
	}
	s.stagedMu.Lock()
	files := s.staged[blob]
	delete(s.staged, blob)
	s.stagedMu.Unlock()
	if len(files) == 0 {
		return 0, nil
	}
	ids := make([]ID, 0, len(files))
	for id := range files {
		ids = append(ids, id)
	}
	errs := make([]error, len(ids))
	for i, id := range ids {
		r := files[id].synced
		<-r.done
		errs[i] = r.err
	}
	bl := s.blobLock(blob)
	bl.RLock()
	defer bl.RUnlock()
	committed := 0
	var first error
	for i, id := range ids {
		f := files[id]
		err := errs[i]
		if err == nil && first == nil {
			err = s.rename(id, f)
		}
		if err != nil || first != nil {
			s.dropStaged(f)
			if first == nil {
				first = fmt.Errorf("shardstore: commit staged %s: %w", id, err)
			}
			continue
		}
		committed++
	}
	if first != nil {
		return committed, first
	}
	if err := syncDir(s.blobDir(blob)); err != nil {
		return committed, fmt.Errorf("shardstore: commit staged shards of %s: %w", blob, err)
	}
	return committed, nil
}

// rename moves a synced staged file over shard id's final name.
func (s *Store) rename(id ID, f stagedFile) error {
	sl := s.shardLock(id)
	sl.Lock()
	defer sl.Unlock()
	path := s.Path(id)
	old, existed, err := fileSize(path)
	if err != nil {
		return err
	}
	if err := os.Rename(f.tmp, path); err != nil {
		return err
	}
	if existed {
		s.release(old, 1)
	}
	return nil
}

func (s *Store) syncFile(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	return s.fsync(f)
}

// Staged lists the shards staged and not committed, for orphan collection.
func (s *Store) Staged() []StagedShard {
	s.stagedMu.Lock()
	defer s.stagedMu.Unlock()
	var out []StagedShard
	for _, byID := range s.staged {
		for id, f := range byID {
			out = append(out, StagedShard{ID: id, At: f.at})
		}
	}
	return out
}

// Discard removes a staged shard; it is a no-op when id is not staged.
func (s *Store) Discard(id ID) { s.discard(id, time.Time{}) }

// DiscardIfSame removes a staged shard only if it is the one staged at at
// (as Staged listed it), not one staged again since, and reports whether
// it did.
func (s *Store) DiscardIfSame(id ID, at time.Time) bool { return s.discard(id, at) }

// discard removes staged shard id; a non-zero at must match its staging
// time.
func (s *Store) discard(id ID, at time.Time) bool {
	s.stagedMu.Lock()
	f, ok := s.staged[id.Blob][id]
	ok = ok && (at.IsZero() || f.at.Equal(at))
	if ok {
		delete(s.staged[id.Blob], id)
		if len(s.staged[id.Blob]) == 0 {
			delete(s.staged, id.Blob)
		}
	}
	s.stagedMu.Unlock()
	if ok {
		s.dropStaged(f)
		_ = os.Remove(filepath.Dir(f.tmp)) // only when empty
	}
	return ok
}

// discardStaged removes every staged shard of blob.
func (s *Store) discardStaged(blob string) {
	s.stagedMu.Lock()
	files := s.staged[blob]
	delete(s.staged, blob)
	s.stagedMu.Unlock()
	for _, f := range files {
		s.dropStaged(f)
	}
}

// dropStaged removes a staged file and gives back its space.
func (s *Store) dropStaged(f stagedFile) {
	os.Remove(f.tmp)
	s.release(f.size, 1)
}
