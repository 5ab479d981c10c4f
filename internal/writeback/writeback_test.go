package writeback

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// A Writer writes every byte it is given, in order, and starts the file's
// writeback once per Interval bytes written, whatever the sizes of the
// writes.
func TestWriterStartsTheWritebackEveryInterval(t *testing.T) {
	for _, tc := range []struct {
		name   string
		chunk  int
		total  int
		starts int
	}{
		{"1 MiB writes", 1 << 20, 3*Interval + Interval/2, 3},
		{"odd writes", 12345, 2*Interval + 1, 2},
		{"one write larger than the interval", 2*Interval + 7, 2*Interval + 7, 1},
		{"less than the interval", 4096, Interval - 1, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "f")
			f, err := os.Create(path)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			starts := 0
			w := NewWriter(f)
			w.start = func(got *os.File) {
				if got != f {
					t.Errorf("writeback started on %v, want %v", got.Name(), f.Name())
				}
				starts++
				Start(got)
			}
			want := make([]byte, tc.total)
			for i := range want {
				want[i] = byte(i * 7)
			}
			for off := 0; off < len(want); off += tc.chunk {
				p := want[off:min(off+tc.chunk, len(want))]
				if n, err := w.Write(p); err != nil || n != len(p) {
					t.Fatalf("Write(%d bytes) = %d, %v", len(p), n, err)
				}
			}
			if starts != tc.starts {
				t.Errorf("%d bytes in writes of %d started the writeback %d times, want %d", tc.total, tc.chunk, starts, tc.starts)
			}
			if err := f.Sync(); err != nil {
				t.Fatal(err)
			}
			got, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("file holds %d bytes that differ from the %d written", len(got), len(want))
			}
		})
	}
}

// A failed write is reported as the file reports it, and counts only the
// bytes it wrote.
func TestWriterReportsAFailedWrite(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path) // read-only: every write fails
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	w := NewWriter(f)
	w.start = func(*os.File) { t.Error("writeback started although nothing was written") }
	for range 3 {
		if n, err := w.Write(make([]byte, Interval)); err == nil || n != 0 {
			t.Fatalf("Write to a read-only file = %d, %v; want 0 and an error", n, err)
		}
	}
}

// Start is advice: on a file that is closed, or not a regular file, it
// does nothing and does not fail.
func TestStartOnFilesItCannotWriteBack(t *testing.T) {
	f, err := os.CreateTemp(t.TempDir(), "f")
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	Start(f)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	Start(w)
}
