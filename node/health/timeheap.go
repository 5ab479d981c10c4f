package health

import "time"

// timed is an entry of a timeHeap: when it is due, and where it sits.
type timed interface {
	dueAt() time.Time
	setIndex(int)
}

// timeHeap orders entries by the time each is due (container/heap). Every
// entry knows its position, so one can be moved (heap.Fix) or removed
// (heap.Remove) in O(log n); an entry popped or removed gets index -1.
type timeHeap[E timed] []E

func (h timeHeap[E]) Len() int           { return len(h) }
func (h timeHeap[E]) Less(i, j int) bool { return h[i].dueAt().Before(h[j].dueAt()) }
func (h timeHeap[E]) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].setIndex(i)
	h[j].setIndex(j)
}

func (h *timeHeap[E]) Push(x any) {
	e := x.(E)
	e.setIndex(len(*h))
	*h = append(*h, e)
}

func (h *timeHeap[E]) Pop() any {
	old := *h
	e := old[len(old)-1]
	var zero E
	old[len(old)-1] = zero
	*h = old[:len(old)-1]
	e.setIndex(-1)
	return e
}
