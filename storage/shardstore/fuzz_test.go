package shardstore

import (
	"bytes"
	"errors"
	"os"
	"testing"
)

// FuzzGet writes arbitrary bytes as a shard file and reads them back: Get,
// Stat and Verify never panic, agree with each other, and Get returns data
// only when the file is a consistent shard of that id.
//
//	go test -run '^$' -fuzz FuzzGet ./storage/shardstore/
func FuzzGet(f *testing.F) {
	id := ID{blobA, 3, 1}
	h, payload := shard(id, 4, 2, 5000, 1)
	var valid bytes.Buffer
	var hdr [HeaderSize]byte
	h.marshal(hdr[:])
	valid.Write(hdr[:])
	valid.Write(payload)
	f.Add(valid.Bytes())
	f.Add(valid.Bytes()[:HeaderSize])
	f.Add([]byte("ZSHD"))
	f.Add([]byte{})
	eh, _ := shard(id, 1, 0, 0, 1)
	eh.marshal(hdr[:])
	f.Add(hdr[:])

	s := open(f, f.TempDir(), Options{})
	path := s.Path(id)
	if err := os.MkdirAll(s.blobDir(id.Blob), 0o700); err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, file []byte) {
		if err := os.WriteFile(path, file, 0o600); err != nil {
			t.Fatal(err)
		}
		h, data, err := s.Get(id, nil)
		verr := s.Verify(id)
		sh, serr := s.Stat(id)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) || data != nil {
				t.Fatalf("Get = %d bytes, %v; want nil, ErrCorrupt", len(data), err)
			}
			if !errors.Is(verr, ErrCorrupt) {
				t.Fatalf("Get = %v but Verify = %v", err, verr)
			}
			return
		}
		if verr != nil || serr != nil || sh != h {
			t.Fatalf("Get succeeded but Verify = %v, Stat = %+v, %v", verr, sh, serr)
		}
		if h.ID != id || !bytes.Equal(data, file[HeaderSize:]) || h.check() != nil {
			t.Fatalf("Get = %+v, %d bytes from a %d-byte file", h, len(data), len(file))
		}
	})
}
