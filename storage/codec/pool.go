package codec

import (
	"math/bits"
	"sync"
)

// Buffers are pooled by size class: four classes per power of two (2^e,
// 1.25*2^e, 1.5*2^e, 1.75*2^e), so a buffer wastes at most a quarter of its
// size, and the usual 1 MiB block of a 4+2 or 2+1 scheme (1.5 MiB) fits a
// class exactly. Below minClassSize everything shares one class.
const (
	minClassShift = 12 // 4 KiB
	minClassSize  = 1 << minClassShift
	maxClassShift = 40 // bigger than any block; larger buffers are not pooled
	stepsPerClass = 4
)

// buffer is what the pools hold: a pointer, so Put does not allocate.
type buffer struct {
	b     []byte // len is the size asked for, cap the class size
	class int    // index into pools, -1 when not pooled
}

var pools [1 + (maxClassShift-minClassShift)*stepsPerClass]sync.Pool

// sizeClass returns the pool index and capacity for a buffer of n bytes,
// or -1 and n when n is too large to pool.
func sizeClass(n int) (int, int) {
	if n <= minClassSize {
		return 0, minClassSize
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

// getBuffer returns a buffer of len n (contents undefined).
func getBuffer(n int) *buffer {
	class, size := sizeClass(n)
	if class >= 0 {
		if buf, ok := pools[class].Get().(*buffer); ok {
			buf.b = buf.b[:n]
			return buf
		}
	}
	return &buffer{b: make([]byte, n, size), class: class}
}

// putBuffer returns buf to its pool.
func putBuffer(buf *buffer) {
	if buf == nil || buf.class < 0 {
		return
	}
	pools[buf.class].Put(buf)
}
