package raftstore

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// testLogData is entry i's data: its index, then filler up to 200 bytes.
func testLogData(i uint64) []byte {
	b := fmt.Appendf(nil, "entry-%d-", i)
	return append(b, bytes.Repeat([]byte{byte(i)}, 200-len(b))...)
}

func testLogEntry(i uint64) *raft.Log {
	return &raft.Log{Index: i, Term: i/50 + 1, Type: raft.LogCommand, Data: testLogData(i), AppendedAt: time.Unix(1700000000, int64(i))}
}

// openTestLog opens the log in dir with small segments (64 KiB), so that a
// few hundred entries span several of them.
func openTestLog(t testing.TB, dir string) (*logStore, error) {
	return openLog(logOptions{Dir: dir, Member: "agent-7", SegmentSize: 64 << 10})
}

func mustOpenTestLog(t testing.TB, dir string) *logStore {
	t.Helper()
	w, err := openTestLog(t, dir)
	if err != nil {
		t.Fatalf("open log: %v", err)
	}
	t.Cleanup(func() { w.Close() })
	return w
}

// storeTestLogs stores entries first..last in batches of batch.
func storeTestLogs(t testing.TB, w raft.LogStore, first, last uint64, batch int) {
	t.Helper()
	var logs []*raft.Log
	for i := first; i <= last; i++ {
		logs = append(logs, testLogEntry(i))
		if len(logs) == batch || i == last {
			if err := w.StoreLogs(logs); err != nil {
				t.Fatalf("StoreLogs %d..%d: %v", logs[0].Index, i, err)
			}
			logs = logs[:0]
		}
	}
}

// checkTestLogs checks that w holds exactly entries first..last as
// storeTestLogs wrote them.
func checkTestLogs(t testing.TB, w raft.LogStore, first, last uint64) {
	t.Helper()
	if got, err := w.FirstIndex(); err != nil || got != first {
		t.Fatalf("FirstIndex = %d, %v; want %d", got, err, first)
	}
	if got, err := w.LastIndex(); err != nil || got != last {
		t.Fatalf("LastIndex = %d, %v; want %d", got, err, last)
	}
	for i := first; i <= last; i++ {
		var got raft.Log
		if err := w.GetLog(i, &got); err != nil {
			t.Fatalf("GetLog(%d): %v", i, err)
		}
		if d := boltLogDiff(testLogEntry(i), &got); d != "" {
			t.Fatalf("entry %d: %s", i, d)
		}
	}
}

// segmentFiles returns the log's segment files in order.
func segmentFiles(t *testing.T, dir string) []string {
	t.Helper()
	names, err := filepath.Glob(filepath.Join(dir, "*"+walSegmentExt))
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(names)
	return names
}

// writtenEnd returns the offset past the last non-zero byte of a file.
func writtenEnd(t *testing.T, path string) int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return len(bytes.TrimRight(b, "\x00"))
}

func editFile(t *testing.T, path string, edit func(b []byte) []byte) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, edit(b), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestLogStoresEntriesAndStableValuesAcrossReopen(t *testing.T) {
	dir := t.TempDir()
	w := mustOpenTestLog(t, dir)
	storeTestLogs(t, w, 5, 700, 7)
	if err := w.SetUint64([]byte("CurrentTerm"), 9); err != nil {
		t.Fatal(err)
	}
	if err := w.Set([]byte("LastVoteCand"), []byte("n2")); err != nil {
		t.Fatal(err)
	}
	if err := w.DeleteRange(5, 99); err != nil { // what raft does after a snapshot
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if n := len(segmentFiles(t, dir)); n < 2 {
		t.Fatalf("%d segment files, want the entries to span several", n)
	}

	w = mustOpenTestLog(t, dir)
	checkTestLogs(t, w, 100, 700)
	if v, err := w.GetUint64([]byte("CurrentTerm")); err != nil || v != 9 {
		t.Errorf("CurrentTerm = %d, %v; want 9", v, err)
	}
	if v, err := w.Get([]byte("LastVoteCand")); err != nil || string(v) != "n2" {
		t.Errorf("LastVoteCand = %q, %v; want n2", v, err)
	}
	// A follower's conflicting suffix is deleted, and the log goes on from
	// there after a restart too.
	if err := w.DeleteRange(650, 700); err != nil {
		t.Fatal(err)
	}
	storeTestLogs(t, w, 650, 660, 3)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	w = mustOpenTestLog(t, dir)
	checkTestLogs(t, w, 100, 660)
}

// TestLogOpenRefusesDamagedFiles: a damaged wal-meta.db or segment is
// refused with an error naming the file and saying what to do; it never
// crashes the process, never cuts the log short, and is left as it was.
func TestLogOpenRefusesDamagedFiles(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	random := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		return b
	}
	meta := func(dir string) string { return filepath.Join(dir, walMetaFile) }
	first := func(t *testing.T, dir string) string { return segmentFiles(t, dir)[0] }
	tail := func(t *testing.T, dir string) string { s := segmentFiles(t, dir); return s[len(s)-1] }
	// middle flips a byte at two fifths of what the segment holds.
	middle := func(t *testing.T, path string) {
		at := writtenEnd(t, path) * 2 / 5
		editFile(t, path, func(b []byte) []byte { b[at] ^= 0x20; return b })
	}
	tests := []struct {
		name   string
		damage func(t *testing.T, dir string) string // returns the damaged file
		want   string
	}{
		{"wal-meta.db is random bytes", func(t *testing.T, dir string) string {
			editFile(t, meta(dir), func(b []byte) []byte { return random(len(b)) })
			return meta(dir)
		}, "not a bbolt file"},
		{"wal-meta.db truncated to half", func(t *testing.T, dir string) string {
			editFile(t, meta(dir), func(b []byte) []byte { return b[:len(b)/2] })
			return meta(dir)
		}, ""},
		{"wal-meta.db is empty", func(t *testing.T, dir string) string {
			editFile(t, meta(dir), func([]byte) []byte { return nil })
			return meta(dir)
		}, "the file is empty"},
		{"wal-meta.db is missing", func(t *testing.T, dir string) string {
			os.Remove(meta(dir))
			return meta(dir)
		}, "segment files are in"},
		{"flipped byte in the middle of a sealed segment", func(t *testing.T, dir string) string {
			middle(t, first(t, dir))
			return first(t, dir)
		}, ""},
		{"flipped byte in the middle of the last segment", func(t *testing.T, dir string) string {
			middle(t, tail(t, dir))
			return tail(t, dir)
		}, "a batch committed after it"},
		{"bytes zeroed in the middle of the last segment", func(t *testing.T, dir string) string {
			p := tail(t, dir)
			at := writtenEnd(t, p) / 2 &^ 7
			editFile(t, p, func(b []byte) []byte { clear(b[at : at+64]); return b })
			return p
		}, "a batch committed after it"},
		{"last segment truncated", func(t *testing.T, dir string) string {
			p := tail(t, dir)
			end := writtenEnd(t, p)
			editFile(t, p, func(b []byte) []byte { return b[:end/2] })
			return p
		}, "truncated"},
		{"sealed segment truncated", func(t *testing.T, dir string) string {
			p := first(t, dir)
			end := writtenEnd(t, p)
			editFile(t, p, func(b []byte) []byte { return b[:end/2] })
			return p
		}, "truncated"},
		{"last segment is random bytes", func(t *testing.T, dir string) string {
			p := tail(t, dir)
			editFile(t, p, func(b []byte) []byte { return random(len(b)) })
			return p
		}, ""},
		{"sealed segment is missing", func(t *testing.T, dir string) string {
			p := first(t, dir)
			os.Remove(p)
			return p
		}, "is missing"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			w := mustOpenTestLog(t, dir)
			storeTestLogs(t, w, 1, 500, 10)
			if err := w.SetUint64([]byte("CurrentTerm"), 3); err != nil {
				t.Fatal(err)
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			if n := len(segmentFiles(t, dir)); n < 2 {
				t.Fatalf("%d segment files, want several", n)
			}
			path := tc.damage(t, dir)
			before := snapshotDir(t, dir)

			w, err := openTestLog(t, dir)
			if err == nil {
				w.Close()
				t.Fatal("openLog accepted a damaged log")
			}
			if !errors.Is(err, ErrCorruptStore) {
				t.Errorf("err = %v, want ErrCorruptStore", err)
			}
			t.Log(err)
			msg := err.Error()
			for _, want := range []string{"raft log " + path + " is corrupt or truncated (", tc.want,
				"restore the data dir from a backup", "zrpcctl raft remove-peer agent-7"} {
				if !strings.Contains(msg, want) {
					t.Errorf("err = %q, want it to say %q", msg, want)
				}
			}
			if after := snapshotDir(t, dir); !mapsEqual(before, after) {
				t.Error("the damaged log was modified")
			}
		})
	}
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// TestLogOpenRecoversTornTail: a batch torn by a crash (never
// acknowledged) after the last one written is dropped, and every entry
// before it is kept.
func TestLogOpenRecoversTornTail(t *testing.T) {
	tests := []struct {
		name string
		torn func(at int) (int, []byte) // offset and bytes of the torn write
	}{
		{"partial entry frame", func(at int) (int, []byte) {
			return at, append([]byte{segFrameEntry, 0, 0, 0, 200, 0, 0, 0}, bytes.Repeat([]byte("x"), 90)...)
		}},
		{"whole batch with a commit frame that does not match", func(at int) (int, []byte) {
			b := append([]byte{segFrameEntry, 0, 0, 0, 8, 0, 0, 0}, "abcdefgh"...)
			return at, append(b, segFrameCommit, 0, 0, 0, 1, 2, 3, 4)
		}},
		{"entry frame lost, later sector written", func(at int) (int, []byte) {
			return at + 512, bytes.Repeat([]byte{0xa5}, 300)
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			w := mustOpenTestLog(t, dir)
			storeTestLogs(t, w, 1, 300, 10)
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			p := segmentFiles(t, dir)[len(segmentFiles(t, dir))-1]
			at, torn := tc.torn((writtenEnd(t, p) + 7) &^ 7)
			editFile(t, p, func(b []byte) []byte { copy(b[at:], torn); return b })

			w = mustOpenTestLog(t, dir)
			checkTestLogs(t, w, 1, 300)
			storeTestLogs(t, w, 301, 310, 5)
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			w = mustOpenTestLog(t, dir)
			checkTestLogs(t, w, 1, 310)
		})
	}
}

// TestLogOpenAcceptsASegmentNeverPreallocated: a crash between creating
// a segment and preallocating it leaves a short file, which raft-wal
// appends to as it is; it ends exactly after its last batch and is not
// taken for a truncated one.
func TestLogOpenAcceptsASegmentNeverPreallocated(t *testing.T) {
	dir := t.TempDir()
	w := mustOpenTestLog(t, dir)
	storeTestLogs(t, w, 1, 100, 10)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	p := segmentFiles(t, dir)[0]
	editFile(t, p, func(b []byte) []byte {
		walk, err := walkSegment(bytes.NewReader(b), int64(len(b)))
		if err != nil || walk.committed == 0 {
			t.Fatalf("walk: %+v, %v", walk, err)
		}
		return b[:walk.committed]
	})

	w = mustOpenTestLog(t, dir)
	checkTestLogs(t, w, 1, 100)
	storeTestLogs(t, w, 101, 120, 10)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	w = mustOpenTestLog(t, dir)
	checkTestLogs(t, w, 1, 120)
}

func TestLogOpenOfALockedLogFails(t *testing.T) {
	dir := t.TempDir()
	w := mustOpenTestLog(t, dir)
	storeTestLogs(t, w, 1, 3, 3)
	second, err := openTestLog(t, dir)
	if err == nil {
		second.Close()
		t.Fatal("a second open of a log in use succeeded")
	}
	if msg := err.Error(); !strings.Contains(msg, walMetaFile) || !strings.Contains(msg, "another agent") {
		t.Errorf("err = %q, want it to name %s and mention another agent", msg, walMetaFile)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	w = mustOpenTestLog(t, dir)
	checkTestLogs(t, w, 1, 3)
}

// countingFSM counts applied command entries.
type countingFSM struct {
	mu sync.Mutex
	n  uint64
}

func (f *countingFSM) Apply(l *raft.Log) any {
	f.mu.Lock()
	defer f.mu.Unlock()
	if l.Type == raft.LogCommand {
		f.n++
	}
	return nil
}

func (f *countingFSM) count() uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.n
}

func (f *countingFSM) Snapshot() (raft.FSMSnapshot, error) { return nil, errors.New("no snapshots") }

func (f *countingFSM) Restore(io.ReadCloser) error { return errors.New("no snapshots") }

// TestLogUnderRaft: raft runs on the log (fsync on) and replays it after
// a restart.
func TestLogUnderRaft(t *testing.T) {
	dir := t.TempDir()
	snaps := raft.NewInmemSnapshotStore()
	conf := raft.DefaultConfig()
	conf.LocalID = "n1"
	conf.HeartbeatTimeout = 50 * time.Millisecond
	conf.ElectionTimeout = 50 * time.Millisecond
	conf.LeaderLeaseTimeout = 50 * time.Millisecond
	conf.CommitTimeout = 5 * time.Millisecond
	conf.SnapshotThreshold = 1 << 20 // replay must come from the log
	conf.LogOutput = io.Discard

	start := func(addr raft.ServerAddress) (*raft.Raft, *logStore, *countingFSM, raft.ServerAddress) {
		t.Helper()
		store, err := openLog(logOptions{Dir: dir})
		if err != nil {
			t.Fatal(err)
		}
		addr, trans := raft.NewInmemTransport(addr)
		fsm := &countingFSM{}
		r, err := raft.NewRaft(conf, fsm, store, store, snaps, trans)
		if err != nil {
			t.Fatalf("NewRaft: %v", err)
		}
		t.Cleanup(func() {
			_ = r.Shutdown().Error()
			_ = trans.Close()
			_ = store.Close()
		})
		return r, store, fsm, addr
	}

	r, store, fsm, addr := start("")
	boot := raft.Configuration{Servers: []raft.Server{{ID: conf.LocalID, Address: addr}}}
	if err := r.BootstrapCluster(boot).Error(); err != nil {
		t.Fatalf("bootstrap: %v", err)
	}
	eventually(t, 10*time.Second, "leadership", func() bool { return r.State() == raft.Leader })
	const n = 100
	for i := range n {
		if err := r.Apply([]byte{byte(i)}, 5*time.Second).Error(); err != nil {
			t.Fatalf("Apply %d: %v", i, err)
		}
	}
	if err := r.Shutdown().Error(); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	lastBefore, err := store.LastIndex()
	if err != nil {
		t.Fatal(err)
	}
	if err := store.Close(); err != nil {
		t.Fatal(err)
	}

	r, store, fsm, _ = start(addr)
	if last, err := store.LastIndex(); err != nil || last != lastBefore {
		t.Fatalf("LastIndex after reopen = %d, %v; want %d", last, err, lastBefore)
	}
	if ok, err := raft.HasExistingState(store, store, snaps); err != nil || !ok {
		t.Fatalf("HasExistingState = %v, %v; want true", ok, err)
	}
	eventually(t, 10*time.Second, "FSM replay", func() bool { return fsm.count() >= n })
	if got := fsm.count(); got != n {
		t.Errorf("replayed FSM count = %d, want %d", got, n)
	}
	if err := r.Apply([]byte("after restart"), 5*time.Second).Error(); err != nil {
		t.Fatalf("Apply after restart: %v", err)
	}
}

// BenchmarkLogStoreLogs measures appends with fsync on, one batch each.
func BenchmarkLogStoreLogs(b *testing.B) {
	for _, batch := range []int{1, 64} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			w, err := openLog(logOptions{Dir: b.TempDir()})
			if err != nil {
				b.Fatal(err)
			}
			defer w.Close()
			data := bytes.Repeat([]byte("d"), 256)
			logs := make([]*raft.Log, batch)
			for i := range logs {
				logs[i] = &raft.Log{Term: 1, Type: raft.LogCommand, Data: data, AppendedAt: time.Now()}
			}
			b.SetBytes(int64(batch * len(data)))
			b.ResetTimer()
			next := uint64(1)
			for range b.N {
				for _, l := range logs {
					l.Index = next
					next++
				}
				if err := w.StoreLogs(logs); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
