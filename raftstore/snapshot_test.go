package raftstore

import (
	"bufio"
	"bytes"
	"fmt"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protodelim"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
)

// Reading a snapshot's records reuses one buffer: a record of numbers
// decodes without allocating, where a buffer per record would allocate
// once per instance of a restore.
func TestSnapshotRecordReaderReusesItsBuffer(t *testing.T) {
	var b bytes.Buffer
	const records = 1000
	for i := range records + 1 {
		if _, err := protodelim.MarshalTo(&b, &pb.SnapshotHeader{Format: 2, Revision: uint64(i), Instances: uint64(i * 7)}); err != nil {
			t.Fatal(err)
		}
	}
	rr := &recordReader{r: bufio.NewReader(&b), max: maxSnapshotRecord}
	var hdr pb.SnapshotHeader
	if err := rr.read(&hdr); err != nil { // the first read makes the buffer
		t.Fatal(err)
	}
	want := uint64(1)
	allocs := testing.AllocsPerRun(records-1, func() {
		if err := rr.read(&hdr); err != nil {
			t.Fatal(err)
		}
		if hdr.Revision != want || hdr.Instances != want*7 {
			t.Fatalf("record %d read as %v", want, &hdr)
		}
		want++
	})
	if allocs != 0 {
		t.Errorf("reading a record allocates %.1f times, want 0", allocs)
	}
}

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
