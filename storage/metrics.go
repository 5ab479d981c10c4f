package storage

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the blob store's Prometheus metrics.
type Metrics struct {
	putBytes              prometheus.Counter
	getBytes              prometheus.Counter
	putsFailed            prometheus.Counter
	degradedReads         prometheus.Counter
	shardWrites           prometheus.Counter
	shardReads            prometheus.Counter
	corruptShards         prometheus.Counter
	shardIOErrors         prometheus.Counter
	lostShards            prometheus.Counter
	shardsCollected       prometheus.Counter
	scrubbedBytes         prometheus.Counter
	scrubUnreadShards     prometheus.Counter
	repairQueued          prometheus.GaugeFunc
	repairInProgress      prometheus.GaugeFunc
	repairRetrying        prometheus.GaugeFunc
	repairWaiting         prometheus.GaugeFunc
	repairWaitingForAgent prometheus.GaugeFunc
	repairShards          prometheus.Counter
	repairBytes           prometheus.Counter
	repairFailed          prometheus.Counter
	// diskWaitsAbandoned counts the calls of this agent's own shard
	// disk that aside stopped waiting for at their deadline, by op.
	diskWaitsAbandoned *prometheus.CounterVec
	// repair is the store's repair, which the gauges above read at
	// scrape time (New sets it): 0 unless it runs, on the leader.
	repair atomic.Pointer[repairer]
}

// NewMetrics creates the metrics; register Collectors() to export them.
func NewMetrics() *Metrics {
	counter := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Namespace: "zrpc", Subsystem: "blob", Name: name, Help: help})
	}
	m := &Metrics{}
	// repairGauge reads count of the repair's state while it leads.
	repairGauge := func(name, help string, count func(*repairer) int) prometheus.GaugeFunc {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "zrpc", Subsystem: "blob", Name: name, Help: help},
			func() float64 { return m.repair.Load().leaderCount(count) })
	}
	*m = Metrics{
		putBytes:        counter("put_bytes_total", "Blob bytes stored by puts this agent coordinated."),
		getBytes:        counter("get_bytes_total", "Blob bytes served by gets this agent coordinated."),
		putsFailed:      counter("puts_failed_total", "Puts that failed or were cancelled and were aborted."),
		degradedReads:   counter("degraded_block_reads_total", "Blocks read by decoding parity because shards were missing or corrupt."),
		shardWrites:     counter("shard_writes_total", "Shards written to this agent's shard store."),
		shardReads:      counter("shard_reads_total", "Shards read from this agent's shard store for peers."),
		corruptShards:   counter("corrupt_shards_total", "Corrupt shards found by reads or the scrubber."),
		lostShards:      counter("lost_shards_total", "Shards whose holder has no file for them, found by reads or the scrubber."),
		shardIOErrors:   counter("shard_io_errors_total", "Shard reads this agent's disk failed (EIO): a failing disk. The shards are counted corrupt too, and rebuilt."),
		shardsCollected: counter("shards_collected_total", "Shard files deleted because no blob refers to them."),
		scrubbedBytes:   counter("scrubbed_bytes_total", "Shard bytes re-read by the scrubber."),
		scrubUnreadShards: counter("scrub_unread_shards_total",
			"Shards the scrubber could not read for another reason than what they hold (permissions, open files): not verified."),
		repairQueued: repairGauge("repair_queued", "Shards waiting to be rebuilt (leader only).",
			func(r *repairer) int { return len(r.queue) }),
		repairInProgress: repairGauge("repair_in_progress", "Shards being rebuilt now (leader only).",
			func(r *repairer) int { return r.inProgress }),
		repairRetrying: repairGauge("repair_retrying", "Lost shards whose rebuild failed, tried again a repair interval later (leader only).",
			func(r *repairer) int { return len(r.retry) }),
		repairWaiting: repairGauge("repair_waiting", "Lost shards that cannot be rebuilt yet: their agent's blob_repair_delay has not passed, or no agent can take them (leader only).",
			func(r *repairer) int { return r.waiting }),
		repairWaitingForAgent: repairGauge("repair_waiting_for_agent", "Lost shards no alive agent with room can take, each holding a shard of their block already: add agents or free space (leader only).",
			func(r *repairer) int { return r.waitingForAgent }),
		repairShards: counter("repair_rebuilt_shards_total", "Shards rebuilt by repair."),
		repairBytes:  counter("repair_rebuilt_bytes_total", "Bytes of shards rebuilt by repair."),
		repairFailed: counter("repair_failed_total", "Shard rebuilds that failed (each retried a repair interval later)."),
		diskWaitsAbandoned: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "zrpc", Subsystem: "blob", Name: "shard_disk_waits_abandoned_total",
			Help: "Calls of this agent's shard disk that a put, a get, a repair, a delete, a peer or a background pass (the scrubber, the start-up check, orphan collection) stopped waiting for when their deadline passed, by op " +
				"(write: a shard, commit: making staged shards durable, delete: a blob's shards or an orphan's, read: a shard or a walk of the shard directory); the call fails (a get reads parity instead), the disk's call goes on. " +
				"The disk may hang in writes or fsync: check it (dmesg, iostat), and restart the agent if it stays stuck."}, []string{"op"}),
	}
	for _, op := range diskOps {
		m.diskWaitsAbandoned.WithLabelValues(op)
	}
	return m
}

// diskOps are the op labels of diskWaitsAbandoned, by the error aside
// gives when it stops waiting.
var diskOps = map[error]string{errStoreAbandoned: "write", errCommitAbandoned: "commit", errDeleteAbandoned: "delete", errReadAbandoned: "read"}

// abandonedDiskWait counts a call of this agent's shard disk waited for
// no longer; abandoned is aside's error for it.
func (m *Metrics) abandonedDiskWait(abandoned error) {
	m.diskWaitsAbandoned.WithLabelValues(diskOps[abandoned]).Inc()
}

// Collectors returns every metric, for registering.
func (m *Metrics) Collectors() []prometheus.Collector {
	return []prometheus.Collector{m.putBytes, m.getBytes, m.putsFailed, m.degradedReads, m.shardWrites, m.shardReads,
		m.corruptShards, m.shardIOErrors, m.lostShards, m.shardsCollected, m.scrubbedBytes, m.scrubUnreadShards, m.repairQueued, m.repairInProgress,
		m.repairRetrying, m.repairWaiting, m.repairWaitingForAgent, m.repairShards, m.repairBytes, m.repairFailed, m.diskWaitsAbandoned}
}
