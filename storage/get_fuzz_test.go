package storage

import (
	"bytes"
	"context"
	"errors"
	"math"
	"math/bits"
	"testing"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
)

// oneBlob is a replica holding one blob.
type oneBlob struct {
	Meta
	blob *pb.Blob
}

func (m oneBlob) Blob(name string) *pb.Blob {
	if name == m.blob.Name {
		return m.blob
	}
	return nil
}

// metaOnly is an agent seen only through its replica.
type metaOnly struct {
	Cluster
	meta Meta
}

func (c metaOnly) Self() string { return "n1" }
func (c metaOnly) Meta() Meta   { return c.meta }

// FuzzGetRange reads an arbitrary range of an inline blob: Get never
// panics; a range starting past the end is InvalidArgument; any other
// range yields exactly the blob's bytes from offset up to offset+length
// (to the end when length is 0 or reaches past it), except that a range
// whose end overflows, or whose length is negative as a signed size (above
// MaxInt64), may instead be refused as InvalidArgument.
//
//	go test -run '^$' -fuzz FuzzGetRange ./storage/
func FuzzGetRange(f *testing.F) {
	f.Add(uint16(100), uint64(0), uint64(0))
	f.Add(uint16(100), uint64(10), uint64(20))
	f.Add(uint16(100), uint64(100), uint64(1))
	f.Add(uint16(100), uint64(101), uint64(0))
	f.Add(uint16(0), uint64(0), uint64(5))
	f.Add(uint16(4096), uint64(1), uint64(1<<64-1))
	f.Fuzz(func(t *testing.T, size uint16, offset, length uint64) {
		data := bytes.Repeat([]byte{1, 2, 3, 5, 7, 11, 13}, int(size)/7+1)[:size]
		blob := &pb.Blob{Name: "fuzz/blob", Id: "00112233445566778899aabbccddeeff", Size: uint64(size), Inline: data}
		s := New(DefaultConfig(), metaOnly{meta: oneBlob{blob: blob}}, nil, nil, nil)
		var got []byte
		err := s.Get(context.Background(), &pb.BlobGetRequest{Name: blob.Name, Offset: offset, Length: length},
			func(r *pb.BlobGetResponse) error { got = append(got, r.Chunk...); return nil })
		_, carry := bits.Add64(offset, length, 0)
		switch {
		case offset > uint64(size):
			if !errors.Is(err, ErrInvalidArgument) {
				t.Fatalf("offset %d past a %d-byte blob: err %v, want InvalidArgument", offset, size, err)
			}
			return
		case err != nil && (carry != 0 || length > math.MaxInt64) && errors.Is(err, ErrInvalidArgument):
			return
		case err != nil:
			t.Fatalf("offset %d length %d of a %d-byte blob: %v", offset, length, size, err)
		}
		end := uint64(size)
		if length > 0 && length < end-offset {
			end = offset + length
		}
		if !bytes.Equal(got, data[offset:end]) {
			t.Fatalf("offset %d length %d of a %d-byte blob: got %d bytes, want bytes %d-%d", offset, length, size, len(got), offset, end)
		}
	})
}
