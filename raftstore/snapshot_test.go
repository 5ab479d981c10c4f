package raftstore

import (
	"bytes"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/snapshot"
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

// A snapshot with two blobs of one name or one id is refused: the state
// machine indexes blobs by both, and never holds two such.
func TestRestoreRefusesRepeatedBlobs(t *testing.T) {
	for _, c := range []struct {
		name string
		a, b *pb.Blob
	}{
		{"repeated id", &pb.Blob{Name: "x", Id: "1"}, &pb.Blob{Name: "y", Id: "1"}},
		{"repeated name", &pb.Blob{Name: "x", Id: "1"}, &pb.Blob{Name: "x", Id: "2"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			var state bytes.Buffer
			sw := snapshot.NewStateWriter(&state, &pb.SnapshotHeader{Revision: 5, Blobs: 2})
			sw.WriteBlob(c.a)
			sw.WriteBlob(c.b)
			if err := sw.Close(); err != nil {
				t.Fatal(err)
			}
			f := NewFSM(16)
			err := f.Restore(io.NopCloser(&state))
			if err == nil || !strings.Contains(err.Error(), "repeated") {
				t.Fatalf("Restore = %v, want the repeated blob refused", err)
			}
			if blobs, _ := f.Blobs(""); len(blobs) != 0 || f.Revision() != 0 {
				t.Fatalf("a refused restore left %d blobs at revision %d", len(blobs), f.Revision())
			}
		})
	}
}
