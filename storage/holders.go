package storage

import (
	"sync"
)

// holderView is what one read of a blob (a Get, or the rebuild of a
// shard) knows of the agents holding its shards: which were alive by
// gossip when it began, and which it gave up on since for lagging
// (fetchShardsInto). The blocks of one Get, read concurrently, share it,
// so a holder given up on for one block is asked last for the next.
type holderView struct {
	alive map[string]bool // read-only

	mu      sync.Mutex
	lagging map[string]bool
}

func newHolderView(alive map[string]bool) *holderView {
	return &holderView{alive: alive}
}

// usable reports whether node is alive and not given up on.
func (v *holderView) usable(node string) bool {
	if !v.alive[node] {
		return false
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	return !v.lagging[node]
}

// giveUp records that the read gave up on node; it reports whether it
// had not already.
func (v *holderView) giveUp(node string) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.lagging[node] {
		return false
	}
	if v.lagging == nil {
		v.lagging = make(map[string]bool)
	}
	v.lagging[node] = true
	return true
}
