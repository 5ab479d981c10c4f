package snapshot

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protodelim"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
)

// Reading a snapshot's records reuses one buffer: a record of numbers
// decodes without allocating, where a buffer per record would allocate
// once per instance of a restore.
func TestStateRecordReaderReusesItsBuffer(t *testing.T) {
	var b bytes.Buffer
	const records = 1000
	for i := range records + 1 {
		if _, err := protodelim.MarshalTo(&b, &pb.SnapshotHeader{Format: 2, Revision: uint64(i), Instances: uint64(i * 7)}); err != nil {
			t.Fatal(err)
		}
	}
	rr := &recordReader{r: bufio.NewReader(&b)}
	var hdr pb.SnapshotHeader
	if err := rr.read(&hdr, MaxStateRecord); err != nil { // the first read makes the buffer
		t.Fatal(err)
	}
	want := uint64(1)
	allocs := testing.AllocsPerRun(records-1, func() {
		if err := rr.read(&hdr, MaxStateRecord); err != nil {
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

// What StateWriter writes, ReadState reads back record for record, in the
// stream's order, with a blob's blocks put back into it; the format says
// whether there is ACL state.
func TestStateWriterOutputReadsBack(t *testing.T) {
	blob := &pb.Blob{Name: "model", Id: "b1", DataShards: 1, Blocks: []*pb.BlobBlock{{Len: 1}, {Len: 2}}}
	for _, acl := range []bool{false, true} {
		var b bytes.Buffer
		hdr := &pb.SnapshotHeader{Revision: 7, Nodes: 1, Instances: 2, Blobs: 1}
		if acl {
			hdr.AclPolicies = 1
		}
		sw := NewStateWriter(&b, hdr)
		sw.Write(&pb.Node{Name: "n1"})
		sw.Write(&pb.Instance{Service: "api", Id: "1"})
		sw.Write(&pb.Instance{Service: "api", Id: "2"})
		sw.WriteBlob(blob)
		if acl {
			sw.Write(&pb.ACLPolicy{Name: "p"})
		}
		if err := sw.Close(); err != nil {
			t.Fatal(err)
		}
		var got []string
		note := func(m proto.Message) error {
			got = append(got, string(m.ProtoReflect().Descriptor().Name()))
			return nil
		}
		err := ReadState(bytes.NewReader(b.Bytes()), StateRecords{
			Header:    func(h *pb.SnapshotHeader) error { got = append(got, fmt.Sprint("format ", h.Format)); return nil },
			Node:      func(m *pb.Node) error { return note(m) },
			Instance:  func(m *pb.Instance) error { return note(m) },
			ACLPolicy: func(m *pb.ACLPolicy) error { return note(m) },
			Blob: func(m *pb.Blob) error {
				if !proto.Equal(m, blob) {
					t.Errorf("blob read back as %v, want %v", m, blob)
				}
				return note(m)
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		want := "format 2 Node Instance Instance Blob"
		if acl {
			want = "format 3 Node Instance Instance Blob ACLPolicy"
		}
		if s := strings.Join(got, " "); s != want {
			t.Errorf("read back %q, want %q", s, want)
		}
	}
}

// ReadState refuses a stream whose framing is wrong, naming what is.
func TestReadStateRefusesBadFraming(t *testing.T) {
	state := testState(t, 5)
	cases := []struct {
		name  string
		state []byte
		text  string
	}{
		{"wrong magic", append([]byte("zrpc-registry-snapshoT\n"), state[len(StateMagic):]...), "not a registry snapshot"},
		{"missing record", state[:len(state)-3], "ACL token 1 of 1"},
		{"bytes after the last record", append(bytes.Clone(state), 0), "bytes after its last record"},
		{"oversized record", append([]byte(StateMagic), 0xff, 0xff, 0xff, 0xff, 0x0f), "larger than"},
	}
	for _, c := range cases {
		err := ReadState(bytes.NewReader(c.state), StateRecords{})
		if err == nil || !strings.Contains(err.Error(), c.text) {
			t.Errorf("%s: %v, want an error mentioning %q", c.name, err, c.text)
		}
	}
	if err := ReadState(bytes.NewReader(state), StateRecords{}); err != nil {
		t.Fatalf("the good stream: %v", err)
	}
}

// stateWithHeaderOf is a state stream with no records whose header
// record, padded with an unknown field, has about size bytes.
func stateWithHeaderOf(t *testing.T, size int) []byte {
	t.Helper()
	hdr, err := proto.Marshal(&pb.SnapshotHeader{Format: StateFormat, Revision: 5})
	if err != nil {
		t.Fatal(err)
	}
	hdr = protowire.AppendTag(hdr, 1000, protowire.BytesType)
	hdr = protowire.AppendBytes(hdr, make([]byte, size))
	b := []byte(StateMagic)
	b = protowire.AppendBytes(b, hdr)
	return b
}

// The header record is bounded by MaxStateHeader, well above what the
// registry writes (counts and the cluster's identity): a larger one is
// refused alike by ReadState (a restore's check) and ReadStateHeader (the
// rebase that follows it, which holds the header in a reader's buffer).
func TestStateHeaderIsBounded(t *testing.T) {
	for _, c := range []struct {
		size int
		ok   bool
	}{{1 << 10, true}, {MaxStateHeader + 1, false}, {300 << 10, false}, {MaxStateRecord - 100, false}} {
		state := stateWithHeaderOf(t, c.size)
		rerr := ReadState(bytes.NewReader(state), StateRecords{})
		_, _, herr := ReadStateHeader(bufio.NewReaderSize(bytes.NewReader(state), 256<<10))
		if c.ok {
			if rerr != nil || herr != nil {
				t.Errorf("a header of %d bytes: ReadState = %v, ReadStateHeader = %v; want both to read it", c.size, rerr, herr)
			}
			continue
		}
		for _, err := range []error{rerr, herr} {
			if err == nil || !strings.Contains(err.Error(), "header") || !strings.Contains(err.Error(), fmt.Sprintf("larger than the %d", MaxStateHeader)) {
				t.Errorf("a header of %d bytes: ReadState = %v, ReadStateHeader = %v; want both to refuse it as larger than %d", c.size, rerr, herr, MaxStateHeader)
				break
			}
		}
	}
	sw := NewStateWriter(io.Discard, &pb.SnapshotHeader{Cluster: &pb.ClusterInit{RecoveredFrom: make([]string, MaxStateHeader)}})
	if err := sw.Close(); err == nil || !strings.Contains(err.Error(), "SnapshotHeader") {
		t.Errorf("StateWriter wrote a header larger than %d bytes (%v)", MaxStateHeader, err)
	}
}

// StateRecords.Sized is told the length of every record ReadState decodes
// after the header, before it decodes it, and an error it returns stops
// the read there: a reader bounding what it loads takes no record past
// its bound.
func TestStateSizedSeesEachRecordBeforeItIsDecoded(t *testing.T) {
	var b bytes.Buffer
	nodes := []*pb.Node{{Name: "a"}, {Name: "bb"}, {Name: "ccc"}}
	sw := NewStateWriter(&b, &pb.SnapshotHeader{Revision: 1, Nodes: uint64(len(nodes))})
	for _, n := range nodes {
		sw.Write(n)
	}
	if err := sw.Close(); err != nil {
		t.Fatal(err)
	}
	var sizes []int
	var decoded []string
	errFull := fmt.Errorf("full")
	err := ReadState(bytes.NewReader(b.Bytes()), StateRecords{
		Node: func(n *pb.Node) error {
			decoded = append(decoded, n.Name)
			return nil
		},
		Sized: func(size int) error {
			sizes = append(sizes, size)
			if len(sizes) == 3 {
				return errFull
			}
			return nil
		},
	})
	if err == nil || !strings.Contains(err.Error(), "node 3 of 3: full") {
		t.Fatalf("ReadState = %v, want the third node refused by Sized", err)
	}
	if want := []int{proto.Size(nodes[0]), proto.Size(nodes[1]), proto.Size(nodes[2])}; fmt.Sprint(sizes) != fmt.Sprint(want) {
		t.Errorf("Sized saw %v, want the nodes' sizes %v", sizes, want)
	}
	if fmt.Sprint(decoded) != "[a bb]" {
		t.Errorf("decoded %v, want the nodes before the refused one", decoded)
	}
}
