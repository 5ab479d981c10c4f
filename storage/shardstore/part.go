package shardstore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"syscall"

	"github.com/zrpcio/zrpc/storage/codec"
)

// A part file holds the shards of one shard index of one blob, for every
// block this agent holds that index of. It is a fixed 96-byte header, then
// one slot per block: slot b starts at PartHeaderSize + b*slotLen, where
// slotLen is frameHeaderSize + codec.ShardLen(BlockSize, K), so a read
// seeks straight to its block. A slot is an 8-byte frame header (the
// block's length and the payload's CRC32C) followed by the payload; the
// last block of a blob is shorter than its slot and ends the file. A slot
// whose frame header is all zeros (a hole: this agent does not hold that
// block's shard) reads as not found. All integers are little-endian.
//
// Part header:
//
//	off size field
//	  0    4 magic "ZPRT"
//	  4    1 version (1)
//	  5    1 K (data shards per block)
//	  6    1 M (parity shards)
//	  7    1 length of the blob id
//	  8    2 index (the shard index of every block in the file)
//	 10    2 reserved, zero
//	 12    4 block size (bytes of every full block of the blob)
//	 16   12 reserved, zero
//	 28   64 blob id, lowercase hex, zero padded
//	 92    4 CRC32C of bytes 0-91
const (
	PartHeaderSize  = 96
	frameHeaderSize = 8
	partMagic       = "ZPRT"
	partVersion     = 1
	partSuffix      = ".part"
)

// PartBytes is the size of the part file that holds one shard of every
// block of a blob of size bytes cut into blockSize-byte blocks, each
// encoded into k data shards: what an agent needs room for to take one
// shard index of the blob.
func PartBytes(size int64, blockSize, k int) int64 {
	if size <= 0 || blockSize <= 0 || k <= 0 {
		return PartHeaderSize
	}
	h := partHeader{K: uint8(min(k, 255)), BlockSize: uint32(blockSize)}
	blocks := (size + int64(blockSize) - 1) / int64(blockSize)
	return PartHeaderSize + blocks*h.slotLen()
}

// partHeader is what a part file's header says.
type partHeader struct {
	Blob      string
	Index     uint16
	K, M      uint8
	BlockSize uint32
}

// slotLen is the bytes of one block's slot.
func (p *partHeader) slotLen() int64 {
	return frameHeaderSize + int64(codec.ShardLen(int(p.BlockSize), int(p.K)))
}

// offset is where block's slot starts.
func (p *partHeader) offset(block uint32) int64 {
	return PartHeaderSize + int64(block)*p.slotLen()
}

// slots is how many slots a file of size bytes reaches into.
func (p *partHeader) slots(size int64) uint32 {
	if size <= PartHeaderSize {
		return 0
	}
	return uint32((size - PartHeaderSize + p.slotLen() - 1) / p.slotLen())
}

func (p *partHeader) check() error {
	if err := checkBlob(p.Blob); err != nil {
		return err
	}
	switch {
	case p.K == 0 || int(p.K)+int(p.M) > codec.MaxShards:
		return fmt.Errorf("scheme %d+%d: %w", p.K, p.M, ErrInvalidHeader)
	case int(p.Index) >= int(p.K)+int(p.M):
		return fmt.Errorf("index %d outside a %d+%d block: %w", p.Index, p.K, p.M, ErrInvalidHeader)
	case p.BlockSize == 0:
		return fmt.Errorf("block size 0: %w", ErrInvalidHeader)
	}
	return nil
}

// partOf is the part header a shard with header h belongs in.
func partOf(h *Header) partHeader {
	return partHeader{Blob: h.ID.Blob, Index: h.ID.Index, K: h.K, M: h.M, BlockSize: h.BlockSize}
}

func (p *partHeader) marshal(b []byte) {
	b = b[:PartHeaderSize]
	clear(b)
	copy(b[0:4], partMagic)
	b[4] = partVersion
	b[5] = p.K
	b[6] = p.M
	b[7] = byte(len(p.Blob))
	binary.LittleEndian.PutUint16(b[8:], p.Index)
	binary.LittleEndian.PutUint32(b[12:], p.BlockSize)
	copy(b[28:92], p.Blob)
	binary.LittleEndian.PutUint32(b[92:], codec.Checksum(b[:92]))
}

// unmarshalPartHeader parses and checks a part header.
func unmarshalPartHeader(b []byte) (partHeader, error) {
	if len(b) < PartHeaderSize {
		return partHeader{}, fmt.Errorf("%w: %d bytes, want %d", errBadHeader, len(b), PartHeaderSize)
	}
	if string(b[0:4]) != partMagic {
		return partHeader{}, fmt.Errorf("%w: magic %q", errBadHeader, b[0:4])
	}
	if got, want := codec.Checksum(b[:92]), binary.LittleEndian.Uint32(b[92:]); got != want {
		return partHeader{}, fmt.Errorf("%w: header checksum %08x, stored %08x", errBadHeader, got, want)
	}
	if b[4] != partVersion {
		return partHeader{}, fmt.Errorf("%w: version %d, want %d", errBadHeader, b[4], partVersion)
	}
	n := int(b[7])
	if n > maxBlobLen {
		return partHeader{}, fmt.Errorf("%w: blob id length %d", errBadHeader, n)
	}
	p := partHeader{
		Blob: string(b[28 : 28+n]), Index: binary.LittleEndian.Uint16(b[8:]),
		K: b[5], M: b[6], BlockSize: binary.LittleEndian.Uint32(b[12:]),
	}
	if err := p.check(); err != nil {
		return partHeader{}, fmt.Errorf("%w: %v", errBadHeader, err)
	}
	return p, nil
}

// CorruptError is a block of a part file that fails its checks, or that
// the disk cannot read. It wraps ErrCorrupt, and the disk's error when
// there is one (Cause: syscall.EIO); Block says which block, so that only
// it is rebuilt.
type CorruptError struct {
	Path   string
	Block  uint32
	Detail string
	Cause  error
}

func (e *CorruptError) Error() string {
	return fmt.Sprintf("shardstore: read %s: block %d: %s: %s", e.Path, e.Block, ErrCorrupt, e.Detail)
}

func (e *CorruptError) Unwrap() []error {
	if e.Cause != nil {
		return []error{ErrCorrupt, e.Cause}
	}
	return []error{ErrCorrupt}
}

// partFile is an open part file whose header has been read and checked.
type partFile struct {
	f    *os.File
	path string
	hdr  partHeader
	size int64
	// readFault is Options.ReadFault for the files the Store reads
	// shards from (nil otherwise).
	readFault func(ID) error
}

// unreadable is the error of a read of block that failed: a CorruptError
// when the disk could not read it (EIO: a bad sector, a dying disk), so
// that the block is reported and rebuilt like one that fails its checksum;
// anything else (no memory, too many open files) as it is.
func unreadable(path string, block uint32, err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) { // the path is said once, below
		err = pe.Err
	}
	if errors.Is(err, syscall.EIO) {
		return &CorruptError{Path: path, Block: block, Detail: "the disk cannot read it: " + err.Error(), Cause: err}
	}
	return fmt.Errorf("shardstore: read %s: block %d: %w", path, block, err)
}

// openPart opens the part file at path, which must hold shard index of
// blob; a missing file is fs.ErrNotExist, a bad or foreign header
// ErrCorrupt.
func openPart(path, blob string, index uint16) (*partFile, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	pf, err := readPart(f, path, blob, index)
	if err != nil {
		f.Close()
		return nil, err
	}
	return pf, nil
}

// readPart reads and checks the header of the part file f.
func readPart(f *os.File, path, blob string, index uint16) (*partFile, error) {
	info, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("shardstore: read %s: %w", path, err)
	}
	var buf [PartHeaderSize]byte
	if _, err := f.ReadAt(buf[:], 0); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("shardstore: read %s: %w: file shorter than a header", path, ErrCorrupt)
		}
		if errors.Is(err, syscall.EIO) {
			return nil, fmt.Errorf("shardstore: read %s: %w: header unreadable: %w", path, ErrCorrupt, err)
		}
		return nil, fmt.Errorf("shardstore: read %s: %w", path, err)
	}
	hdr, err := unmarshalPartHeader(buf[:])
	if err != nil {
		return nil, fmt.Errorf("shardstore: read %s: %w: %w", path, ErrCorrupt, err)
	}
	if hdr.Blob != blob || hdr.Index != index {
		return nil, fmt.Errorf("shardstore: read %s: %w: file holds shard %d of blob %s", path, ErrCorrupt, hdr.Index, hdr.Blob)
	}
	return &partFile{f: f, path: path, hdr: hdr, size: info.Size()}, nil
}

// frame reads block's frame header: its Header, or ErrNotFound for a hole
// or a block past the end, or a CorruptError.
func (pf *partFile) frame(block uint32) (Header, error) {
	id := ID{Blob: pf.hdr.Blob, Block: block, Index: pf.hdr.Index}
	off := pf.hdr.offset(block)
	if off >= pf.size {
		return Header{}, fmt.Errorf("shardstore: read %s: %w", id, ErrNotFound)
	}
	var fh [frameHeaderSize]byte
	got, err := pf.readFrameHeader(block, fh[:])
	if err != nil {
		return Header{}, err
	}
	if got < frameHeaderSize || off+frameHeaderSize > pf.size {
		return Header{}, &CorruptError{Path: pf.path, Block: block, Detail: "file cut short in the frame header"}
	}
	blockLen, sum := binary.LittleEndian.Uint32(fh[0:]), binary.LittleEndian.Uint32(fh[4:])
	if blockLen == 0 && sum == 0 {
		return Header{}, fmt.Errorf("shardstore: read %s: %w", id, ErrNotFound)
	}
	if blockLen == 0 || blockLen > pf.hdr.BlockSize {
		return Header{}, &CorruptError{Path: pf.path, Block: block, Detail: fmt.Sprintf("block length %d, block size %d", blockLen, pf.hdr.BlockSize)}
	}
	n := codec.ShardLen(int(blockLen), int(pf.hdr.K))
	end := off + frameHeaderSize + int64(n)
	switch {
	case end > pf.size:
		return Header{}, &CorruptError{Path: pf.path, Block: block, Detail: fmt.Sprintf("file cut short: %d bytes, the block ends at %d", pf.size, end)}
	case blockLen < pf.hdr.BlockSize && end != pf.size:
		// Only the blob's last block is short, and it ends the file.
		return Header{}, &CorruptError{Path: pf.path, Block: block, Detail: fmt.Sprintf("short block (%d bytes) not at the end of the file", blockLen)}
	}
	return Header{
		ID: id, K: pf.hdr.K, M: pf.hdr.M, BlockLen: blockLen, ShardLen: uint32(n), Sum: sum, BlockSize: pf.hdr.BlockSize,
	}, nil
}

// read reads block's payload into dst (reallocated when too small) and
// checks it.
func (pf *partFile) read(block uint32, dst []byte) (Header, []byte, error) {
	h, err := pf.frame(block)
	if err != nil {
		return Header{}, nil, err
	}
	n := int(h.ShardLen)
	if cap(dst) >= n {
		dst = dst[:n]
	} else {
		dst = make([]byte, n)
	}
	if _, err := pf.f.ReadAt(dst, pf.hdr.offset(block)+frameHeaderSize); err != nil {
		return Header{}, nil, unreadable(pf.path, block, err)
	}
	if sum := codec.Checksum(dst); sum != h.Sum {
		return Header{}, nil, &CorruptError{Path: pf.path, Block: block, Detail: fmt.Sprintf("payload checksum %08x, frame says %08x", sum, h.Sum)}
	}
	return h, dst, nil
}

// readFrameHeader reads block's frame header into fh, or as much of it as
// the file holds: it returns how many bytes it read. A read that fails,
// or that Options.ReadFault fails, is unreadable's error.
func (pf *partFile) readFrameHeader(block uint32, fh []byte) (int, error) {
	if pf.readFault != nil {
		if err := pf.readFault(ID{Blob: pf.hdr.Blob, Block: block, Index: pf.hdr.Index}); err != nil {
			return 0, unreadable(pf.path, block, err)
		}
	}
	n, err := pf.f.ReadAt(fh, pf.hdr.offset(block))
	if err != nil && !errors.Is(err, io.EOF) {
		return n, unreadable(pf.path, block, err)
	}
	return n, nil
}

// held lists the blocks whose frame header is not a hole (good or not),
// those whose frame header the disk cannot read among them (heldFrames).
func (pf *partFile) held() ([]uint32, error) {
	blocks, _, err := pf.heldFrames()
	return blocks, err
}

// heldFrames lists the blocks whose frame header is not a hole (good or
// not). A frame header the disk cannot read (EIO: a bad sector) may be a
// held block's, so its block is listed, and the frames after it read on;
// its CorruptError is returned in unread, for the caller to log. Such a
// block reads as corrupt (frame): the scrubber reports it and repair
// rewrites it. Another read error (no memory) fails heldFrames.
func (pf *partFile) heldFrames() (blocks []uint32, unread []*CorruptError, err error) {
	var fh [frameHeaderSize]byte
	for b := range pf.hdr.slots(pf.size) {
		n, err := pf.readFrameHeader(b, fh[:])
		var ce *CorruptError
		switch {
		case errors.As(err, &ce):
			unread = append(unread, ce)
			blocks = append(blocks, b)
		case err != nil:
			return nil, nil, err
		case n > 0 && fh != [frameHeaderSize]byte{}:
			blocks = append(blocks, b)
		}
	}
	return blocks, unread, nil
}

func (pf *partFile) close() { pf.f.Close() }

// writeFramePieces writes a block's frame into f at its slot, its payload
// in pieces: the frame's header and the pieces go to the file in one
// vectored write (pwritev on Linux) instead of being copied into one
// buffer first.
func writeFramePieces(f *os.File, p *partHeader, h *Header, pieces [][]byte) error {
	bufs := make([][]byte, 0, len(pieces)+1)
	bufs = append(append(bufs, frameHeader(h)), pieces...)
	return writeAtv(f, bufs, p.offset(h.ID.Block))
}

// frameHeader returns the 8 bytes of h's frame header: the block's length
// and the payload's CRC32C.
func frameHeader(h *Header) []byte {
	fh := make([]byte, frameHeaderSize)
	binary.LittleEndian.PutUint32(fh[0:], h.BlockLen)
	binary.LittleEndian.PutUint32(fh[4:], h.Sum)
	return fh
}

// advance drops the first n bytes of bufs, which it may change.
func advance(bufs [][]byte, n int) [][]byte {
	for n > 0 && len(bufs) > 0 {
		if n < len(bufs[0]) {
			bufs[0] = bufs[0][n:]
			return bufs
		}
		n -= len(bufs[0])
		bufs = bufs[1:]
	}
	for len(bufs) > 0 && len(bufs[0]) == 0 {
		bufs = bufs[1:]
	}
	return bufs
}

// clearFrame turns block's slot into a hole (its frame header zeroed).
func clearFrame(f *os.File, p *partHeader, block uint32) error {
	var zero [frameHeaderSize]byte
	_, err := f.WriteAt(zero[:], p.offset(block))
	return err
}

// partName is the name of shard index's part file in its blob directory.
func partName(index uint16) string {
	return strconv.FormatUint(uint64(index), 10) + partSuffix
}

// parsePartName is the inverse of partName; it accepts only the names
// partName writes.
func parsePartName(name string) (uint16, bool) {
	base, found := strings.CutSuffix(name, partSuffix)
	if !found {
		return 0, false
	}
	i, err := strconv.ParseUint(base, 10, 16)
	if err != nil || partName(uint16(i)) != name {
		return 0, false
	}
	return uint16(i), true
}
