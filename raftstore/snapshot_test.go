package raftstore

import (
	"bytes"
	"fmt"
	"slices"
	"strings"
	"testing"
)

// A persisted snapshot lists the instances sorted by service and id,
// whatever the order they were registered in, so Restore finds each
// service's instances together and replicas write the same file.
func TestSnapshotListsInstancesSorted(t *testing.T) {
	d := newFSMDriver(t, 16)
	for i := 29; i >= 0; i-- {
		d.mustApply(registerCmd(testInstance([]string{"b", "a", "c"}[i%3], fmt.Sprintf("%02d", i), "n1")))
	}
	snap, err := readSnapshot(bytes.NewReader(snapshotBytes(t, d.fsm)))
	if err != nil {
		t.Fatal(err)
	}
	if len(snap.instances) != 30 {
		t.Fatalf("snapshot holds %d instances, want 30", len(snap.instances))
	}
	if !slices.IsSortedFunc(snap.instances, func(a, b instanceRecord) int {
		if c := strings.Compare(a.service, b.service); c != 0 {
			return c
		}
		return strings.Compare(a.id, b.id)
	}) {
		t.Errorf("snapshot instances are not sorted by service and id")
	}
}
