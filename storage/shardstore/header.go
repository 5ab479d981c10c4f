package shardstore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/zrpcio/zrpc/storage/codec"
)

// The legacy layout, one shard file per shard per block
// (<blob dir>/<block>.<index>.shard), is a fixed 96-byte header followed by
// the payload; Open converts such files into part files (part.go). All
// integers are little-endian.
//
//	off size field
//	  0    4 magic "ZSHD"
//	  4    1 version (1)
//	  5    1 K (data shards of the block)
//	  6    1 M (parity shards)
//	  7    1 length of the blob id
//	  8    4 block
//	 12    2 index (shard within the block)
//	 14    2 reserved, zero
//	 16    4 block length
//	 20    4 shard length (payload bytes)
//	 24    4 CRC32C of the payload
//	 28   64 blob id, lowercase hex, zero padded
//	 92    4 CRC32C of bytes 0-91
const (
	HeaderSize = 96
	magic      = "ZSHD"
	version    = 1

	minBlobLen = 16
	maxBlobLen = 64
	suffix     = ".shard"
	tmpSuffix  = ".tmp"
)

// ID names one shard: shard Index of block Block of blob Blob.
type ID struct {
	Blob  string // lowercase hex, 16-64 characters
	Block uint32
	Index uint16
}

func (id ID) String() string { return fmt.Sprintf("%s/%d/%d", id.Blob, id.Block, id.Index) }

// Header is what a shard file says about its payload.
type Header struct {
	ID       ID
	K, M     uint8  // the block's scheme
	BlockLen uint32 // bytes in the block
	ShardLen uint32 // bytes in the payload: codec.ShardLen(BlockLen, K)
	Sum      uint32 // CRC32C of the payload (codec.Checksum)
	// BlockSize is the blob's block size, the length of every block but
	// the last: it fixes where each block sits in the part file. Put and
	// Stage need it (at least BlockLen); reads fill it in.
	BlockSize uint32
}

// validBlob reports whether blob is a blob id this store accepts: 16 to 64
// lowercase hex digits, which can never name a path outside the store.
func validBlob(blob string) bool {
	if len(blob) < minBlobLen || len(blob) > maxBlobLen {
		return false
	}
	for i := range len(blob) {
		if c := blob[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

func checkBlob(blob string) error {
	if !validBlob(blob) {
		return fmt.Errorf("shardstore: blob id %q: want 16-64 lowercase hex digits: %w", blob, ErrInvalidID)
	}
	return nil
}

// check validates h on its own: scheme, index and lengths agree.
func (h *Header) check() error {
	if err := checkBlob(h.ID.Blob); err != nil {
		return err
	}
	switch {
	case h.K == 0 || int(h.K)+int(h.M) > codec.MaxShards:
		return fmt.Errorf("shardstore: shard %s: scheme %d+%d: %w", h.ID, h.K, h.M, ErrInvalidHeader)
	case int(h.ID.Index) >= int(h.K)+int(h.M):
		return fmt.Errorf("shardstore: shard %s: index %d outside a %d+%d block: %w", h.ID, h.ID.Index, h.K, h.M, ErrInvalidHeader)
	case uint64(h.ShardLen) != uint64(codec.ShardLen(int(h.BlockLen), int(h.K))):
		return fmt.Errorf("shardstore: shard %s: shard length %d, a %d-byte block in %d shards needs %d: %w",
			h.ID, h.ShardLen, h.BlockLen, h.K, codec.ShardLen(int(h.BlockLen), int(h.K)), ErrInvalidHeader)
	}
	return nil
}

// marshal writes h into b[:HeaderSize].
func (h *Header) marshal(b []byte) {
	b = b[:HeaderSize]
	clear(b)
	copy(b[0:4], magic)
	b[4] = version
	b[5] = h.K
	b[6] = h.M
	b[7] = byte(len(h.ID.Blob))
	binary.LittleEndian.PutUint32(b[8:], h.ID.Block)
	binary.LittleEndian.PutUint16(b[12:], h.ID.Index)
	binary.LittleEndian.PutUint32(b[16:], h.BlockLen)
	binary.LittleEndian.PutUint32(b[20:], h.ShardLen)
	binary.LittleEndian.PutUint32(b[24:], h.Sum)
	copy(b[28:92], h.ID.Blob)
	binary.LittleEndian.PutUint32(b[92:], codec.Checksum(b[:92]))
}

// errBadHeader is the detail of a header that fails to parse; callers wrap
// it with ErrCorrupt and the path.
var errBadHeader = errors.New("bad header")

// unmarshalHeader parses and checks a header: magic, version, its own
// checksum and the consistency of its fields.
func unmarshalHeader(b []byte) (Header, error) {
	var h Header
	if len(b) < HeaderSize {
		return h, fmt.Errorf("%w: %d bytes, want %d", errBadHeader, len(b), HeaderSize)
	}
	if string(b[0:4]) != magic {
		return h, fmt.Errorf("%w: magic %q", errBadHeader, b[0:4])
	}
	if got, want := codec.Checksum(b[:92]), binary.LittleEndian.Uint32(b[92:]); got != want {
		return h, fmt.Errorf("%w: header checksum %08x, stored %08x", errBadHeader, got, want)
	}
	if b[4] != version {
		return h, fmt.Errorf("%w: version %d, want %d", errBadHeader, b[4], version)
	}
	n := int(b[7])
	if n > maxBlobLen {
		return h, fmt.Errorf("%w: blob id length %d", errBadHeader, n)
	}
	h = Header{
		ID: ID{
			Blob:  string(b[28 : 28+n]),
			Block: binary.LittleEndian.Uint32(b[8:]),
			Index: binary.LittleEndian.Uint16(b[12:]),
		},
		K:        b[5],
		M:        b[6],
		BlockLen: binary.LittleEndian.Uint32(b[16:]),
		ShardLen: binary.LittleEndian.Uint32(b[20:]),
		Sum:      binary.LittleEndian.Uint32(b[24:]),
	}
	if err := h.check(); err != nil {
		return Header{}, fmt.Errorf("%w: %v", errBadHeader, err)
	}
	return h, nil
}

// fileName is the name of a shard's file in its blob directory.
func fileName(block uint32, index uint16) string {
	return strconv.FormatUint(uint64(block), 10) + "." + strconv.FormatUint(uint64(index), 10) + suffix
}

// parseFileName is the inverse of fileName; it accepts only the names
// fileName writes, so one shard has exactly one path.
func parseFileName(name string) (block uint32, index uint16, ok bool) {
	base, found := strings.CutSuffix(name, suffix)
	if !found {
		return 0, 0, false
	}
	bs, is, found := strings.Cut(base, ".")
	if !found {
		return 0, 0, false
	}
	b, err1 := strconv.ParseUint(bs, 10, 32)
	i, err2 := strconv.ParseUint(is, 10, 16)
	if err1 != nil || err2 != nil || fileName(uint32(b), uint16(i)) != name {
		return 0, 0, false
	}
	return uint32(b), uint16(i), true
}
