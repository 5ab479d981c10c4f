package shardstore

import (
	"errors"
	"sync"
	"sync/atomic"
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

// heldReaders is how many frame headers Held reads at once. A part that a
// put wrote with O_DIRECT (direct.go) has none of its pages in the page
// cache, so each header is a read from the disk: one after the other, the
// 256 headers of a 256 MiB blob's part (1 MiB blocks) took 27-42 ms on the
// VM of docs/benchmarks.md, at the end of every put, where the disk
// serves reads issued together in parallel.
const heldReaders = 16

// Held reads the frame headers (not the payloads) of the part file of
// shard index of blob and lists the blocks it holds. A block whose frame
// is unsound is left out; a missing part file is ErrNotFound.
func (s *Store) Held(blob string, index uint16) (HeldPart, error) {
	var out HeldPart
	err := s.read(ID{Blob: blob, Index: index}, func(pf *partFile) error {
		out = HeldPart{K: pf.hdr.K, M: pf.hdr.M, BlockSize: pf.hdr.BlockSize}
		sums, sound, err := pf.frameSums()
		if err != nil {
			return err
		}
		for b, ok := range sound {
			if ok {
				out.Blocks = append(out.Blocks, uint32(b))
				out.Sums = append(out.Sums, sums[b])
			}
		}
		return nil
	})
	return out, err
}

// frameSums reads the frame header of every slot of the file, heldReaders
// at a time: sound[b] tells whether block b's frame is there and sound
// (not a hole, not corrupt), sums[b] its payload's checksum. An error
// reading the file fails it, and stops the other readers.
func (pf *partFile) frameSums() (sums []uint32, sound []bool, err error) {
	n := pf.hdr.slots(pf.size)
	sums, sound = make([]uint32, n), make([]bool, n)
	readers := min(heldReaders, int(n))
	errs := make([]error, readers)
	var next atomic.Uint32
	var failed atomic.Bool // a read failed: the others stop too
	var wg sync.WaitGroup
	for r := range readers {
		wg.Go(func() {
			for b := next.Add(1) - 1; b < n && !failed.Load(); b = next.Add(1) - 1 {
				h, err := pf.frame(b)
				var ce *CorruptError
				switch {
				case errors.Is(err, ErrNotFound), errors.As(err, &ce):
					continue
				case err != nil:
					errs[r] = err
					failed.Store(true)
					return
				}
				sums[b], sound[b] = h.Sum, true
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, nil, err
	}
	return sums, sound, nil
}
