package clientchain

import (
	"context"
	"sync/atomic"
)

// PickNote is where a balancer's picker notes the instance it picked for a
// call attempt, so that a stage can learn it while the attempt is still in
// flight (grpc's peer call option is filled in only when the call ends),
// and whether the attempt sent anything to it. The hedge stage uses it to
// send its second attempt elsewhere; the retry stage, when the balancer
// notes its picks, learns from it which instance a failed attempt reached
// instead of adding grpc's peer call option to every call. rpc/balancer's
// p2c picker fills it in.
type PickNote struct {
	addr atomic.Pointer[string]
	end  atomic.Uint32 // pickOpen, pickUnsent or pickSent
}

// States of a noted pick's attempt.
const (
	pickOpen   = iota // no attempt ended since the last pick (or none picked)
	pickUnsent        // the attempt ended without sending anything
	pickSent          // the attempt sent something to the instance
)

// Record notes addr as the picked instance. The picker keeps ownership of
// addr, which must not change afterwards: passing a pointer into the
// picker's own state keeps picks free of allocations.
func (n *PickNote) Record(addr *string) {
	n.end.Store(pickOpen)
	n.addr.Store(addr)
}

// Finish notes that the attempt of the last recorded pick ended, and
// whether it sent anything to the instance (grpc's
// balancer.DoneInfo.BytesSent): a picker calls it from the pick's Done.
func (n *PickNote) Finish(bytesSent bool) {
	if bytesSent {
		n.end.Store(pickSent)
	} else {
		n.end.Store(pickUnsent)
	}
}

// Addr returns the address last recorded, or "" if none was.
func (n *PickNote) Addr() string {
	if p := n.addr.Load(); p != nil {
		return *p
	}
	return ""
}

// Ended reports whether the attempt of the last recorded pick has ended
// (a picker noted it with Finish) and, if so, whether it sent anything to
// the instance.
func (n *PickNote) Ended() (ended, sent bool) {
	e := n.end.Load()
	return e != pickOpen, e == pickSent
}

// finished reports whether a picker recorded a pick and the end of its
// attempt: the balancer notes its picks in full.
func (n *PickNote) finished() bool { return n.addr.Load() != nil && n.end.Load() != pickOpen }

// reached reports whether the noted attempt may have reached its
// instance: it was picked and did not end unsent (a pick whose end was not
// noted counts as reached).
func (n *PickNote) reached() bool { return n.addr.Load() != nil && n.end.Load() != pickUnsent }

// reset forgets the pick, for the next attempt.
func (n *PickNote) reset() {
	n.addr.Store(nil)
	n.end.Store(pickOpen)
}

type pickNoteKey struct{}

// WithPickNote returns ctx carrying n, for the picker of the attempts made
// with it.
func WithPickNote(ctx context.Context, n *PickNote) context.Context {
	return context.WithValue(ctx, pickNoteKey{}, n)
}

// PickNoteFrom returns the note a stage put in ctx, or nil.
func PickNoteFrom(ctx context.Context) *PickNote {
	n, _ := ctx.Value(pickNoteKey{}).(*PickNote)
	return n
}
