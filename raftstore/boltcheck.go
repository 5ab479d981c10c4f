package raftstore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"os"
	"runtime/debug"

	"go.etcd.io/bbolt"
)

// A damaged bbolt file (raft-wal's wal-meta.db, or the raft.db of an
// agent from before raft-wal) must stop the agent with an error, not a
// crash: bbolt maps the file and trusts it, so a truncated file faults
// (SIGBUS) and a corrupt page panics, some of it in goroutines bbolt
// starts while it opens a file for writing. openLog and openLegacyLog
// therefore check an existing file in three steps before it is opened:
//
//  1. both meta pages, read with plain file reads: bbolt's magic, version
//     and checksum, and that the file is as long as they say. bbolt would
//     silently fall back to the older meta page when the newer one fails
//     its checksum, losing the last committed transaction: for Raft that
//     can be an acknowledged entry or a vote, so it is refused as well.
//     (A meta page is 80 bytes at the start of a page: a torn write of it
//     at power loss is not expected.)
//  2. every page reachable from the root, by reading every key and value
//     through a read-only bbolt handle, on this goroutine, with faults
//     turned into panics and recovered;
//  3. the open itself, with panics recovered.

// bbolt's file format (go.etcd.io/bbolt/internal/common), in the host's
// byte order: a page header of id (8), flags (2), count (2), overflow (4),
// then, on pages 0 and 1, the meta.
const (
	boltMagic          = 0xED0CDAED
	boltVersion        = 2
	boltMetaPageFlag   = 0x04
	boltPageHeaderSize = 16
	boltMetaSize       = 56 // magic .. txid, the part the checksum covers
	boltNoFreelist     = ^uint64(0)
	boltMinPageSize    = 512
	boltMaxPageSize    = 1 << 24
)

type boltMeta struct {
	pageSize       uint32
	root, freelist uint64
	pages          uint64 // high water mark: pages in use
	txid           uint64
}

// corruptErr is the error for a raft log that cannot be used. member names
// the agent in the advice, "NAME" when unknown.
func corruptErr(path, member, detail string) error {
	if member == "" {
		member = "NAME"
	}
	return fmt.Errorf("%w: raft log %s is corrupt or truncated (%s): restore the data dir from a backup, or remove it and rejoin as a new member (zrpcctl raft remove-peer %s on the cluster first)",
		ErrCorruptStore, path, detail, member)
}

// checkBoltMeta checks step 1 on the file at path of size bytes.
func checkBoltMeta(f io.ReaderAt, size int64) error {
	m0, err := readBoltMeta(f, 0, 0)
	if err != nil {
		return fmt.Errorf("meta page 0: %w", err)
	}
	if size < 2*int64(m0.pageSize) {
		return fmt.Errorf("file has %d bytes, less than two pages of %d", size, m0.pageSize)
	}
	m1, err := readBoltMeta(f, 1, m0.pageSize)
	if err != nil {
		return fmt.Errorf("meta page 1: %w", err)
	}
	if m1.pageSize != m0.pageSize {
		return fmt.Errorf("meta pages disagree on the page size (%d and %d)", m0.pageSize, m1.pageSize)
	}
	for i, m := range []boltMeta{m0, m1} {
		if need := int64(m.pages) * int64(m.pageSize); m.pages > uint64(size) || size < need {
			return fmt.Errorf("meta page %d (transaction %d) needs %d pages of %d bytes, the file has %d bytes",
				i, m.txid, m.pages, m.pageSize, size)
		}
	}
	return nil
}

var errNotBolt = errors.New("not a bbolt file")

func readBoltMeta(f io.ReaderAt, id uint64, pageSize uint32) (boltMeta, error) {
	var buf [boltPageHeaderSize + boltMetaSize + 8]byte
	if _, err := f.ReadAt(buf[:], int64(id)*int64(pageSize)); err != nil {
		if errors.Is(err, io.EOF) {
			return boltMeta{}, fmt.Errorf("%w: file ends inside it", errNotBolt)
		}
		return boltMeta{}, err
	}
	e := binary.NativeEndian
	meta := buf[boltPageHeaderSize:]
	if e.Uint32(meta[0:]) != boltMagic {
		return boltMeta{}, fmt.Errorf("%w: no bbolt magic", errNotBolt)
	}
	if v := e.Uint32(meta[4:]); v != boltVersion {
		return boltMeta{}, fmt.Errorf("bbolt format version %d, want %d", v, boltVersion)
	}
	h := fnv.New64a()
	h.Write(meta[:boltMetaSize])
	if sum := e.Uint64(meta[boltMetaSize:]); sum != h.Sum64() {
		return boltMeta{}, errors.New("checksum mismatch")
	}
	m := boltMeta{
		pageSize: e.Uint32(meta[8:]),
		root:     e.Uint64(meta[16:]),
		freelist: e.Uint64(meta[32:]),
		pages:    e.Uint64(meta[40:]),
		txid:     e.Uint64(meta[48:]),
	}
	switch {
	case e.Uint64(buf[0:]) != id || e.Uint16(buf[8:])&boltMetaPageFlag == 0:
		return m, errors.New("page header is not its meta page's")
	case m.pageSize < boltMinPageSize || m.pageSize > boltMaxPageSize || m.pageSize&(m.pageSize-1) != 0:
		return m, fmt.Errorf("page size %d", m.pageSize)
	case pageSize != 0 && m.pageSize != pageSize:
		return m, fmt.Errorf("page size %d, meta page 0 says %d", m.pageSize, pageSize)
	case m.pages < 3 || m.root < 2 || m.root >= m.pages || (m.freelist != boltNoFreelist && (m.freelist < 2 || m.freelist >= m.pages)):
		return m, fmt.Errorf("root page %d or freelist page %d outside the %d pages in use", m.root, m.freelist, m.pages)
	}
	return m, nil
}

// walkBolt checks step 2: it opens path read-only and reads every key and
// value, turning a panic or a memory fault into an error.
func walkBolt(path string, bopts bbolt.Options) (err error) {
	bopts.ReadOnly = true
	bopts.PreLoadFreelist = false
	db, err := guardBolt(func() (*bbolt.DB, error) { return bbolt.Open(path, 0o400, &bopts) })
	if err != nil {
		return err
	}
	defer func() {
		if cerr := closeBolt(db); err == nil {
			err = cerr
		}
	}()
	_, err = guardBolt(func() (*bbolt.DB, error) {
		return nil, db.View(func(tx *bbolt.Tx) error {
			return tx.ForEach(func(_ []byte, b *bbolt.Bucket) error { return walkBucket(b, 0) })
		})
	})
	return err
}

func walkBucket(b *bbolt.Bucket, depth int) error {
	if depth > 16 {
		return errors.New("buckets nested too deep")
	}
	var sum byte
	return b.ForEach(func(k, v []byte) error {
		if v == nil {
			if child := b.Bucket(k); child != nil {
				return walkBucket(child, depth+1)
			}
			return nil
		}
		// Touch every byte, so that a value past the end of the file
		// faults here rather than later in raft.
		for _, c := range v {
			sum ^= c
		}
		return nil
	})
}

// errPanic is wrapped by guard's error for a recovered panic.
var errPanic = errors.New("panic")

// guard runs f on this goroutine with memory faults turned into panics,
// and turns a panic into an error wrapping errPanic: bbolt and raft-wal
// trust the files they read.
func guard[T any](f func() (T, error)) (v T, err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			var zero T
			v, err = zero, fmt.Errorf("%w reading it: %v", errPanic, r)
		}
	}()
	return f()
}

// guardBolt is guard for bbolt calls.
func guardBolt(f func() (*bbolt.DB, error)) (*bbolt.DB, error) { return guard(f) }

func closeBolt(db *bbolt.DB) error {
	_, err := guardBolt(func() (*bbolt.DB, error) { return nil, db.Close() })
	return err
}

// checkBoltFile runs steps 1 and 2 on the existing file at path.
func checkBoltFile(path string, bopts bbolt.Options) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if err := checkBoltMeta(f, fi.Size()); err != nil {
		return err
	}
	return walkBolt(path, bopts)
}
