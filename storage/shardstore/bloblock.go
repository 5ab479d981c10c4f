package shardstore

import "sync"

// blobLocks hands out one lock per blob: the writes of a blob (stage,
// commit) hold it shared, its deletes (Delete, DeleteBlob) exclusively.
// It is one lock per blob, not a lock per stripe of blobs, because a
// write holds it through its disk calls: a disk hung in a write or an
// fsync of one blob must keep only that blob's deletes waiting, not those
// of every blob hashed alike, nor (a waiting delete holding off new
// holders of an RWMutex) their writes too. A blob's entry lives while its
// lock is held or awaited.
type blobLocks struct {
	mu     sync.Mutex
	byBlob map[string]*blobLock
}

// blobLock is the lock of one blob; users counts those holding or
// awaiting it, under blobLocks.mu.
type blobLock struct {
	sync.RWMutex
	users int
}

// get returns blob's lock, counting its caller as one of its users.
func (l *blobLocks) get(blob string) *blobLock {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.byBlob == nil {
		l.byBlob = make(map[string]*blobLock)
	}
	bl := l.byBlob[blob]
	if bl == nil {
		bl = &blobLock{}
		l.byBlob[blob] = bl
	}
	bl.users++
	return bl
}

// put ends its caller's use of blob's lock bl, unlocked.
func (l *blobLocks) put(blob string, bl *blobLock) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if bl.users--; bl.users == 0 {
		delete(l.byBlob, blob)
	}
}

// rlockBlob takes blob's lock shared, for a write of the blob, and
// returns its unlock.
func (s *Store) rlockBlob(blob string) (unlock func()) {
	bl := s.blobLocks.get(blob)
	bl.RLock()
	return func() {
		bl.RUnlock()
		s.blobLocks.put(blob, bl)
	}
}

// lockBlob takes blob's lock exclusively, for a delete of the blob, and
// returns its unlock.
func (s *Store) lockBlob(blob string) (unlock func()) {
	bl := s.blobLocks.get(blob)
	bl.Lock()
	return func() {
		bl.Unlock()
		s.blobLocks.put(blob, bl)
	}
}
