package shardstore

import (
	"errors"
)

// HeldPart is what a part file durably holds: its scheme and block size,
// and the blocks whose frames are sound, with their checksums, in block
// order.
type HeldPart struct {
	K, M      uint8
	BlockSize uint32
	Blocks    []uint32
	Sums      []uint32
}

// Held reads the frame headers (not the payloads) of the part file of
// shard index of blob and lists the blocks it holds. A block whose frame
// is unsound is left out; a missing part file is ErrNotFound.
func (s *Store) Held(blob string, index uint16) (HeldPart, error) {
	var out HeldPart
	err := s.read(ID{Blob: blob, Index: index}, func(pf *partFile) error {
		out = HeldPart{K: pf.hdr.K, M: pf.hdr.M, BlockSize: pf.hdr.BlockSize}
		for b := range pf.hdr.slots(pf.size) {
			h, err := pf.frame(b)
			var ce *CorruptError
			switch {
			case errors.Is(err, ErrNotFound), errors.As(err, &ce):
				continue
			case err != nil:
				return err
			}
			out.Blocks = append(out.Blocks, b)
			out.Sums = append(out.Sums, h.Sum)
		}
		return nil
	})
	return out, err
}
