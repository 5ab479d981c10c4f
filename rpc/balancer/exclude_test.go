package balancer

import (
	"context"
	"testing"

	"google.golang.org/grpc/balancer"

	"github.com/zrpcio/zrpc/rpc/clientchain"
)

// A retried call never goes back to an instance that already failed it.
func TestP2CAvoidsExcludedInstances(t *testing.T) {
	scs := newSubConns(3)
	p := newP2CPickerBuilder().Build(buildInfo(scs))
	ctx := clientchain.WithExcluded(context.Background(), scs[0].addr)
	ctx = clientchain.WithExcluded(ctx, scs[1].addr)
	for i := 0; i < 200; i++ {
		res := pick(t, p, ctx)
		if res.SubConn != scs[2] {
			t.Fatalf("pick %d went to %v, an excluded instance", i, res.SubConn)
		}
		res.Done(balancer.DoneInfo{})
	}
	// With every instance excluded the call still goes somewhere.
	all := clientchain.WithExcluded(ctx, scs[2].addr)
	res := pick(t, p, all)
	res.Done(balancer.DoneInfo{})
}

// The picker notes the instance it picked where a stage asked for it, so
// that a hedge can be sent elsewhere while the first attempt runs.
func TestP2CRecordsPickInNote(t *testing.T) {
	scs := newSubConns(3)
	p := newP2CPickerBuilder().Build(buildInfo(scs))
	var note clientchain.PickNote
	ctx := clientchain.WithPickNote(context.Background(), &note)
	for range 20 {
		res := pick(t, p, ctx)
		if got, want := note.Addr(), res.SubConn.(*fakeSubConn).addr; got != want {
			t.Fatalf("note says %q, picked %q", got, want)
		}
		res.Done(balancer.DoneInfo{})
	}
}

// The picker notes, when the attempt ends, whether it sent anything to the
// instance, so that the retry stage knows whether a failed attempt may
// have run there without grpc's peer call option.
func TestP2CNotesWhetherTheAttemptSentAnything(t *testing.T) {
	scs := newSubConns(2)
	p := newP2CPickerBuilder().Build(buildInfo(scs))
	for _, sent := range []bool{true, false, true} {
		var note clientchain.PickNote
		res := pick(t, p, clientchain.WithPickNote(context.Background(), &note))
		if ended, _ := note.Ended(); ended {
			t.Fatal("note says the attempt ended before its Done")
		}
		res.Done(balancer.DoneInfo{BytesSent: sent})
		if ended, gotSent := note.Ended(); !ended || gotSent != sent {
			t.Fatalf("after Done with BytesSent %v the note says ended %v, sent %v", sent, ended, gotSent)
		}
	}
}
