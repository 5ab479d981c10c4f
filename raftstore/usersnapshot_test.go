package raftstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protodelim"

	"github.com/zrpcio/zrpc/api/apierr"
	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/snapshot"
)

// savedStore is a leading store with a cluster identity, a node, a
// session and n instances of two services.
func savedStore(t *testing.T, n int) *Store {
	t.Helper()
	cfg := testStoreConfig(t, t.TempDir(), slog.LevelWarn)
	cfg.NoSync = true
	s := openStore(t, New(cfg))
	mustStoreApply(t, s, clusterInitCmd(mustClusterInit(t)))
	mustStoreApply(t, s, nodeUpsertCmd(&pb.Node{Name: "n1"}))
	mustStoreApply(t, s, sessionCreateCmd("s1", "n1"))
	for i := range n {
		mustStoreApply(t, s, registerCmd(withSession(testInstance([]string{"api", "db"}[i%2], fmt.Sprint(i), "n1"), []string{"", "s1"}[i%2])))
	}
	return s
}

func saveBytes(t *testing.T, s *Store) []byte {
	t.Helper()
	var b bytes.Buffer
	hdr, err := s.WriteSnapshot(context.Background(), &b)
	if err != nil {
		t.Fatalf("WriteSnapshot: %v", err)
	}
	if hdr.Revision != s.FSM().Revision() || hdr.Index < hdr.Revision || hdr.Term == 0 {
		t.Fatalf("header %+v does not describe the store at revision %d", hdr, s.FSM().Revision())
	}
	return b.Bytes()
}

// A snapshot saved from one store and restored into another replaces the
// second's registry with the first's, at a revision past the second's own
// (so its watchers resynchronise), keeping the second's cluster identity.
func TestStoreRestoreReplacesStateAndMovesRevisionForward(t *testing.T) {
	for _, c := range []struct {
		name string
		a, b int
	}{{"into a cluster further along", 20, 60}, {"into a cluster behind the file", restoreIndexGap + 100, 5}} {
		t.Run(c.name, func(t *testing.T) { testRestoreRoundTrip(t, c.a, c.b) })
	}
}

// testRestoreRoundTrip saves a store with na instances and restores it into
// one with nb.
func testRestoreRoundTrip(t *testing.T, na, nb int) {
	a := savedStore(t, na)
	file := saveBytes(t, a)
	want := stateOf(a.FSM())
	state := func(file []byte) []byte { return file[snapshot.HeaderSize : len(file)-snapshot.TrailerSize] }
	if again := saveBytes(t, a); !bytes.Equal(state(again), state(file)) {
		t.Fatal("a second save with nothing new holds another state")
	}

	if secret := a.FSM().ClusterSecret(); len(secret) == 0 || bytes.Contains(file, secret) {
		t.Fatalf("the snapshot file holds the cluster's secret (%d bytes), with which agents prove they belong", len(secret))
	}
	info, err := snapshot.Inspect(bytes.NewReader(file))
	if err != nil || info.ClusterID != a.FSM().ClusterID() {
		t.Fatalf("inspecting the file: cluster %q, %v; want it to name its cluster %s", info.ClusterID, err, a.FSM().ClusterID())
	}

	b := savedStore(t, nb)
	bID, bSecret := b.FSM().ClusterID(), b.FSM().ClusterSecret()
	before := b.FSM().Revision()
	w := b.FSM().Watch("", before)
	defer w.Close()

	rev, err := b.RestoreSnapshot(context.Background(), bytes.NewReader(file))
	if err != nil {
		t.Fatalf("RestoreSnapshot: %v", err)
	}
	if rev <= before || rev <= want.revision {
		t.Fatalf("revision after the restore is %d, not past the store's %d and the file's %d", rev, before, want.revision)
	}
	got := stateOf(b.FSM())
	want.revision = got.revision
	if d := diffStates(want, got); d != "" {
		t.Fatalf("restored state differs:\n%s", d)
	}
	if id := b.FSM().ClusterID(); id != bID || !bytes.Equal(b.FSM().ClusterSecret(), bSecret) {
		t.Fatalf("cluster id after the restore is %q, want the restored cluster's own %q, and its own secret", id, bID)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := w.Next(ctx)
	if err != nil {
		t.Fatalf("the watcher got nothing after the restore: %v", err)
	}
	if !resp.Snapshot || resp.Header.Revision < rev {
		t.Fatalf("the watcher got snapshot=%v at revision %d, want a snapshot at %d or later", resp.Snapshot, resp.Header.Revision, rev)
	}
	// Writes go on after the restore, at revisions past it.
	if r := mustStoreApply(t, b, registerCmd(testInstance("api", "after", "n1"))); r <= rev {
		t.Fatalf("a write after the restore has revision %d, not past %d", r, rev)
	}
}

// A file that is damaged, or whose state the state machine refuses, is
// refused before anything changes.
func TestStoreRestoreRefusesBadFilesLeavingStateAlone(t *testing.T) {
	good := saveBytes(t, savedStore(t, 5))
	flipped := bytes.Clone(good)
	flipped[snapshot.HeaderSize+40] ^= 0x10
	var bad bytes.Buffer // an intact file whose instance has no id
	var state bytes.Buffer
	state.WriteString(snapshot.StateMagic)
	protodelim.MarshalTo(&state, &pb.SnapshotHeader{Format: snapshot.StateFormat, Revision: 9, Instances: 1})
	protodelim.MarshalTo(&state, &pb.Instance{Service: "api"})
	sw, _ := snapshot.NewWriter(&bad, snapshot.Header{Revision: 9, Size: uint64(state.Len())})
	sw.Write(state.Bytes())
	sw.Close()

	b := savedStore(t, 8)
	want := stateOf(b.FSM())
	for _, c := range []struct {
		name, file, text string
	}{
		{"flipped byte", string(flipped), "SHA-256"},
		{"truncated", string(good[:len(good)/2]), "truncated"},
		{"wrong magic", "XRPCSNAP" + string(good[8:]), "not a zrpc snapshot"},
		{"state the FSM refuses", bad.String(), "has no service or id"},
	} {
		_, err := b.RestoreSnapshot(context.Background(), strings.NewReader(c.file))
		if !errors.Is(err, apierr.ErrInvalidArgument) || !strings.Contains(err.Error(), c.text) {
			t.Errorf("%s: RestoreSnapshot = %v, want InvalidArgument mentioning %q", c.name, err, c.text)
		}
	}
	if d := diffStates(want, stateOf(b.FSM())); d != "" {
		t.Fatalf("a refused restore changed the state:\n%s", d)
	}
}

// reheader returns the snapshot file with its header changed by edit and
// its trailer recomputed: a file whose checksum holds whatever its header
// says.
func reheader(t *testing.T, file []byte, edit func(*snapshot.Header)) []byte {
	t.Helper()
	sr, err := snapshot.NewReader(bytes.NewReader(file))
	if err != nil {
		t.Fatal(err)
	}
	hdr := sr.Header
	edit(&hdr)
	var out bytes.Buffer
	sw, err := snapshot.NewWriter(&out, hdr)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(sw, sr); err != nil {
		t.Fatal(err)
	}
	if err := sw.Close(); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

// A file whose header names a revision below its state's, or an index so
// high that the index past it wraps around, is refused: the restore would
// rebase the state to a revision its own instances are past, which the
// state machine refuses once raft has started the restore, and raft stops
// the agent on that.
func TestStoreRestoreRefusesAHeaderBehindItsState(t *testing.T) {
	file := saveBytes(t, savedStore(t, restoreIndexGap+100))
	b := savedStore(t, 5)
	want := stateOf(b.FSM())
	for _, c := range []struct {
		name string
		edit func(*snapshot.Header)
	}{
		{"revision behind the state", func(h *snapshot.Header) { h.Index, h.Revision = 1, 1 }},
		// The restore's index, past the file's, would wrap around to
		// one behind the state's revision.
		{"index at the end of the range", func(h *snapshot.Header) { h.Index = math.MaxUint64 }},
	} {
		lying := reheader(t, file, c.edit)
		if _, err := CheckSnapshotFile(bytes.NewReader(lying)); !errors.Is(err, apierr.ErrInvalidArgument) || !strings.Contains(err.Error(), "revision") {
			t.Errorf("%s: CheckSnapshotFile = %v, want InvalidArgument naming the revisions", c.name, err)
		}
		if _, err := b.RestoreSnapshot(context.Background(), bytes.NewReader(lying)); !errors.Is(err, apierr.ErrInvalidArgument) {
			t.Fatalf("%s: RestoreSnapshot = %v, want InvalidArgument", c.name, err)
		}
	}
	if d := diffStates(want, stateOf(b.FSM())); d != "" {
		t.Fatalf("a refused restore changed the state:\n%s", d)
	}
}

// A restore whose caller has gone (cancelled, or its deadline passed
// while the file was checked) is not handed to raft, which takes no
// context: the state stays as it was and the error says so.
func TestStoreRestoreOfAGoneCallerChangesNothing(t *testing.T) {
	file := saveBytes(t, savedStore(t, 3))
	b := savedStore(t, 6)
	want := stateOf(b.FSM())
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	expired, cancel2 := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel2()
	for name, ctx := range map[string]context.Context{"cancelled": cancelled, "deadline passed": expired} {
		_, err := b.RestoreSnapshot(ctx, bytes.NewReader(file))
		if err == nil || !apierr.IsNotApplied(err) {
			t.Errorf("%s: RestoreSnapshot = %v, want an error marked not applied", name, err)
		}
	}
	if d := diffStates(want, stateOf(b.FSM())); d != "" {
		t.Fatalf("a restore for a caller that had gone changed the state:\n%s", d)
	}
}
