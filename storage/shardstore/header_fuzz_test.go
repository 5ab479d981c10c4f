package shardstore

import (
	"testing"
)

// FuzzHeader decodes arbitrary bytes as a legacy shard file header: decoding never
// panics, a rejected header yields the zero Header, and an accepted one
// passes its own check and encodes to a header that decodes to the same
// value.
//
//	go test -run '^$' -fuzz FuzzHeader ./storage/shardstore/
func FuzzHeader(f *testing.F) {
	var b [HeaderSize]byte
	for _, h := range []Header{
		func() Header { h, _ := shardOf(ID{blobA, 3, 1}, 4, 2, 5000, 5000, 1); return h }(),
		func() Header { h, _ := shardOf(ID{blobA, 0, 0}, 1, 0, 0, 0, 1); return h }(),
		func() Header { h, _ := shardOf(ID{blobA + blobA, 1<<32 - 1, 9}, 6, 4, 1<<20, 1<<20, 2); return h }(),
	} {
		h.marshal(b[:])
		f.Add(append([]byte(nil), b[:]...))
	}
	f.Add([]byte(magic))
	f.Add(make([]byte, HeaderSize))
	f.Fuzz(func(t *testing.T, data []byte) {
		h, err := unmarshalHeader(data)
		if err != nil {
			if h != (Header{}) {
				t.Fatalf("rejected header (%v) decoded to %+v", err, h)
			}
			return
		}
		if err := h.check(); err != nil {
			t.Fatalf("accepted header %+v fails its check: %v", h, err)
		}
		var enc [HeaderSize]byte
		h.marshal(enc[:])
		h2, err := unmarshalHeader(enc[:])
		if err != nil || h2 != h {
			t.Fatalf("header %+v re-encoded decodes to %+v, %v", h, h2, err)
		}
	})
}
