package raftstore

import (
	"testing"

	"google.golang.org/protobuf/proto"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
)

func TestRingEventSizeIsTheEventsEncodedSize(t *testing.T) {
	d := newFSMDriver(t, 64)
	big := testInstance("api", "2", "n1")
	big.Metadata["k2"], big.Metadata["k3"] = string(make([]byte, 300)), "v"
	d.mustApply(registerCmd(testInstance("api", "1", "n1")))
	d.mustApply(registerCmd(big))
	d.mustApply(registerCmd(testInstance("api", "1", "n1"))) // an update
	d.mustApply(setHealthCmd(pb.Health_CRITICAL, "down", instRef("api", "1")))
	d.mustApply(deregisterCmd("api", "2"))

	l := d.fsm.events
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.n != 5 {
		t.Fatalf("ring holds %d events, want 5", l.n)
	}
	for i := 0; i < l.n; i++ {
		e := l.at(i)
		if want := proto.Size(e.event()); e.size != want {
			t.Errorf("event %d (%v at %d): size %d, its encoding is %d bytes", i, e.typ, e.revision, e.size, want)
		}
	}
}
