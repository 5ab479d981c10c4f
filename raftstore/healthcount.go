package raftstore

import (
	"sync/atomic"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
)

// healthCounts are how many instances have each health. put and remove
// keep them current, so that a metrics scrape reads four numbers instead of
// walking the registry; they are atomic so that a scrape never waits for
// an apply (during a batch it may see some of the batch's changes).
type healthCounts struct {
	n [pb.Health_CRITICAL + 1]atomic.Int64 // by pb.Health; unknown values count as unspecified
}

func (c *healthCounts) reset() {
	for i := range c.n {
		c.n[i].Store(0)
	}
}

func (c *healthCounts) slot(h pb.Health) *atomic.Int64 {
	if h < 0 || int(h) >= len(c.n) {
		h = pb.Health_HEALTH_UNSPECIFIED
	}
	return &c.n[h]
}

// replace accounts for old (zero when new) becoming inst (zero when removed).
func (c *healthCounts) replace(old, inst storedInstance) {
	if old.valid() {
		c.slot(old.health).Add(-1)
	}
	if inst.valid() {
		c.slot(inst.health).Add(1)
	}
}

// HealthCounts returns how many instances have each health. It reads
// counters the FSM keeps on apply: it costs the same however many
// instances there are, and does not wait for an apply.
func (f *FSM) HealthCounts() map[pb.Health]int {
	counts := make(map[pb.Health]int, len(f.health.n))
	for i := range f.health.n {
		if v := f.health.n[i].Load(); v != 0 {
			counts[pb.Health(i)] = int(v)
		}
	}
	return counts
}
