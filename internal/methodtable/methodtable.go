// Package methodtable keeps a value per gRPC method (metrics series,
// breaker windows, rate-limit buckets) for at most Max methods: calls of
// further methods share one value under the label Other. A server with an
// unknown-service handler, or a client forwarding names its callers
// choose, sees method names a stranger picks, and a value (and a
// /metrics series) for each would grow its memory without end.
package methodtable

import (
	"sync"
	"sync/atomic"
)

// Max is how many methods a Table keeps apart.
const Max = 1024

// Other is the label of the methods past Max.
const Other = "other"

// Table holds a value per method, at most Max of them plus Other's,
// which every method past the bound shares. Its zero value is empty and
// ready; its methods may be called from any goroutine.
type Table[T any] struct {
	values sync.Map // method -> T
	full   atomic.Bool

	mu sync.Mutex // held to add a method
	n  int        // methods added, Other aside
}

// Get returns method's value, made by newValue(label) on the first call
// of method (or of Other, once the table is full): label is the method,
// or Other.
func (t *Table[T]) Get(method string, newValue func(label string) T) T {
	if v, ok := t.values.Load(method); ok {
		return v.(T)
	}
	if t.full.Load() {
		method = Other
		if v, ok := t.values.Load(method); ok {
			return v.(T)
		}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if v, ok := t.values.Load(method); ok {
		return v.(T)
	}
	if method != Other {
		if t.n >= Max {
			t.full.Store(true)
			method = Other
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

// Len is how many values the table holds (Other's among them once made).
func (t *Table[T]) Len() int {
	n := 0
	t.values.Range(func(any, any) bool { n++; return true })
	return n
}
