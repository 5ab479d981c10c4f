package clientchain

import (
	"context"
	"sync/atomic"
)

// PickNote is where a balancer's picker notes the instance it picked for a
// call attempt, so that a stage can learn it while the attempt is still in
// flight (grpc's peer call option is filled in only when the call ends).
// The hedge stage uses it to send its second attempt elsewhere;
// rpc/balancer's p2c picker fills it in.
type PickNote struct {
	addr atomic.Pointer[string]
}

// Record notes addr as the picked instance. The picker keeps ownership of
// addr, which must not change afterwards: passing a pointer into the
// picker's own state keeps picks free of allocations.
func (n *PickNote) Record(addr *string) { n.addr.Store(addr) }

// Addr returns the address last recorded, or "" if none was.
func (n *PickNote) Addr() string {
	if p := n.addr.Load(); p != nil {
		return *p
	}
	return ""
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
