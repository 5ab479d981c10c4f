// Package bufpool pools byte buffers by size class for the blob paths: the
// codec's blocks, the gRPC codec's message buffers. A buffer from Get is
// not zeroed: whoever takes one writes every byte it reads back.
//
// Classes are four per power of two (2^e, 1.25*2^e, 1.5*2^e, 1.75*2^e), so
// a buffer wastes at most a quarter of its size, and the usual 1 MiB block
// of a 4+2 or 2+1 scheme (1.5 MiB) fits a class exactly. Below MinSize
// everything shares one class; buffers larger than any block are not
// pooled.
//
// It is not a general allocator: small buffers (a few hundred bytes) cost
// less from make than from a sync.Pool.
package bufpool

import (
	"math/bits"
	"sync"
	"sync/atomic"
)

const (
	minClassShift = 12 // 4 KiB
	// MinSize is the capacity of the smallest class.
	MinSize       = 1 << minClassShift
	maxClassShift = 40
	stepsPerClass = 4
)

var pools [1 + (maxClassShift-minClassShift)*stepsPerClass]sync.Pool

// sizeClass returns the pool index and capacity for a buffer of n bytes,
// or -1 and n when n is too large to pool.
func sizeClass(n int) (int, int) {
	if n <= MinSize {
		return 0, MinSize
	}
	e := bits.Len(uint(n-1)) - 1 // 2^e < n <= 2^(e+1)
	if e >= maxClassShift {
		return -1, n
	}
	base := 1 << e
	step := base / stepsPerClass
	j := (n - base + step - 1) / step // 1..stepsPerClass
	return 1 + (e-minClassShift)*stepsPerClass + j - 1, base + j*step
}

// Get returns a buffer of len n and the capacity of n's class; its
// contents are whatever its last user left. Put gives it back.
func Get(n int) *[]byte {
	class, size := sizeClass(max(n, 0))
	if class >= 0 {
		if b, ok := pools[class].Get().(*[]byte); ok {
			*b = (*b)[:n]
			return b
		}
	}
	b := make([]byte, n, size)
	return &b
}

// Put gives b back for reuse. A buffer whose capacity is not exactly a
// class's (not from Get, or resliced from the front) is left to the
// garbage collector. Neither b nor any slice of it may be used after.
func Put(b *[]byte) {
	if b == nil {
		return
	}
	class, size := sizeClass(cap(*b))
	if class < 0 || size != cap(*b) {
		return
	}
	pools[class].Put(b)
}

// Shared is a pooled buffer with several holders: its owner, and whoever
// it lent the bytes to (gRPC writing a message after Send has returned).
// The buffer goes back to the pool when the owner has released it and
// every loan is returned, whichever comes last.
type Shared struct {
	b    *[]byte
	refs atomic.Int32
	// released is set by the owner's Release: a second one panics even
	// while a loan is out, which the count alone would let put the
	// buffer in the pool under the borrower.
	released atomic.Bool
}

// NewShared returns a Shared buffer of n bytes (not zeroed), owned by the
// caller.
func NewShared(n int) *Shared {
	s := &Shared{b: Get(n)}
	s.refs.Store(1)
	return s
}

// Bytes is the buffer. Its owner may use it until Release, a borrower
// until it returns its loan.
func (s *Shared) Bytes() []byte { return *s.b }

// Lend keeps the buffer from the pool until the returned function is
// called (once; later calls do nothing). It may be called from any
// goroutine while the owner has not released the buffer, and so may the
// function it returns at any time. A Lend after the buffer went back to
// the pool (its owner and every loan done) panics: the bytes may be
// another Get's already, and the loan's return would put the buffer in
// the pool twice, handing it to two users at once.
func (s *Shared) Lend() (release func()) {
	if s.refs.Add(1) <= 1 {
		panic("bufpool: Lend of a Shared buffer already back in the pool (its owner released it and every loan was returned)")
	}
	var once sync.Once
	return func() { once.Do(s.unref) }
}

// Lent reports whether a loan is out; only its owner, before Release,
// may ask (a loan returned at once after it answers true is not seen).
func (s *Shared) Lent() bool { return s.refs.Load() > 1 }

// Release is the owner's: it gives the buffer back to the pool, or lets
// the last loan do it. The owner must not use it afterwards nor release
// it twice: a second Release panics, whether or not a loan is out.
func (s *Shared) Release() {
	if s.released.Swap(true) {
		panic("bufpool: a Shared buffer's owner released it twice")
	}
	s.unref()
}

func (s *Shared) unref() {
	switch n := s.refs.Add(-1); {
	case n == 0:
		Put(s.b)
	case n < 0:
		panic("bufpool: a Shared buffer released more often than it was held (its owner's Release called twice)")
	}
}
