package raftstore

import (
	"bytes"
	"fmt"
	"io"
	"testing"

	"github.com/hashicorp/raft"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
)

// applyBoth applies the same write to a and b, and returns its index in a.
func applyBoth(t *testing.T, a, b *fsmDriver, cmd func() *pb.Command) uint64 {
	t.Helper()
	b.mustApply(cmd())
	return a.mustApply(cmd())
}

// applyHashAt is f's apply hash at rev; the test fails if it is not known.
func applyHashAt(t *testing.T, f *FSM, rev uint64) uint64 {
	t.Helper()
	sum, ok := f.ApplyHash(rev)
	if !ok {
		t.Fatalf("apply hash at revision %d not known (replica at %d)", rev, f.Revision())
	}
	return sum
}

func TestApplyHashEqualForSameHistory(t *testing.T) {
	a, b := newFSMDriver(t, 16), newFSMDriver(t, 16)
	var revs []uint64
	for i := range 20 {
		revs = append(revs, applyBoth(t, a, b, func() *pb.Command {
			return registerCmd(testInstance("api", fmt.Sprint(i), "n1"))
		}))
	}
	for _, rev := range revs {
		if ha, hb := applyHashAt(t, a.fsm, rev), applyHashAt(t, b.fsm, rev); ha != hb {
			t.Errorf("revision %d: hashes %x and %x differ for the same history", rev, ha, hb)
		}
	}
	if applyHashAt(t, a.fsm, revs[0]) == applyHashAt(t, a.fsm, revs[1]) {
		t.Errorf("the hash did not change with a write")
	}
}

func TestApplyHashDiffersFromADifferentEntryOn(t *testing.T) {
	a, b := newFSMDriver(t, 16), newFSMDriver(t, 16)
	for i := range 5 {
		applyBoth(t, a, b, func() *pb.Command { return registerCmd(testInstance("api", fmt.Sprint(i), "n1")) })
	}
	// At the same index, b applies an entry a never saw.
	diverged := a.mustApply(registerCmd(testInstance("api", "x", "n1")))
	b.mustApply(registerCmd(testInstance("api", "y", "n1")))
	if ha, hb := applyHashAt(t, a.fsm, diverged-1), applyHashAt(t, b.fsm, diverged-1); ha != hb {
		t.Errorf("revision %d, before the entries differ: hashes %x and %x differ", diverged-1, ha, hb)
	}
	// Later writes make both registries hold the same again (as a
	// diverged replica's may); the hashes still tell their histories
	// apart.
	a.mustApply(deregisterCmd("api", "x"))
	b.mustApply(deregisterCmd("api", "y"))
	last := applyBoth(t, a, b, func() *pb.Command { return registerCmd(testInstance("api", "z", "n1")) })
	for rev := diverged; rev <= last; rev++ {
		if ha, hb := applyHashAt(t, a.fsm, rev), applyHashAt(t, b.fsm, rev); ha == hb {
			t.Errorf("revision %d, from the entry that differs on: both hashes are %x", rev, ha)
		}
	}
}

// Entries that never reach the state machine as commands leave the hash
// as it was, whichever way the revision moves over them.
func TestApplyHashIgnoresEntriesThatChangeNothing(t *testing.T) {
	a, b := newFSMDriver(t, 16), newFSMDriver(t, 16)
	rev := applyBoth(t, a, b, func() *pb.Command { return registerCmd(testInstance("api", "1", "n1")) })
	// a sees a configuration entry; b's revision moves over a no-op.
	a.fsm.ApplyBatch([]*raft.Log{{Index: rev + 1, Term: 1, Type: raft.LogConfiguration}})
	b.fsm.skipTo(rev, rev+1)
	a.next, b.next = rev+2, rev+2
	next := applyBoth(t, a, b, func() *pb.Command { return registerCmd(testInstance("api", "2", "n1")) })
	if h := applyHashAt(t, a.fsm, rev+1); h != applyHashAt(t, a.fsm, rev) {
		t.Errorf("a configuration entry changed the hash")
	}
	for _, r := range []uint64{rev, rev + 1, next} {
		if ha, hb := applyHashAt(t, a.fsm, r), applyHashAt(t, b.fsm, r); ha != hb {
			t.Errorf("revision %d: hashes %x and %x differ", r, ha, hb)
		}
	}
}

func TestApplyHashRemembersTheLastCommands(t *testing.T) {
	d := newFSMDriver(t, 16)
	var first uint64
	for i := range applyHashRing + 10 {
		rev := d.mustApply(nodeUpsertCmd(&pb.Node{Name: fmt.Sprint("n", i%7)}))
		if i == 0 {
			first = rev
		}
	}
	rev := d.fsm.Revision()
	if _, ok := d.fsm.ApplyHash(rev + 1); ok {
		t.Errorf("hash known at revision %d, past the replica's %d", rev+1, rev)
	}
	if _, ok := d.fsm.ApplyHash(first); ok {
		t.Errorf("hash known at revision %d, %d commands ago", first, rev-first)
	}
	// What it remembers once the ring has come round is the hash at each
	// revision: that of the last command at or before it.
	sums := map[uint64]uint64{}
	for r := rev - applyHashRing + 1; r <= rev; r++ {
		sums[r] = applyHashAt(t, d.fsm, r)
	}
	d.fsm.skipTo(rev, rev+2) // two entries that change nothing
	d.next = rev + 3
	next := d.mustApply(nodeUpsertCmd(&pb.Node{Name: "last"}))
	delete(sums, rev-applyHashRing+1) // the oldest pair made room for next's
	for r, want := range sums {
		if got := applyHashAt(t, d.fsm, r); got != want {
			t.Fatalf("revision %d: hash %x, it was %x before the ring moved on", r, got, want)
		}
	}
	if got, want := applyHashAt(t, d.fsm, rev+2), sums[rev]; got != want {
		t.Errorf("revision %d, past entries that change nothing: hash %x, want %x as at %d", rev+2, got, want, rev)
	}
	if applyHashAt(t, d.fsm, next) == sums[rev] {
		t.Errorf("the command at %d did not change the hash", next)
	}
}

func TestApplyHashContinuesAfterSnapshotRestore(t *testing.T) {
	d := populatedFSM(t)
	data := snapshotBytes(t, d.fsm)
	rev := d.fsm.Revision()
	restored := NewFSM(16)
	if err := restored.Restore(io.NopCloser(bytes.NewReader(data))); err != nil {
		t.Fatal(err)
	}
	if got, want := applyHashAt(t, restored, rev), applyHashAt(t, d.fsm, rev); got != want {
		t.Fatalf("after restore: hash %x at revision %d, the snapshot's replica has %x", got, rev, want)
	}
	other := &fsmDriver{tb: t, fsm: restored, next: d.next}
	for i := range 3 {
		cmd := func() *pb.Command { return registerCmd(testInstance("after", fmt.Sprint(i), "n1")) }
		r := d.mustApply(cmd())
		other.mustApply(cmd())
		if got, want := applyHashAt(t, restored, r), applyHashAt(t, d.fsm, r); got != want {
			t.Errorf("revision %d after restore: hash %x, the snapshot's replica has %x", r, got, want)
		}
	}
	if _, ok := restored.ApplyHash(rev - 1); ok {
		t.Errorf("the restored replica claims to know its hash before the snapshot's revision")
	}
}

// A snapshot written before apply hashes existed restores a replica that
// knows none, and whose own snapshots then carry none.
func TestApplyHashUnknownAfterRestoreOfSnapshotWithout(t *testing.T) {
	d := populatedFSM(t)
	d.fsm.hash.start(0, 0, false) // as a replica restored from such a snapshot
	restored := NewFSM(16)
	if err := restored.Restore(io.NopCloser(bytes.NewReader(snapshotBytes(t, d.fsm)))); err != nil {
		t.Fatal(err)
	}
	other := &fsmDriver{tb: t, fsm: restored, next: d.next}
	rev := other.mustApply(registerCmd(testInstance("after", "1", "n1")))
	if sum, ok := restored.ApplyHash(rev); ok {
		t.Errorf("hash %x known at revision %d after restoring a snapshot that carried none", sum, rev)
	}
}

// restoredWithoutApplyHash returns a replica restored from a snapshot of
// d's state written before apply hashes existed, ready to apply d's next
// entry.
func restoredWithoutApplyHash(t *testing.T, d *fsmDriver) *fsmDriver {
	t.Helper()
	snap, err := d.fsm.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	s := snap.(*fsmSnapshot)
	s.hash, s.hashKnown = 0, false // as builds before apply hashes wrote it
	restored := NewFSM(16)
	if err := restored.Restore(io.NopCloser(bytes.NewReader(persistBytes(t, s)))); err != nil {
		t.Fatal(err)
	}
	return &fsmDriver{tb: t, fsm: restored, next: d.next}
}

func applyHashRestartCmd() *pb.Command {
	return &pb.Command{Kind: &pb.Command_ApplyHashRestart{ApplyHashRestart: &pb.ApplyHashRestart{}}}
}

// A replica restored from a snapshot without an apply hash and one that
// knew its hash throughout agree from an ApplyHashRestart on, and a
// snapshot taken after it carries the hash on.
func TestApplyHashRestartBringsAReplicaWithoutAHashInStep(t *testing.T) {
	known := populatedFSM(t)
	unknown := restoredWithoutApplyHash(t, known)
	before := applyBoth(t, known, unknown, func() *pb.Command { return registerCmd(testInstance("before", "1", "n1")) })
	if unknown.fsm.ApplyHashChainKnown() {
		t.Fatalf("a replica restored from a snapshot without an apply hash reports its chain known")
	}
	if _, ok := unknown.fsm.ApplyHash(before); ok {
		t.Fatalf("a replica restored from a snapshot without an apply hash knows its hash at %d", before)
	}
	if !known.fsm.ApplyHashChainKnown() {
		t.Fatalf("a replica that applied every entry reports its chain unknown")
	}

	restart := applyBoth(t, known, unknown, applyHashRestartCmd)
	for _, d := range []*fsmDriver{known, unknown} {
		if !d.fsm.ApplyHashChainKnown() || d.fsm.ApplyHashRestartedAt() != restart {
			t.Fatalf("after the restart at %d: chain known %v, restarted at %d", restart, d.fsm.ApplyHashChainKnown(), d.fsm.ApplyHashRestartedAt())
		}
	}
	revs := []uint64{restart}
	for i := range 3 {
		revs = append(revs, applyBoth(t, known, unknown, func() *pb.Command {
			return registerCmd(testInstance("after", fmt.Sprint(i), "n1"))
		}))
	}
	for _, rev := range revs {
		if hk, hu := applyHashAt(t, known.fsm, rev), applyHashAt(t, unknown.fsm, rev); hk != hu {
			t.Errorf("revision %d: hashes %x and %x differ after the restart", rev, hk, hu)
		}
	}
	if _, ok := known.fsm.ApplyHash(before); !ok {
		t.Errorf("the replica that knew its hash forgot it at %d, before the restart", before)
	}

	// A snapshot taken after the restart carries the hash to the replica
	// restored from it.
	last := revs[len(revs)-1]
	restored := NewFSM(16)
	if err := restored.Restore(io.NopCloser(bytes.NewReader(snapshotBytes(t, unknown.fsm)))); err != nil {
		t.Fatal(err)
	}
	if !restored.ApplyHashChainKnown() {
		t.Fatalf("restored from a snapshot taken after the restart, the replica does not know its hash")
	}
	if got, want := applyHashAt(t, restored, last), applyHashAt(t, known.fsm, last); got != want {
		t.Errorf("restored from a snapshot taken after the restart: hash %x at %d, want %x", got, last, want)
	}
}

// The hash a restart sets depends on its index alone: replicas whose
// hashes differed before it (one diverged) agree after it, and restarts
// at other indexes set other hashes.
func TestApplyHashRestartDependsOnTheIndexAlone(t *testing.T) {
	a, b := newFSMDriver(t, 16), newFSMDriver(t, 16)
	a.mustApply(registerCmd(testInstance("api", "x", "n1")))
	b.mustApply(registerCmd(testInstance("api", "y", "n1")))
	first := applyBoth(t, a, b, applyHashRestartCmd)
	if ha, hb := applyHashAt(t, a.fsm, first), applyHashAt(t, b.fsm, first); ha != hb {
		t.Errorf("restart at %d: hashes %x and %x differ", first, ha, hb)
	}
	second := applyBoth(t, a, b, applyHashRestartCmd)
	if applyHashAt(t, a.fsm, first) == applyHashAt(t, a.fsm, second) {
		t.Errorf("restarts at %d and %d set the same hash", first, second)
	}
}

// BenchmarkApplyHash measures what the apply hash adds to an applied
// registration's entry (compare BenchmarkFSMApplyRegister, per entry).
func BenchmarkApplyHash(b *testing.B) {
	var a applyHash
	a.start(0, 0, true)
	data := make([]byte, 300) // a registration's entry, as bench/registry writes them
	b.SetBytes(int64(len(data)))
	for i := 0; i < b.N; i++ {
		a.add(uint64(i+1), data)
	}
}
