package balancer

import (
	"sync"

	"google.golang.org/grpc/balancer"
)

// connStates keeps per-SubConn state across picker rebuilds, so that calls
// still in flight when a picker is replaced are counted by the next one. mu
// is taken only when a picker is built; picks use the returned states, whose
// fields are atomics.
type connStates[T any] struct {
	mu sync.Mutex
	m  map[balancer.SubConn]*T
}

// refresh returns the state of each endpoint in order, creating missing ones
// with newState, and forgets SubConns that are no longer ready: a SubConn
// that comes back starts afresh, as its connection is new.
func (c *connStates[T]) refresh(eps []endpoint, newState func(endpoint) *T) []*T {
	c.mu.Lock()
	defer c.mu.Unlock()
	next := make(map[balancer.SubConn]*T, len(eps))
	out := make([]*T, len(eps))
	for i, ep := range eps {
		st, ok := c.m[ep.sc]
		if !ok {
			st = newState(ep)
		}
		next[ep.sc] = st
		out[i] = st
	}
	c.m = next
	return out
}

// current returns the states kept now, in no particular order.
func (c *connStates[T]) current() []*T {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]*T, 0, len(c.m))
	for _, st := range c.m {
		out = append(out, st)
	}
	return out
}
