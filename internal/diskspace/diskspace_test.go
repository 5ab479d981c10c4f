package diskspace

import (
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestFreeIsStatfsAvailableSpace: Free is what statfs says an
// unprivileged writer has (within what other writers change between the
// two reads), and a directory that is not there is an error naming it.
func TestFreeIsStatfsAvailableSpace(t *testing.T) {
	dir := t.TempDir()
	got, err := Free(dir)
	if err != nil {
		t.Fatal(err)
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	want := uint64(st.Bavail) * uint64(st.Bsize)
	if got == 0 || max(got, want)-min(got, want) > 64<<20 {
		t.Fatalf("Free = %d, statfs says %d", got, want)
	}
	gone := filepath.Join(dir, "gone")
	if _, err := Free(gone); err == nil || !strings.Contains(err.Error(), gone) {
		t.Fatalf("Free of a missing directory: %v, want an error naming it", err)
	}
}
