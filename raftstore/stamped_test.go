package raftstore

import (
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
)

// stampTestInstances are registrations of every shape: few fields, a
// metadata map of several keys, a check, a session, a health output.
func stampTestInstances() []*pb.Instance {
	full := testInstance("api", "i1", "n1")
	full.Metadata = map[string]string{"owner": "team", "a": "1", "z": "26", "payload": "xxxxxxxxxxxxxxxxxxxx"}
	full.Check = &pb.Check{Grpc: true}
	full.Health, full.HealthOutput = pb.Health_CRITICAL, "awaiting first gRPC health check"
	return []*pb.Instance{
		{Service: "api", Id: "i0"},
		full,
		{Service: "api", Id: "i2", Node: "n1", Session: "s1", Tags: []string{"b", "a"}},
	}
}

// TestStampedInstanceIsTheDeterministicEncoding: the stored encoding the
// state machine makes from an entry's instance bytes is byte for byte the
// deterministic encoding of the instance with its revisions and health
// time, without encoding it again.
func TestStampedInstanceIsTheDeterministicEncoding(t *testing.T) {
	det := proto.MarshalOptions{Deterministic: true}
	for _, inst := range stampTestInstances() {
		enc, err := det.Marshal(inst)
		if err != nil {
			t.Fatal(err)
		}
		inst.CreateRevision, inst.ModRevision, inst.HealthSince = 7, 9, 1_700_000_000_000_000_000
		got, ok := stampedInstance(enc, inst)
		want, _ := det.Marshal(inst)
		if !ok || string(got) != string(want) {
			t.Errorf("stampedInstance(%v) = %x, %v; want %x", inst, got, ok, want)
		}
	}
}

// TestStampedInstanceLeavesOddEncodingsToTheEncoder: bytes that already
// carry a revision, or whose fields are out of order, or do not parse,
// are not stamped: the state machine encodes the instance instead.
func TestStampedInstanceLeavesOddEncodingsToTheEncoder(t *testing.T) {
	inst := &pb.Instance{Service: "api", Id: "i1", ModRevision: 3}
	withRev, _ := proto.Marshal(inst)
	var reversed []byte
	reversed = protowire.AppendTag(reversed, 2, protowire.BytesType)
	reversed = protowire.AppendString(reversed, "api")
	reversed = protowire.AppendTag(reversed, 1, protowire.BytesType)
	reversed = protowire.AppendString(reversed, "i1")
	for name, enc := range map[string][]byte{
		"nil": nil, "a revision": withRev, "out of order": reversed, "truncated": withRev[:len(withRev)-1],
	} {
		if _, ok := stampedInstance(enc, inst); ok {
			t.Errorf("%s: stamped, want it left to the encoder", name)
		}
	}
}

// TestRegisterStoresEveryEntryAsItsInstance: whatever the entry's bytes
// (encoded deterministically or not, with a revision set by the sender,
// with the register field twice), the stored instance is the entry's with
// the state machine's revisions, and its encoding is the instance's
// deterministic one.
func TestRegisterStoresEveryEntryAsItsInstance(t *testing.T) {
	f := NewFSM(16)
	det := proto.MarshalOptions{Deterministic: true}
	entries := map[string][]byte{}
	for _, inst := range stampTestInstances() {
		inst.Session = "" // no session exists
		b, _ := det.Marshal(registerCmd(inst))
		entries[inst.Id] = b
	}
	stale := &pb.Instance{Service: "api", Id: "stale", ModRevision: 99, CreateRevision: 98}
	entries["stale"], _ = proto.Marshal(registerCmd(stale))
	half1, _ := proto.Marshal(registerCmd(&pb.Instance{Service: "api", Id: "twice"}))
	half2, _ := proto.Marshal(registerCmd(&pb.Instance{Address: "10.0.0.9:1"}))
	entries["twice"] = append(half1, half2...)

	index := uint64(0)
	for id, data := range entries {
		index++
		if r := f.Apply(&raft.Log{Index: index, Type: raft.LogCommand, Data: data}); r != nil {
			t.Fatalf("%s: %v", id, r)
		}
		got := f.Instance("api", id)
		if got == nil || got.ModRevision != index || got.CreateRevision != index || got.HealthSince != 0 {
			t.Fatalf("%s: stored %v, want revisions %d", id, got, index)
		}
		want, _ := det.Marshal(got)
		f.mu.RLock()
		enc := f.stored("api", id).enc
		f.mu.RUnlock()
		if string(enc) != string(want) {
			t.Errorf("%s: stored %x, want the deterministic encoding %x", id, enc, want)
		}
	}
	if got := f.Instance("api", "twice"); got.Address != "10.0.0.9:1" {
		t.Errorf("an entry with the register field twice stored %v, want both merged", got)
	}
}

// TestReadsGoOnWhileABatchIsDecoded: the state machine decodes a batch's
// entries before it locks the registry, so a read is answered while it
// decodes them.
func TestReadsGoOnWhileABatchIsDecoded(t *testing.T) {
	d := newFSMDriver(t, 16)
	f := d.fsm
	d.mustApply(registerCmd(testInstance("api", "i1", "n1")))
	inDecode, release := make(chan struct{}), make(chan struct{})
	f.decoded = func() {
		close(inDecode)
		<-release
	}
	l := d.nextLog(registerCmd(testInstance("api", "i2", "n1")))
	applied := make(chan any, 1)
	go func() { applied <- f.Apply(l) }()
	<-inDecode
	read := make(chan *pb.Instance, 1)
	go func() { read <- f.Instance("api", "i1") }()
	select {
	case got := <-read:
		if got == nil {
			t.Error("the read found nothing")
		}
	case <-time.After(10 * time.Second):
		t.Error("a read waited for the batch being decoded")
	}
	close(release)
	if r := <-applied; r != nil {
		t.Fatal(r)
	}
	if f.Instance("api", "i2") == nil {
		t.Fatal("the batch was not applied")
	}
}
