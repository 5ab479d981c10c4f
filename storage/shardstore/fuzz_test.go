package shardstore

import (
	"bytes"
	"errors"
	"os"
	"testing"

	"github.com/zrpcio/zrpc/storage/codec"
)

// FuzzGet writes arbitrary bytes as a part file and reads every block of
// it back: Get, Stat, Verify and VerifyPart never panic and agree with
// each other, and Get returns data only when the file is a part file of
// that blob and index whose block's frame and checksum hold.
//
//	go test -run '^$' -fuzz FuzzGet ./storage/shardstore/
func FuzzGet(f *testing.F) {
	seed := open(f, f.TempDir(), Options{})
	for b := range uint32(3) {
		blockLen := uint32(testBlockSize)
		if b == 2 {
			blockLen = 999
		}
		put(f, seed, ID{blobA, b, 1}, blockLen, 1)
	}
	valid, err := os.ReadFile(seed.Path(ID{Blob: blobA, Index: 1}))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(valid)
	f.Add(valid[:PartHeaderSize])
	f.Add(valid[:PartHeaderSize+slot+3])
	f.Add(append(bytes.Clone(valid[:PartHeaderSize]), make([]byte, slot)...))
	f.Add([]byte(partMagic))
	f.Add([]byte{})

	s := open(f, f.TempDir(), Options{})
	path := s.Path(ID{Blob: blobA, Index: 1})
	if err := os.MkdirAll(s.blobDir(blobA), 0o700); err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, file []byte) {
		if err := os.WriteFile(path, file, 0o600); err != nil {
			t.Fatal(err)
		}
		bad, perr := s.VerifyPart(blobA, 1)
		for b := range uint32(4) {
			id := ID{blobA, b, 1}
			h, data, err := s.Get(id, nil)
			verr := s.Verify(id)
			sh, serr := s.Stat(id)
			if err != nil {
				if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrNotFound) || data != nil {
					t.Fatalf("Get %s = %d bytes, %v; want nil, ErrCorrupt or ErrNotFound", id, len(data), err)
				}
				if errors.Is(err, ErrCorrupt) != errors.Is(verr, ErrCorrupt) || errors.Is(err, ErrNotFound) != errors.Is(verr, ErrNotFound) {
					t.Fatalf("Get %s = %v but Verify = %v", id, err, verr)
				}
				continue
			}
			if verr != nil || serr != nil || sh != h {
				t.Fatalf("Get %s succeeded but Verify = %v, Stat = %+v, %v", id, verr, sh, serr)
			}
			if perr != nil {
				t.Fatalf("Get %s succeeded but VerifyPart = %v", id, perr)
			}
			for _, bb := range bad {
				if bb == b {
					t.Fatalf("Get %s succeeded but VerifyPart reports it bad", id)
				}
			}
			off := PartHeaderSize + int64(b)*(frameHeaderSize+int64(codec.ShardLen(int(h.BlockSize), int(h.K)))) + frameHeaderSize
			if h.ID != id || h.check() != nil || !bytes.Equal(data, file[off:off+int64(len(data))]) {
				t.Fatalf("Get %s = %+v, %d bytes from a %d-byte file", id, h, len(data), len(file))
			}
		}
	})
}

// FuzzPartHeader decodes arbitrary bytes as a part file header: decoding
// never panics, a rejected header yields the zero value, and an accepted
// one passes its own check and re-encodes to the same bytes' meaning.
//
//	go test -run '^$' -fuzz FuzzPartHeader ./storage/shardstore/
func FuzzPartHeader(f *testing.F) {
	var b [PartHeaderSize]byte
	for _, p := range []partHeader{
		{Blob: blobA, Index: 1, K: 4, M: 2, BlockSize: 1 << 20},
		{Blob: blobB, Index: 0, K: 1, M: 0, BlockSize: 1},
		{Blob: blobA + blobA, Index: 255, K: 128, M: 128, BlockSize: 1<<32 - 1},
	} {
		p.marshal(b[:])
		f.Add(append([]byte(nil), b[:]...))
	}
	f.Add([]byte(partMagic))
	f.Add(make([]byte, PartHeaderSize))
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := unmarshalPartHeader(data)
		if err != nil {
			if p != (partHeader{}) {
				t.Fatalf("rejected header (%v) decoded to %+v", err, p)
			}
			return
		}
		if err := p.check(); err != nil {
			t.Fatalf("accepted header %+v fails its check: %v", p, err)
		}
		var enc [PartHeaderSize]byte
		p.marshal(enc[:])
		p2, err := unmarshalPartHeader(enc[:])
		if err != nil || p2 != p {
			t.Fatalf("header %+v re-encoded decodes to %+v, %v", p, p2, err)
		}
	})
}
