package raftstore

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	metrics "github.com/hashicorp/go-metrics"
	"github.com/hashicorp/raft"
)

// BenchmarkLeaderWriteToFollowerWatchEvent measures where a write's time
// goes until a watcher on a follower has its event: three stores in this
// process (loopback TCP, raft-wal with fsync), one write at a time on the
// leader, the next once the follower's watcher has the last. ns/op is a
// write's time to the follower's event (mean). Per-write stages, medians
// in µs, from the write's start: the leader's FSM has the batch decoded
// (leader-apply-us), the commit push to the watched follower is sent
// (push-us) and to the other one (push-other-us), the write is answered
// (ack-us), the follower's watcher has the event (follower-event-us);
// and per write, the push after the leader's decode (push-after-apply-us,
// negative when it went first), the follower's event after the push
// (event-after-push-us) and after the leader's decode
// (event-after-apply-us). A follower is pushed an index only once it has
// acknowledged the entry: the follower that acknowledges second is
// pushed when its answer comes. Raft's own timers, means over every store
// (µs): the leader's log append with its fsync (raft-dispatch-us), an
// AppendEntries round trip (raft-append-rtt-us), a follower's log append
// with its fsync (raft-follower-store-us), proposal to commit
// (raft-commit-us), the hand-over to the FSM goroutine
// (raft-fsm-enqueue-us), an FSM batch (raft-fsm-apply-us), and the
// transport's hand-over of a decoded AppendEntries to raft
// (raft-rpc-enqueue-us).
//
// The stores share this process's scheduler: the absolute times are not
// those of three agents, but the stages show where the time goes.
//
//	go test -run '^$' -bench LeaderWriteToFollowerWatchEvent -benchtime 2000x ./raftstore/
func BenchmarkLeaderWriteToFollowerWatchEvent(b *testing.B) {
	sink := metrics.NewInmemSink(time.Hour, time.Hour)
	mcfg := metrics.DefaultConfig("")
	mcfg.EnableHostname, mcfg.EnableRuntimeMetrics = false, false
	if _, err := metrics.NewGlobal(mcfg, sink); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _, _ = metrics.NewGlobal(mcfg, &metrics.BlackholeSink{}) })

	var decodedAt [3]atomic.Int64 // unix ns of each store's last decoded batch
	stores := openClusterOf(b, 3, func(i int, s *Store) {
		s.fsm.decoded = func() { decodedAt[i].Store(time.Now().UnixNano()) }
	}, func(_ int, cfg *Config) {
		// The tests' 100 ms lease steps a leader down on a loaded machine.
		cfg.HeartbeatTimeout, cfg.ElectionTimeout, cfg.LeaderLeaseTimeout = time.Second, time.Second, time.Second
	})
	leader := leaderOf(b, stores)
	li := slices.Index(stores, leader)
	follower := stores[(li+1)%3]
	var pushedAt, otherAt atomic.Int64
	leader.pusher.mu.Lock()
	leader.pusher.sending = func(id raft.ServerID, _ *raft.AppendEntriesRequest) {
		if string(id) == follower.cfg.NodeID {
			pushedAt.Store(time.Now().UnixNano())
		} else {
			otherAt.Store(time.Now().UnixNano())
		}
	}
	leader.pusher.mu.Unlock()

	ctx, cancel := context.WithCancel(b.Context())
	defer cancel()
	w := follower.FSM().Watch("bench", follower.FSM().Revision())
	defer w.Close()
	events := make(chan int64)
	done := make(chan struct{})
	defer func() { cancel(); <-done }()
	go func() {
		defer close(done)
		for {
			if _, err := w.Next(ctx); err != nil {
				return
			}
			select {
			case events <- time.Now().UnixNano():
			case <-ctx.Done():
				return
			}
		}
	}()

	write := func(i int) (start, ack, event int64) {
		start = time.Now().UnixNano()
		if _, err := leader.Apply(ctx, registerCmd(testInstance("bench", fmt.Sprint(i), "n1"))); err != nil {
			b.Fatal(err)
		}
		ack = time.Now().UnixNano()
		select {
		case event = <-events:
		case <-time.After(10 * time.Second):
			b.Fatalf("write %d: no event on the follower in 10s", i)
		}
		return start, ack, event
	}
	// A write before the timer opens the connections the pushes take.
	write(-1)
	before := raftTimers(sink)
	stages := map[string][]time.Duration{}
	since := func(name string, start, at int64) { stages[name] = append(stages[name], time.Duration(at-start)) }
	b.ResetTimer()
	for i := range b.N {
		start, ack, event := write(i)
		since("leader-apply-us", start, decodedAt[li].Load())
		since("push-us", start, pushedAt.Load())
		since("push-other-us", start, otherAt.Load())
		since("push-after-apply-us", decodedAt[li].Load(), pushedAt.Load())
		since("event-after-push-us", pushedAt.Load(), event)
		since("event-after-apply-us", decodedAt[li].Load(), event)
		since("ack-us", start, ack)
		since("follower-event-us", start, event)
	}
	b.StopTimer()
	for name, d := range stages {
		slices.Sort(d)
		b.ReportMetric(float64(d[len(d)/2])/1e3, name)
	}
	after := raftTimers(sink)
	for name, t := range after {
		if n := t.count - before[name].count; n > 0 {
			b.ReportMetric(1e3*(t.sum-before[name].sum)/float64(n), name)
		}
	}
}

// raftTimerNames names the raft timers the benchmark reports, by their
// key in go-metrics' in-memory sink (labels after ';').
var raftTimerNames = map[string]string{
	"raft.leader.dispatchLog":                   "raft-dispatch-us",
	"raft.replication.appendEntries.rpc":        "raft-append-rtt-us",
	"raft.rpc.appendEntries.storeLogs":          "raft-follower-store-us",
	"raft.commitTime":                           "raft-commit-us",
	"raft.fsm.enqueue":                          "raft-fsm-enqueue-us",
	"raft.fsm.applyBatch":                       "raft-fsm-apply-us",
	"raft.net.rpcEnqueue;rpcType=AppendEntries": "raft-rpc-enqueue-us",
}

type timerTotal struct {
	sum   float64 // milliseconds
	count int
}

// raftTimers sums the samples of each of raftTimerNames the sink holds
// (a labelled timer counts under every label value).
func raftTimers(sink *metrics.InmemSink) map[string]timerTotal {
	out := make(map[string]timerTotal)
	for _, iv := range sink.Data() {
		iv.RLock()
		for k, v := range iv.Samples {
			for key, name := range raftTimerNames {
				if k == key || strings.HasPrefix(k, key+";") {
					t := out[name]
					t.sum += v.Sum
					t.count += v.Count
					out[name] = t
				}
			}
		}
		iv.RUnlock()
	}
	return out
}
