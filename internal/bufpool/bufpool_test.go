package bufpool

import (
	"testing"
)

func TestSizeClassesWasteAtMostAQuarter(t *testing.T) {
	for _, n := range []int{0, 1, MinSize, MinSize + 1, 5000, 256 << 10, 256<<10 + 5, 3 << 19, 1 << 20, 1<<20 + 1, 6 << 20} {
		class, size := sizeClass(n)
		if class < 0 || size < n {
			t.Fatalf("sizeClass(%d) = %d, %d: want a class holding n bytes", n, class, size)
		}
		if n > MinSize && float64(size) > 1.25*float64(n) {
			t.Errorf("sizeClass(%d) = %d bytes: wastes more than a quarter", n, size)
		}
		if c2, s2 := sizeClass(size); c2 != class || s2 != size {
			t.Errorf("a class's own size %d maps to class %d (%d), want %d", size, c2, s2, class)
		}
	}
	if class, size := sizeClass(3 << 19); size != 3<<19 {
		t.Errorf("1.5 MiB (a 1 MiB block of 2+1) is in class %d of %d bytes, want exactly 1.5 MiB", class, size)
	}
}

func TestGetGivesTheRequestedLengthAndReusesWhatWasPut(t *testing.T) {
	b := Get(300 << 10)
	if len(*b) != 300<<10 || cap(*b) < 300<<10 {
		t.Fatalf("Get(300 KiB): len %d cap %d", len(*b), cap(*b))
	}
	(*b)[0] = 7
	Put(b)
	// sync.Pool may drop what was put (always under -race); what Get
	// returns must be right either way.
	c := Get(290 << 10)
	if len(*c) != 290<<10 || cap(*c) != cap(*b) {
		t.Fatalf("Get(290 KiB) after a put: len %d cap %d, want len 290 KiB in the same class (%d)", len(*c), cap(*c), cap(*b))
	}
	Put(c)
}

func TestSizeClassesGrowWithTheSize(t *testing.T) {
	prevClass, prevSize := -1, 0
	for n := 1; n < 1<<24; n += 1 + n/7 {
		class, size := sizeClass(n)
		if size < n || (n > MinSize && size > n+n/3) {
			t.Fatalf("sizeClass(%d) = %d bytes", n, size)
		}
		if class < prevClass || (class == prevClass) != (size == prevSize) {
			t.Fatalf("sizeClass(%d) = %d, %d after %d, %d", n, class, size, prevClass, prevSize)
		}
		prevClass, prevSize = class, size
	}
	if class, _ := sizeClass(1 << 41); class != -1 {
		t.Errorf("2 TiB is pooled in class %d", class)
	}
}

func TestPutIgnoresBuffersOfNoClass(t *testing.T) {
	odd := make([]byte, 5000, 5001) // no class has 5001 bytes
	Put(&odd)
	Put(nil)
	b := Get(5000)
	if cap(*b) == 5001 {
		t.Fatal("a buffer of no class was pooled")
	}
}

func TestGetAndPutOfAWarmPoolAllocateNothing(t *testing.T) {
	Put(Get(1 << 20))
	allocs := testing.AllocsPerRun(100, func() { Put(Get(1 << 20)) })
	if allocs > 0 && !raceEnabled {
		t.Errorf("Get+Put of a 1 MiB buffer: %.1f allocations, want 0", allocs)
	}
}

func TestSharedBufferOutlivesItsOwnerWhileLent(t *testing.T) {
	s := NewShared(64 << 10)
	for i := range s.Bytes() {
		s.Bytes()[i] = 1
	}
	lent := s.Bytes()
	release := s.Lend()
	s.Release()
	var held []*[]byte
	for range 20 { // whatever the pool hands out now is another buffer
		b := Get(64 << 10)
		if &(*b)[0] == &lent[0] {
			t.Fatal("a lent buffer went back to the pool when its owner released it")
		}
		held = append(held, b)
	}
	for _, b := range held {
		Put(b)
	}
	release()
	release() // once only: a second call must not pool it twice
	if raceEnabled {
		return
	}
	seen := 0
	held = held[:0]
	for range 20 {
		b := Get(64 << 10)
		if &(*b)[0] == &lent[0] {
			seen++
		}
		held = append(held, b)
	}
	if seen != 1 {
		t.Fatalf("the buffer came back from the pool %d times after its last loan, want once", seen)
	}
}

// mustPanic runs f and fails the test unless f panics.
func mustPanic(t *testing.T, what string, f func()) {
	t.Helper()
	defer func() {
		if recover() == nil {
			t.Errorf("%s did not panic", what)
		}
	}()
	f()
}

// TestMisuseOfASharedBufferBackInThePoolPanics: once the owner and every
// loan are done the buffer is in the pool; a Lend then, or a second
// Release, would put it there twice (two Gets handed the same bytes).
func TestMisuseOfASharedBufferBackInThePoolPanics(t *testing.T) {
	s := NewShared(8 << 10)
	s.Release()
	mustPanic(t, "a Lend after the owner released the buffer (no loan out)", func() { s.Lend()() })

	s = NewShared(8 << 10)
	release := s.Lend()
	s.Release()
	release()
	mustPanic(t, "a Lend after the last loan was returned", func() { s.Lend()() })

	s = NewShared(8 << 10)
	s.Release()
	mustPanic(t, "a second Release by the owner", s.Release)

	// While a loan is out the count alone would take a second Release
	// for the loan's return and pool the buffer under the borrower.
	s = NewShared(8 << 10)
	release = s.Lend()
	s.Release()
	mustPanic(t, "a second Release by the owner while a loan is out", s.Release)
	release()

	s = NewShared(8 << 10) // lending while the owner holds it is fine
	s.Lend()()
	s.Release()
}
