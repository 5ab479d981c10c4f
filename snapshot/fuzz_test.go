package snapshot

import (
	"bytes"
	"testing"
)

// FuzzInspect feeds arbitrary bytes to Inspect twice: as a whole file, and
// as the state of a file with a correct header and trailer (so that the
// walk of the state stream is reached, which a damaged hash would stop).
// Inspect never panics, and a file it accepts passes Verify with the same
// header.
func FuzzInspect(f *testing.F) {
	good := testFile(f)
	f.Add(good)
	f.Add(good[:HeaderSize])
	f.Add([]byte(magic))
	f.Add(testState(f, 0))
	f.Add(flip(testState(f, 0), len(StateMagic)+3))
	f.Fuzz(func(t *testing.T, data []byte) {
		var wrapped bytes.Buffer
		w, err := NewWriter(&wrapped, Header{Size: uint64(len(data))})
		if err != nil {
			t.Fatal(err)
		}
		w.Write(data)
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		for _, file := range [][]byte{data, wrapped.Bytes()} {
			info, err := Inspect(bytes.NewReader(file))
			if err != nil {
				continue
			}
			hdr, _, err := Verify(bytes.NewReader(file))
			if err != nil {
				t.Fatalf("Inspect accepted a file Verify refuses: %v", err)
			}
			if hdr != info.Header || info.FileSize != uint64(len(file)) {
				t.Fatalf("Inspect's header %+v (file size %d) differs from Verify's %+v (%d bytes)", info.Header, info.FileSize, hdr, len(file))
			}
		}
	})
}
