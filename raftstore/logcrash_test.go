package raftstore

import (
	"bufio"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	wal "github.com/hashicorp/raft-wal"
	"github.com/hashicorp/raft-wal/metadb"
)

// crashChildEnv names the log directory of the child process
// TestLogKeepsEveryAppendAcrossKill9 starts.
const crashChildEnv = "ZRPC_RAFTSTORE_CRASH_CHILD_DIR"

// TestLogKeepsEveryAppendAcrossKill9: a process appending to the log is
// killed with SIGKILL; every entry it had been told was stored is there
// after a reopen, contiguous and with its data, and the log goes on.
func TestLogKeepsEveryAppendAcrossKill9(t *testing.T) {
	if dir := os.Getenv(crashChildEnv); dir != "" {
		appendUntilKilled(dir)
		return
	}
	if testing.Short() {
		t.Skip("starts child processes")
	}
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(11, 12))
	var acked uint64 // highest index any child reported stored
	for round := range 4 {
		killAfter := 50 + rng.IntN(250)
		reported := runAndKill(t, dir, killAfter)
		if len(reported) == 0 {
			t.Fatalf("round %d: the child reported no append", round)
		}
		for _, idx := range reported {
			acked = max(acked, idx)
		}
		w := mustOpenTestLog(t, dir)
		first, err := w.FirstIndex()
		if err != nil {
			t.Fatal(err)
		}
		last, err := w.LastIndex()
		if err != nil {
			t.Fatal(err)
		}
		if first != 1 || last < acked {
			t.Fatalf("round %d: log holds %d..%d, want 1..%d or more (every reported append)", round, first, last, acked)
		}
		checkTestLogs(t, w, 1, last) // contiguous, each with its data
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		t.Logf("round %d: killed after %d appends reported, the log holds 1..%d", round, len(reported), last)
	}
}

// runAndKill runs a child appending to the log in dir and kills it with
// SIGKILL once it has reported killAfter appends (or after 10 s); it
// returns the indexes the child reported stored.
func runAndKill(t *testing.T, dir string, killAfter int) []uint64 {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestLogKeepsEveryAppendAcrossKill9$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashChildEnv+"="+dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	timer := time.AfterFunc(10*time.Second, func() { _ = cmd.Process.Kill() })
	defer timer.Stop()
	var reported []uint64
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		var idx uint64
		// A line cut by the kill does not end in " ok" and is not counted.
		if line := sc.Text(); strings.HasSuffix(line, " ok") {
			if _, err := fmt.Sscanf(line, "stored %d ok", &idx); err == nil {
				reported = append(reported, idx)
			}
		}
		if len(reported) == killAfter {
			_ = cmd.Process.Kill()
		}
	}
	_ = cmd.Wait()
	return reported
}

// appendUntilKilled is the child: it appends entries after the last one in
// the log, in batches of 1 to 8, and prints each index once StoreLogs has
// returned, until killed (or after 5000 entries). Errors go to stderr, and
// the parent sees no more appends.
func appendUntilKilled(dir string) {
	w, err := openLog(logOptions{Dir: dir, SegmentSize: 64 << 10})
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		return
	}
	next, err := w.LastIndex()
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		return
	}
	next++
	rng := rand.New(rand.NewPCG(uint64(os.Getpid()), 1))
	for end := next + 5000; next < end; {
		batch := make([]*raft.Log, 1+rng.IntN(8))
		for i := range batch {
			batch[i] = testLogEntry(next + uint64(i))
		}
		if err := w.StoreLogs(batch); err != nil {
			fmt.Fprintln(os.Stderr, "child:", err)
			return
		}
		for range batch {
			fmt.Printf("stored %d ok\n", next)
			next++
		}
	}
}

// TestLogOpenFinishesARotationACrashInterrupted: raft-wal seals a full
// segment in the append that fills it and records the rotation to a new
// segment afterwards, in the background. A crash in between leaves a tail
// segment that raft-wal opens for appends and then refuses every one; the
// log records the rotation when it opens, and goes on.
func TestLogOpenFinishesARotationACrashInterrupted(t *testing.T) {
	dir := t.TempDir()
	w := mustOpenTestLog(t, dir)
	first := ""
	last := uint64(0)
	for i := uint64(1); i < 10000; i++ {
		storeTestLogs(t, w, i, i, 1)
		if first == "" {
			first = segmentFiles(t, dir)[0]
		}
		f, err := os.Open(first)
		if err != nil {
			t.Fatal(err)
		}
		fi, _ := f.Stat()
		walk, err := walkSegment(f, fi.Size())
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		if walk.indexStart > 0 {
			last = i
			break
		}
	}
	if last == 0 {
		t.Fatal("no append sealed the first segment")
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	// Undo the rotation, as a crash before it would have left the files.
	meta := &metadb.BoltMetaDB{}
	st, err := meta.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	seg := st.Segments[0]
	seg.SealTime, seg.MaxIndex, seg.IndexStart = time.Time{}, 0, 0
	st.Segments, st.NextSegmentID = st.Segments[:1], seg.ID+1
	st.Segments[0] = seg
	if err := meta.CommitState(st); err != nil {
		t.Fatal(err)
	}
	if err := meta.Close(); err != nil {
		t.Fatal(err)
	}
	for _, p := range segmentFiles(t, dir)[1:] {
		os.Remove(p)
	}
	raw, err := wal.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	err = raw.StoreLogs([]*raft.Log{testLogEntry(last + 1)})
	raw.Close()
	if !errors.Is(err, wal.ErrSealed) {
		t.Fatalf("raft-wal's own open then append = %v, want ErrSealed (the failure the log works around)", err)
	}

	w = mustOpenTestLog(t, dir)
	checkTestLogs(t, w, 1, last)
	storeTestLogs(t, w, last+1, last+20, 4)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	w = mustOpenTestLog(t, dir)
	checkTestLogs(t, w, 1, last+20)
}
