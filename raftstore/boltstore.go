package raftstore

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"

	"github.com/hashicorp/raft"
	"go.etcd.io/bbolt"
)

// raft.db is the Raft log format zrpc kept before raft-wal: one bbolt file
// holding the log and the stable values. An agent that finds one migrates
// it at start (migrate.go); only reading it is left.
//
// File layout (three top-level buckets):
//
//	meta  "format" -> "zrpc-raftlog-v1"; a file without it is refused.
//	logs  8-byte big-endian log index -> log entry in the encoding
//	      decodeLog reads (version byte, type, uvarint index/term,
//	      length-prefixed data and extensions, optional varint AppendedAt
//	      unix nanos).
//	conf  stable-store key -> value as raft gave it to Set (SetUint64
//	      stored 8 big-endian bytes).
const (
	legacyLogFile = "raft.db"
	formatMarker  = "zrpc-raftlog-v1"
)

var (
	bucketLogs = []byte("logs")
	bucketConf = []byte("conf")
	bucketMeta = []byte("meta")
	keyFormat  = []byte("format")
)

// legacyUint64Keys are the stable keys raft stores with SetUint64, which
// raft.db kept big endian and raft-wal keeps little endian.
var legacyUint64Keys = map[string]bool{"CurrentTerm": true, "LastVoteTerm": true}

// legacyLog is a raft.db opened read-only.
type legacyLog struct {
	db   *bbolt.DB
	path string
}

// openLegacyLog opens the raft.db at path read-only, after checking its
// pages (checkBoltFile) and its format marker. A damaged or foreign file is
// refused with an error wrapping ErrCorruptStore and is never modified.
func openLegacyLog(path, member string) (*legacyLog, error) {
	fi, err := os.Stat(path)
	switch {
	case err != nil:
		return nil, fmt.Errorf("open raft log %s: %w", path, err)
	case !fi.Mode().IsRegular():
		return nil, fmt.Errorf("open raft log %s: %w: not a regular file", path, ErrCorruptStore)
	case fi.Size() == 0:
		return nil, corruptErr(path, member, "not a zrpc raft log: the file is empty")
	}
	bopts := bbolt.Options{Timeout: logLockTimeout, ReadOnly: true}
	if err := checkBoltFile(path, bopts); err != nil {
		return nil, boltOpenError(path, member, bopts.Timeout, err)
	}
	db, err := guardBolt(func() (*bbolt.DB, error) { return bbolt.Open(path, 0o400, &bopts) })
	if err != nil {
		return nil, boltOpenError(path, member, bopts.Timeout, err)
	}
	if err := db.View(checkFormat); err != nil {
		_ = closeBolt(db)
		return nil, fmt.Errorf("open raft log %s: %w", path, err)
	}
	return &legacyLog{db: db, path: path}, nil
}

func checkFormat(tx *bbolt.Tx) error {
	var got []byte
	if meta := tx.Bucket(bucketMeta); meta != nil {
		got = meta.Get(keyFormat)
	}
	if got == nil {
		return fmt.Errorf("%w: not a zrpc raft log (format marker missing)", ErrCorruptStore)
	}
	if string(got) != formatMarker {
		return fmt.Errorf("%w: not a zrpc raft log (format marker %.64q, want %q)", ErrCorruptStore, got, formatMarker)
	}
	for _, name := range [][]byte{bucketLogs, bucketConf} {
		if tx.Bucket(name) == nil {
			return fmt.Errorf("%w: bucket %q missing", ErrCorruptStore, name)
		}
	}
	return nil
}

// Close closes the file.
func (l *legacyLog) Close() error { return closeBolt(l.db) }

// legacyRange is what forEachBatch read.
type legacyRange struct {
	first, last uint64
	entries     int
}

// forEachBatch calls fn with the log's entries in index order, at most
// size at a time. The entries must be contiguous.
func (l *legacyLog) forEachBatch(size int, fn func([]*raft.Log) error) (legacyRange, error) {
	var r legacyRange
	err := l.db.View(func(tx *bbolt.Tx) error {
		batch := make([]*raft.Log, 0, size)
		c := tx.Bucket(bucketLogs).Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			if len(k) != 8 {
				return fmt.Errorf("%w: log key of %d bytes", ErrCorruptStore, len(k))
			}
			idx := binary.BigEndian.Uint64(k)
			e := new(raft.Log)
			if err := decodeLog(v, e); err != nil {
				return fmt.Errorf("entry %d: %w", idx, err)
			}
			switch {
			case e.Index != idx:
				return fmt.Errorf("%w: entry under key %d has index %d", ErrCorruptStore, idx, e.Index)
			case r.entries > 0 && idx != r.last+1:
				return fmt.Errorf("%w: entries %d and %d are not contiguous", ErrCorruptStore, r.last, idx)
			case r.entries == 0:
				r.first = idx
			}
			r.last = idx
			r.entries++
			if batch = append(batch, e); len(batch) == size {
				if err := fn(batch); err != nil {
					return err
				}
				batch = batch[:0]
			}
		}
		if len(batch) > 0 {
			return fn(batch)
		}
		return nil
	})
	return r, err
}

// stable returns a copy of every stable value.
func (l *legacyLog) stable() (map[string][]byte, error) {
	vals := make(map[string][]byte)
	err := l.db.View(func(tx *bbolt.Tx) error {
		return tx.Bucket(bucketConf).ForEach(func(k, v []byte) error {
			vals[string(k)] = bytes.Clone(v)
			return nil
		})
	})
	return vals, err
}

// legacyStamp is what a migration records of raft.db (size and
// modification time) to know the file again; "" if there is none.
func legacyStamp(path string) (string, error) {
	fi, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("%d %d\n", fi.Size(), fi.ModTime().UnixNano()), nil
}

const (
	logEncodingV1  = 1
	flagAppendedAt = 1 << 0
)

// decodeLog parses b into l, copying byte fields (b may be bbolt memory).
func decodeLog(b []byte, l *raft.Log) error {
	bad := func(what string) error { return fmt.Errorf("%w: decode log: %s", ErrCorruptStore, what) }
	if len(b) < 2 || b[0] != logEncodingV1 {
		return bad("truncated header or unknown encoding version")
	}
	out := raft.Log{Type: raft.LogType(b[1])}
	b = b[2:]
	var u [4]uint64 // index, term, len(data), len(extensions)
	var blob [2][]byte
	for i := range u {
		v, n := binary.Uvarint(b)
		if n <= 0 {
			return bad("truncated or overlong varint")
		}
		u[i], b = v, b[n:]
		if i >= 2 {
			if v > uint64(len(b)) {
				return bad(fmt.Sprintf("length %d exceeds remaining %d bytes", v, len(b)))
			}
			blob[i-2], b = b[:v], b[v:]
		}
	}
	out.Index, out.Term = u[0], u[1]
	if len(blob[0]) > 0 {
		out.Data = bytes.Clone(blob[0])
	}
	if len(blob[1]) > 0 {
		out.Extensions = bytes.Clone(blob[1])
	}
	if len(b) == 0 || b[0]&^flagAppendedAt != 0 {
		return bad("truncated or unknown flags")
	}
	flags := b[0]
	if b = b[1:]; flags == flagAppendedAt {
		ns, n := binary.Varint(b)
		if n <= 0 {
			return bad("truncated or overlong appended-at")
		}
		out.AppendedAt, b = time.Unix(0, ns), b[n:]
	}
	if len(b) != 0 {
		return bad(fmt.Sprintf("%d trailing bytes", len(b)))
	}
	*l = out
	return nil
}
