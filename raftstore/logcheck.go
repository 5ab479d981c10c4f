package raftstore

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"

	waltypes "github.com/hashicorp/raft-wal/types"
)

// raft-wal's segment format (its README, "Segment Files"), little endian:
// a 32-byte file header (magic, version, base index, segment id, codec),
// then 8-byte aligned frames: type (1 byte), 3 reserved zero bytes, and
// the payload length, or for a commit frame the CRC32C of the batch it
// ends (every byte since the previous commit frame, the file header in the
// first batch). Each append writes one batch and fsyncs it.
const (
	segHeaderLen   = 32
	segMagic       = 0x58eb6b0d
	segFrameLen    = 8
	segFrameEntry  = 1
	segFrameIndex  = 2
	segFrameCommit = 3
	// segMaxFrame is raft-wal's largest entry (segment.MaxEntrySize).
	segMaxFrame = 64 << 20
	// segPairWindow is how many earlier batch starts a commit frame found
	// past the damage is checked against.
	segPairWindow = 16
)

var segCRC = crc32.MakeTable(crc32.Castagnoli)

// checkSegment checks the segment file at path, which wal-meta.db lists as
// seg, before raft-wal opens it. raft-wal reads a segment frame by frame
// and ends it at the first frame it cannot read or whose batch fails its
// checksum, taking that for the torn write of a crash. That is right only
// at the end of what was written: checkSegment verifies every batch's
// checksum and accepts damage only where nothing committed follows it.
// So a flipped byte or a truncation in the middle of the log is refused,
// not silently cut off with every entry after it, while a batch torn by a
// crash (never acknowledged) is left to raft-wal to discard.
func checkSegment(path string, seg waltypes.SegmentInfo, unallocated bool) (segmentWalk, error) {
	f, err := os.Open(path)
	if err != nil {
		return segmentWalk{}, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return segmentWalk{}, err
	}
	size := fi.Size()
	walk, err := walkSegment(f, size)
	if err != nil {
		return walk, err
	}
	// raft-wal preallocates a segment to its size limit when it creates
	// it, so a shorter file was cut after it was written, unless a crash
	// came between the two: then raft-wal appends to the file as it is,
	// and it ends exactly after its last batch. A segment created on a
	// full disk without preallocation (logspace.go) grows instead, and may
	// end in a torn batch.
	if seg.SizeLimit > 0 && size < int64(seg.SizeLimit) && size != walk.committed && !unallocated {
		return walk, fmt.Errorf("truncated: %d bytes, segments are preallocated to %d", size, seg.SizeLimit)
	}
	if walk.committed == 0 {
		if !seg.SealTime.IsZero() {
			return walk, errors.New("sealed segment without a committed batch")
		}
	} else if err := checkSegmentHeader(f, seg); err != nil {
		return walk, err
	}
	if !seg.SealTime.IsZero() && walk.committed <= int64(seg.IndexStart) {
		return walk, fmt.Errorf("sealed segment's index at offset %d is past its last intact batch (offset %d)", seg.IndexStart, walk.committed)
	}
	return walk, checkSegmentRest(f, walk.committed, size)
}

// segmentWalk is what walkSegment found up to the last intact batch.
type segmentWalk struct {
	committed  int64  // offset just past its commit frame, 0 if none
	entries    uint64 // entry frames
	indexStart int64  // offset of the index array of an index frame, 0 if none
}

// walkSegment reads the frames from the start of f up to the last commit
// frame whose batch verifies.
func walkSegment(f io.ReaderAt, size int64) (segmentWalk, error) {
	var done, cur segmentWalk
	r := bufio.NewReaderSize(io.NewSectionReader(f, 0, size), 1<<20)
	crc := crc32.New(segCRC)
	if _, err := io.CopyN(crc, r, segHeaderLen); err != nil {
		return done, nil // shorter than a header: nothing committed
	}
	var h [segFrameLen]byte
	for off := int64(segHeaderLen); ; {
		if _, err := io.ReadFull(r, h[:]); err != nil {
			return done, nil
		}
		typ, n := h[0], binary.LittleEndian.Uint32(h[4:])
		if typ < segFrameEntry || typ > segFrameCommit || h[1]|h[2]|h[3] != 0 {
			return done, nil
		}
		off += segFrameLen
		switch typ {
		case segFrameCommit:
			if crc.Sum32() != n {
				return done, nil
			}
			cur.committed = off
			done = cur
			crc.Reset()
			continue
		case segFrameEntry:
			cur.entries++
		case segFrameIndex:
			cur.indexStart = off
		}
		padded := int64(n) + int64(padding(n))
		if n > segMaxFrame || off+padded > size {
			return done, nil
		}
		crc.Write(h[:])
		if _, err := io.CopyN(crc, r, padded); err != nil {
			return done, fmt.Errorf("read frame at offset %d: %w", off-segFrameLen, err)
		}
		off += padded
	}
}

func padding(n uint32) uint32 { return (segFrameLen - n%segFrameLen) % segFrameLen }

func checkSegmentHeader(f io.ReaderAt, seg waltypes.SegmentInfo) error {
	var h [segHeaderLen]byte
	if _, err := f.ReadAt(h[:], 0); err != nil {
		return fmt.Errorf("read header: %w", err)
	}
	le := binary.LittleEndian
	if le.Uint32(h[0:]) != segMagic || le.Uint32(h[4:]) != 0 {
		return errors.New("no segment magic in its header")
	}
	if base, id := le.Uint64(h[8:]), le.Uint64(h[16:]); base != seg.BaseIndex || id != seg.ID {
		return fmt.Errorf("header says base index %d and id %d, wal-meta.db %d and %d", base, id, seg.BaseIndex, seg.ID)
	}
	return nil
}

// checkSegmentRest looks at what follows the last intact batch: zeros (the
// preallocated rest), or the bytes of a torn batch, which hold no further
// intact batch. A commit frame there whose batch verifies, counted from an
// earlier batch start, shows committed entries after damage.
func checkSegmentRest(f io.ReaderAt, from, size int64) error {
	end, err := lastNonZero(f, from, size)
	if err != nil || end == from {
		return err
	}
	if from == 0 {
		// Nothing committed, yet the file is not empty: a first batch torn
		// before its header was written leaves zeros in front; a file of
		// other bytes is not a segment.
		var h [4]byte
		if _, err := f.ReadAt(h[:], 0); err == nil && binary.LittleEndian.Uint32(h[:]) != 0 && binary.LittleEndian.Uint32(h[:]) != segMagic {
			return errors.New("no segment magic in its header")
		}
	}
	rest := make([]byte, end-from)
	if _, err := f.ReadAt(rest, from); err != nil {
		return fmt.Errorf("read offset %d: %w", from, err)
	}
	starts := []int{0}
	for i := 0; i+segFrameLen <= len(rest); i += segFrameLen {
		if rest[i] != segFrameCommit || rest[i+1]|rest[i+2]|rest[i+3] != 0 {
			continue
		}
		want := binary.LittleEndian.Uint32(rest[i+4:])
		for _, s := range starts[max(0, len(starts)-segPairWindow):] {
			if s < i && crc32.Checksum(rest[s:i], segCRC) == want {
				return fmt.Errorf("damaged at offset %d, and a batch committed after it ends at offset %d",
					from, from+int64(i)+segFrameLen)
			}
		}
		starts = append(starts, i+segFrameLen)
	}
	return nil
}

// lastNonZero returns the offset past the last non-zero byte of f in
// [from, size), from if there is none.
func lastNonZero(f io.ReaderAt, from, size int64) (int64, error) {
	const chunk = 1 << 20
	buf := make([]byte, chunk)
	zero := make([]byte, chunk)
	end := from
	for off := from; off < size; off += chunk {
		b := buf[:min(chunk, size-off)]
		if _, err := f.ReadAt(b, off); err != nil && !errors.Is(err, io.EOF) {
			return 0, fmt.Errorf("read offset %d: %w", off, err)
		}
		if !bytes.Equal(b, zero[:len(b)]) {
			end = off + int64(len(bytes.TrimRight(b, "\x00")))
		}
	}
	return end, nil
}
