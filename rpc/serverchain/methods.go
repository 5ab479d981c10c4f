package serverchain

import (
	"sync"
	"sync/atomic"
)

// MaxMethods is how many methods the metrics and the rate limiter keep
// apart. Calls of further methods are counted, timed and limited together
// under OtherMethod: a server with an unknown-service handler serves
// method names its callers choose, and a series or bucket for each would
// let a stranger grow its memory and its /metrics without end.
const MaxMethods = 1024

// OtherMethod is the method label of the calls past MaxMethods methods.
const OtherMethod = "other"

// methodTable holds a value per method, at most MaxMethods of them plus
// OtherMethod's, which every method past the bound shares.
type methodTable[T any] struct {
	values sync.Map // method -> T
	full   atomic.Bool

	mu sync.Mutex // held to add a method
	n  int        // methods added, OtherMethod aside
}

// get returns method's value, made by newValue(label) on the first call of
// method (or of OtherMethod, once the table is full).
func (t *methodTable[T]) get(method string, newValue func(label string) T) T {
	if v, ok := t.values.Load(method); ok {
		return v.(T)
	}
	if t.full.Load() {
		method = OtherMethod
		if v, ok := t.values.Load(method); ok {
			return v.(T)
		}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if v, ok := t.values.Load(method); ok {
		return v.(T)
	}
	if method != OtherMethod {
		if t.n >= MaxMethods {
			t.full.Store(true)
			method = OtherMethod
			if v, ok := t.values.Load(method); ok {
				return v.(T)
			}
		} else {
			t.n++
		}
	}
	v := newValue(method)
	t.values.Store(method, v)
	return v
}
