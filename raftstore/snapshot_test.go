package raftstore

import (
	"bytes"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

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
	var listed []instanceRecord
	err := snapshot.ReadState(bytes.NewReader(snapshotBytes(t, d.fsm)), snapshot.StateRecords{
		Instance: func(inst *pb.Instance) error {
			listed = append(listed, instanceRecord{service: inst.Service, id: inst.Id})
			return nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(listed) != 30 {
		t.Fatalf("snapshot holds %d instances, want 30", len(listed))
	}
	if !slices.IsSortedFunc(listed, func(a, b instanceRecord) int {
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

// A snapshot holding a record the state machine would never hold (a
// node without a name, a session or pending blob without an id or with
// one repeated, a request record without an id) is refused, naming the
// record, and leaves the replica as it was: such records cost memory when
// loaded and nothing could ever reach them.
func TestRestoreRefusesRecordsWithoutKey(t *testing.T) {
	for _, c := range []struct {
		name string
		hdr  *pb.SnapshotHeader
		recs []proto.Message
		want string
	}{
		{"node without name", &pb.SnapshotHeader{Nodes: 1},
			[]proto.Message{&pb.Node{GrpcAddress: "127.0.0.1:1"}}, "node 1 of 1: the node name is empty"},
		{"repeated node", &pb.SnapshotHeader{Nodes: 2},
			[]proto.Message{&pb.Node{Name: "n1"}, &pb.Node{Name: "n1"}}, `node 2 of 2: the node name "n1" is repeated`},
		{"session without id", &pb.SnapshotHeader{Sessions: 1},
			[]proto.Message{&pb.Session{Node: "n1"}}, "session 1 of 1: the session id is empty"},
		{"repeated session", &pb.SnapshotHeader{Sessions: 2},
			[]proto.Message{&pb.Session{Id: "s1"}, &pb.Session{Id: "s1"}}, `session 2 of 2: the session id "s1" is repeated`},
		{"request without id", &pb.SnapshotHeader{Requests: 1},
			[]proto.Message{&pb.RequestRecord{Revision: 3}}, "request record 1 of 1: the request record has no id"},
		{"pending blob without id", &pb.SnapshotHeader{PendingBlobs: 1},
			[]proto.Message{&pb.BlobPending{Node: "n1"}}, "pending blob 1 of 1: the pending blob id is empty"},
		{"repeated pending blob", &pb.SnapshotHeader{PendingBlobs: 2},
			[]proto.Message{&pb.BlobPending{Id: "p1", Node: "n1"}, &pb.BlobPending{Id: "p1", Node: "n1"}},
			`pending blob 2 of 2: the pending blob id "p1" is repeated`},
		{"pending blob without node", &pb.SnapshotHeader{PendingBlobs: 1},
			[]proto.Message{&pb.BlobPending{Id: "p1"}}, "pending blob 1 of 1: pending blob p1 has no node"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var state bytes.Buffer
			c.hdr.Revision = 5
			sw := snapshot.NewStateWriter(&state, c.hdr)
			for _, m := range c.recs {
				sw.Write(m)
			}
			if err := sw.Close(); err != nil {
				t.Fatal(err)
			}
			fsm := randomFSM(t, 1, 20)
			before := fullState(fsm)
			err := fsm.Restore(io.NopCloser(&state))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Restore = %v, want an error saying %q", err, c.want)
			}
			if after := fullState(fsm); after != before {
				t.Fatalf("a refused restore changed the replica:\nbefore:\n%s\nafter:\n%s", before, after)
			}
		})
	}
}
