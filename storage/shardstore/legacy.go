package shardstore

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"

	"github.com/zrpcio/zrpc/storage/codec"
)

// legacyShard is a shard file of the older layout, its header checked.
type legacyShard struct {
	path string
	h    Header
}

// convert turns the legacy shard files of blob into part files, one per
// index: each index's good shards are written into a staged part file,
// which is committed (renamed, or merged into a part file already there,
// as a conversion cut short by a crash leaves), and only then are the
// legacy files removed. A legacy file that fails its checks is not
// converted: its shard is then missing, and the scrubber has it rebuilt.
// The part files' block size is the largest block among the blob's
// shards here: every block fits its slot.
func (s *Store) convert(blob string, files []string) error {
	slices.Sort(files)
	var good []legacyShard
	var blockSize uint32
	for _, path := range files {
		block, index, _ := parseFileName(filepath.Base(path))
		h, err := legacyHeader(path, ID{Blob: blob, Block: block, Index: index})
		if err != nil && !errors.Is(err, ErrCorrupt) {
			return fmt.Errorf("read %s: %w", path, err) // kept: not known to be bad
		}
		if err != nil {
			s.log.Warn("shard file of the older layout is corrupt; not converted, it will be rebuilt", "path", path, "err", err)
			continue
		}
		if len(good) > 0 && (h.K != good[0].h.K || h.M != good[0].h.M) {
			s.log.Warn("shard file of the older layout disagrees with the blob's other shards; not converted, it will be rebuilt",
				"path", path, "scheme", fmt.Sprintf("%d+%d", h.K, h.M), "blob_scheme", fmt.Sprintf("%d+%d", good[0].h.K, good[0].h.M))
			continue
		}
		if h.BlockLen == 0 {
			continue // an empty block: nothing to keep
		}
		good = append(good, legacyShard{path: path, h: h})
		blockSize = max(blockSize, h.BlockLen)
	}
	byIndex := make(map[uint16][]legacyShard)
	for _, ls := range good {
		byIndex[ls.h.ID.Index] = append(byIndex[ls.h.ID.Index], ls)
	}
	converted := 0
	for index, shards := range byIndex {
		sp, err := s.newStaged(partHeader{Blob: blob, Index: index, K: shards[0].h.K, M: shards[0].h.M, BlockSize: blockSize})
		if err != nil {
			return err
		}
		var buf []byte
		for _, ls := range shards {
			h := ls.h
			h.BlockSize = blockSize
			buf, err = legacyPayload(ls.path, &h, buf)
			if err != nil && !errors.Is(err, ErrCorrupt) {
				sp.drop(s)
				return fmt.Errorf("read %s: %w", ls.path, err)
			}
			if err != nil {
				s.log.Warn("shard file of the older layout is corrupt; not converted, it will be rebuilt", "path", ls.path, "err", err)
				continue
			}
			if err := sp.add(s, &h, [][]byte{buf}); err != nil {
				sp.drop(s)
				return err
			}
		}
		n, err := s.commitPart(sp)
		if err != nil {
			return err
		}
		converted += n
	}
	if err := s.syncDir(s.blobDir(blob)); err != nil {
		return err
	}
	for _, path := range files {
		if err := os.Remove(path); err != nil {
			return err
		}
	}
	s.log.Info("converted shard files of the older layout into part files", "blob_id", blob, "files", len(files), "shards", converted)
	return nil
}

// legacyHeader reads and checks the header and length of a legacy shard
// file, which must be shard id.
func legacyHeader(path string, id ID) (Header, error) {
	f, err := os.Open(path)
	if err != nil {
		return Header{}, err
	}
	defer f.Close()
	var buf [HeaderSize]byte
	if _, err := io.ReadFull(f, buf[:]); err != nil {
		return Header{}, fmt.Errorf("%w: file shorter than a header", ErrCorrupt)
	}
	h, err := unmarshalHeader(buf[:])
	if err != nil {
		return Header{}, fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	if h.ID != id {
		return Header{}, fmt.Errorf("%w: file holds shard %s", ErrCorrupt, h.ID)
	}
	info, err := f.Stat()
	if err != nil {
		return Header{}, err
	}
	if want := int64(HeaderSize) + int64(h.ShardLen); info.Size() != want {
		return Header{}, fmt.Errorf("%w: %d bytes, header says %d", ErrCorrupt, info.Size(), want)
	}
	return h, nil
}

// legacyPayload reads a legacy shard file's payload into buf and checks it
// against h.
func legacyPayload(path string, h *Header, buf []byte) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return buf, err
	}
	defer f.Close()
	n := int(h.ShardLen)
	if cap(buf) < n {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	if _, err := f.ReadAt(buf, HeaderSize); err != nil {
		if errors.Is(err, io.EOF) {
			return buf, fmt.Errorf("%w: payload cut short", ErrCorrupt)
		}
		return buf, err
	}
	if sum := codec.Checksum(buf); sum != h.Sum {
		return buf, fmt.Errorf("%w: payload checksum %08x, header says %08x", ErrCorrupt, sum, h.Sum)
	}
	return buf, nil
}
