package raftstore

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"testing"

	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"

	"github.com/zrpcio/zrpc/snapshot"
)

// fullState is everything a replica holds, blobs included, as text.
func fullState(f *FSM) string {
	var b bytes.Buffer
	st := stateOf(f)
	fmt.Fprintf(&b, "revision %d\n", st.revision)
	blobs, _ := f.Blobs("")
	var msgs []proto.Message
	for _, m := range st.instances {
		msgs = append(msgs, m)
	}
	for _, m := range st.sessions {
		msgs = append(msgs, m)
	}
	for _, m := range st.nodes {
		msgs = append(msgs, m)
	}
	for _, m := range blobs {
		msgs = append(msgs, m)
	}
	for _, m := range f.PendingBlobs() {
		msgs = append(msgs, m)
	}
	for _, m := range msgs {
		b.WriteString(prototext.MarshalOptions{}.Format(m))
		b.WriteByte('\n')
	}
	return b.String()
}

// randomFSM applies n random commands (seeded) to a fresh FSM.
func randomFSM(tb testing.TB, seed uint64, n int) *FSM {
	d := newFSMDriver(tb, 16)
	rng := rand.New(rand.NewPCG(seed, seed))
	for range n {
		d.fsm.Apply(d.nextLog(randomCommand(rng)))
	}
	return d.fsm
}

// FuzzFSMRestore restores arbitrary bytes as a registry snapshot: Restore
// never panics; a rejected snapshot leaves the replica exactly as it was;
// an accepted one leaves a replica whose own snapshot restores to the same
// state (what a follower receiving it from this one would hold).
//
//	go test -run '^$' -fuzz FuzzFSMRestore ./raftstore/
func FuzzFSMRestore(f *testing.F) {
	for seed := range uint64(6) {
		f.Add(snapshotBytes(f, randomFSM(f, seed, int(seed)*15)))
	}
	good := snapshotBytes(f, randomFSM(f, 9, 40))
	f.Add(good[:len(good)/2])
	f.Add([]byte(snapshot.StateMagic))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		fsm := randomFSM(t, 1, 20)
		before := fullState(fsm)
		if err := fsm.Restore(io.NopCloser(bytes.NewReader(data))); err != nil {
			if after := fullState(fsm); after != before {
				t.Fatalf("rejected snapshot (%v) changed the replica:\nbefore:\n%s\nafter:\n%s", err, before, after)
			}
			return
		}
		checkInvariants(t, fsm)
		restored := fullState(fsm)
		again := NewFSM(16)
		if err := again.Restore(io.NopCloser(bytes.NewReader(snapshotBytes(t, fsm)))); err != nil {
			t.Fatalf("the snapshot of a restored replica does not restore: %v", err)
		}
		if got := fullState(again); got != restored {
			t.Fatalf("snapshot round trip changed the state:\nrestored:\n%s\nround trip:\n%s", restored, got)
		}
		// The replica goes on applying after a restore.
		rng := rand.New(rand.NewPCG(3, 3))
		d := &fsmDriver{tb: t, fsm: fsm, next: fsm.Revision() + 1}
		for range 5 {
			d.fsm.Apply(d.nextLog(randomCommand(rng)))
		}
		checkInvariants(t, fsm)
	})
}
