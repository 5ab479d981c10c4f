package storage

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/internal/testlog"
	"github.com/zrpcio/zrpc/internal/testwait"
	"github.com/zrpcio/zrpc/storage/codec"
	"github.com/zrpcio/zrpc/storage/shardstore"
)

// commitBlob commits a blob of one block with the given holders ("" for a
// missing shard) straight through the fake cluster's state machine.
func commitBlob(t testing.TB, fc *fakeCluster, name string, k, m int, holders ...string) *pb.Blob {
	t.Helper()
	id := strings.Repeat("ab", 16)
	if _, err := fc.apply(&pb.Command{Kind: &pb.Command_BlobPending{BlobPending: &pb.BlobPending{Id: id, Name: name, Node: fc.self}}}); err != nil {
		t.Fatal(err)
	}
	b := &pb.Blob{Name: name, Id: id, Size: 100, DataShards: uint32(k), ParityShards: uint32(m), BlockSize: 4096}
	blk := &pb.BlobBlock{Len: 100, Sums: make([]uint32, k+m)}
	for _, h := range holders {
		ref := uint32(0)
		if h != "" {
			ref = b.HolderRef(h)
		}
		blk.Holders = append(blk.Holders, ref)
	}
	b.Blocks = []*pb.BlobBlock{blk}
	if _, err := fc.apply(&pb.Command{Kind: &pb.Command_BlobCommit{BlobCommit: &pb.BlobCommit{Blob: b}}}); err != nil {
		t.Fatal(err)
	}
	return fc.fsm.BlobByID(id)
}

// TestRepairWorkersNeverPickOneAgentForTwoShardsOfABlock: two shards of
// one block rebuilt at once (by two workers) go to two different agents,
// and an agent is free for the block again once its shard is recorded.
func TestRepairWorkersNeverPickOneAgentForTwoShardsOfABlock(t *testing.T) {
	s, fc := newTestStore(t, Config{}, "n1", "n1", "n2", "n3", "n4", "n5")
	b := commitBlob(t, fc, "two-lost", 2, 1, "n1", "", "")
	first, err := s.repair.target(b, 0, 1, reasonMissing)
	if err != nil {
		t.Fatal(err)
	}
	second, err := s.repair.target(b, 0, 2, reasonMissing)
	if err != nil {
		t.Fatal(err)
	}
	if first == second || first == "n1" || second == "n1" {
		t.Fatalf("shards 1 and 2 of a block whose shard 0 is on n1 placed on %s and %s: want two other distinct agents", first, second)
	}
	s.repair.release([]rebuilt{
		{t: task{key: shardKey{b.Id, 0, 1}}, reserved: first},
		{t: task{key: shardKey{b.Id, 0, 2}}, reserved: second},
	})
	if again, err := s.repair.target(b, 0, 1, reasonMissing); err != nil || again != first {
		t.Fatalf("after release, shard 1 goes to %s (%v), want %s again", again, err, first)
	}
}

// TestRepairDoesNotRecordAShardItsAgentLost: a rebuilt shard that its
// target no longer has staged at sync time (the agent restarted between
// the two) is failed, so its agent is not recorded as a holder.
func TestRepairDoesNotRecordAShardItsAgentLost(t *testing.T) {
	s, fc := newTestStore(t, Config{}, "n1", "n1", "n2", "n3")
	b := commitBlob(t, fc, "restarted-target", 2, 1, "n2", "n3", "")
	payload := make([]byte, 50)
	h := shardstore.Header{ID: shardstore.ID{Blob: b.Id, Block: 0, Index: 2}, K: 2, M: 1, BlockLen: 100, ShardLen: 50, Sum: codec.Checksum(payload), BlockSize: 100}
	if err := s.shards.Stage(h, payload); err != nil {
		t.Fatal(err)
	}
	s.shards.Discard(h.ID) // what a restart of the agent does to a staged shard
	results := []rebuilt{{
		t:      task{key: shardKey{b.Id, 0, 2}, reason: reasonMissing},
		placed: &pb.ShardPlacement{Block: 0, Index: 2, Node: "n1", Sum: h.Sum},
	}}
	s.repair.syncRebuilt(context.Background(), results)
	if results[0].err == nil {
		t.Fatal("a rebuilt shard its agent no longer had was taken as durable")
	}
}

// commitBlocks commits a blob of n 100-byte blocks whose shards all have
// CRC32C sum and are on holders (in index order) straight through the
// fake cluster.
func commitBlocks(t testing.TB, fc *fakeCluster, name string, n, k, m int, sum uint32, holders ...string) *pb.Blob {
	t.Helper()
	id := strings.Repeat("cd", 16)
	if _, err := fc.apply(&pb.Command{Kind: &pb.Command_BlobPending{BlobPending: &pb.BlobPending{Id: id, Name: name, Node: fc.self}}}); err != nil {
		t.Fatal(err)
	}
	b := &pb.Blob{Name: name, Id: id, Size: uint64(100 * n), DataShards: uint32(k), ParityShards: uint32(m), BlockSize: 100}
	for range n {
		blk := &pb.BlobBlock{Len: 100}
		for _, h := range holders {
			blk.Sums = append(blk.Sums, sum)
			ref := uint32(0)
			if h != "" {
				ref = b.HolderRef(h)
			}
			blk.Holders = append(blk.Holders, ref)
		}
		b.Blocks = append(b.Blocks, blk)
	}
	if _, err := fc.apply(&pb.Command{Kind: &pb.Command_BlobCommit{BlobCommit: &pb.BlobCommit{Blob: b}}}); err != nil {
		t.Fatal(err)
	}
	return fc.fsm.BlobByID(id)
}

// TestRepairBatchesOfOneBlobMakeOnlyTheirOwnShardsDurable: two repair
// batches rebuilding different blocks of one blob onto one agent each
// make their own staged shard durable and count only it. Neither commits
// the other's: a batch does not fail because another batch's sync took
// its shard, and a batch whose own shard its agent lost (it restarted) is
// not taken as durable because another batch's shard was staged there.
func TestRepairBatchesOfOneBlobMakeOnlyTheirOwnShardsDurable(t *testing.T) {
	s, fc := newTestStore(t, Config{}, "n1", "n1", "n2", "n3")
	payload := make([]byte, 50)
	sum := codec.Checksum(payload)
	b := commitBlocks(t, fc, "two-batches", 3, 2, 1, sum, "n2", "n3", "")
	stage := func(block uint32) rebuilt {
		t.Helper()
		h := shardstore.Header{ID: shardstore.ID{Blob: b.Id, Block: block, Index: 2}, K: 2, M: 1, BlockLen: 100, ShardLen: 50, Sum: sum, BlockSize: 100}
		if err := s.shards.Stage(h, payload); err != nil {
			t.Fatal(err)
		}
		return rebuilt{
			t:      task{key: shardKey{b.Id, block, 2}, reason: reasonMissing},
			placed: &pb.ShardPlacement{Block: block, Index: 2, Node: "n1", Sum: sum},
		}
	}
	held := func(block uint32) bool {
		_, _, err := s.shards.Get(shardstore.ID{Blob: b.Id, Block: block, Index: 2}, nil)
		return err == nil
	}

	// Both batches stage before either syncs.
	first, second := []rebuilt{stage(0)}, []rebuilt{stage(1)}
	s.repair.syncRebuilt(context.Background(), first)
	if first[0].err != nil {
		t.Fatalf("first batch: %v", first[0].err)
	}
	if held(1) {
		t.Fatal("the first batch's sync made the second batch's staged shard durable")
	}
	s.repair.syncRebuilt(context.Background(), second)
	if second[0].err != nil {
		t.Fatalf("second batch, after the first synced: %v", second[0].err)
	}
	if !held(0) || !held(1) {
		t.Fatalf("durable after both syncs: block 0 %v, block 1 %v; want both", held(0), held(1))
	}

	// The agent loses the third batch's shard (a restart), then a fourth
	// batch stages another block there: the third's sync must not count
	// the fourth's shard as its own.
	third := []rebuilt{stage(2)}
	s.shards.Discard(shardstore.ID{Blob: b.Id, Block: 2, Index: 2})
	h := shardstore.Header{ID: shardstore.ID{Blob: b.Id, Block: 0, Index: 2}, K: 2, M: 1, BlockLen: 100, ShardLen: 50, Sum: sum, BlockSize: 100}
	if err := s.shards.Stage(h, payload); err != nil {
		t.Fatal(err)
	}
	s.repair.syncRebuilt(context.Background(), third)
	if third[0].err == nil {
		t.Fatal("a batch whose shard its agent lost was taken as durable: another batch's staged shard was counted as its own")
	}
	if held(2) {
		t.Fatal("block 2, never durably stored, reads back")
	}
}

// TestRepairCountsAFailedRebuildAsRetrying: a lost shard whose rebuild
// fails is neither queued nor in progress until a scan queues it again,
// one repair interval after the failure (the scans that reports wake
// sooner leave it); the status counts it as retrying meanwhile, so that
// nothing queued and nothing in progress does not read as nothing lost.
// A shard that no longer needs rebuilding (its blob deleted) stops
// counting.
func TestRepairCountsAFailedRebuildAsRetrying(t *testing.T) {
	var logs testlog.Buffer
	s, fc := newTestStoreLog(t, Config{RepairInterval: time.Hour}, slog.New(slog.NewTextHandler(&logs, nil)), "n1", "n1", "n2", "n3")
	// One shard of three left, and no peer to read it from: every rebuild
	// fails.
	b := commitBlob(t, fc, "one-left", 2, 1, "n2", "", "")
	ctx := context.Background()
	r := s.repair
	runQueued := func() {
		for len(r.queue) > 0 {
			next := <-r.queue
			r.runBatch(ctx, []task{next})
		}
	}
	want := func(what string, queued, retrying, failed uint64) {
		t.Helper()
		st := s.RepairStatus("")
		if st.Queued != queued || st.InProgress != 0 || st.Retrying != retrying || st.Failed != failed {
			t.Fatalf("%s: queued %d, in progress %d, retrying %d, failed %d; want %d, 0, %d, %d (last error %q)",
				what, st.Queued, st.InProgress, st.Retrying, st.Failed, queued, retrying, failed, st.LastError)
		}
	}
	r.scan(ctx)
	want("after the first scan", 2, 0, 0)
	first, second := <-r.queue, <-r.queue
	r.runBatch(ctx, []task{first, second}) // one batch of both
	want("after both rebuilds failed", 0, 2, 2)
	if n := strings.Count(logs.String(), "level=WARN"); n != 1 || !strings.Contains(logs.String(), "failed=2") {
		t.Fatalf("a batch of two failed rebuilds logged %d warnings, want one naming both:\n%s", n, logs.String())
	}
	for range 3 {
		r.scan(ctx) // as a report would wake it
	}
	want("after scans within the repair interval", 0, 2, 2)
	r.mu.Lock()
	for k := range r.retry {
		r.retry[k] = time.Now().Add(-time.Hour) // the interval has passed
	}
	r.mu.Unlock()
	r.scan(ctx)
	want("after a scan a repair interval later", 2, 0, 2)
	runQueued()
	want("after they failed again", 0, 2, 4)
	if _, err := fc.apply(&pb.Command{Kind: &pb.Command_BlobDelete{BlobDelete: &pb.BlobDelete{Name: b.Name}}}); err != nil {
		t.Fatal(err)
	}
	r.scan(ctx)
	want("after the blob was deleted", 0, 0, 4)
}

// TestRepeatedFindingsOfADamagedCopyAreReportedOncePerInterval: every read
// of a block that stays damaged finds the same copy lost; the agent warns
// and reports it to the leader once per repair interval, not once per
// read, and again after the interval (or when a report did not reach the
// leader).
func TestRepeatedFindingsOfADamagedCopyAreReportedOncePerInterval(t *testing.T) {
	var logs testlog.Buffer
	s, fc := newTestStoreLog(t, Config{RepairInterval: time.Hour}, slog.New(slog.NewTextHandler(&logs, nil)), "n1", "n1", "n2", "n3")
	b := commitBlob(t, fc, "damaged", 2, 1, "n1", "n2", "n3")
	ref := &pb.ShardRef{BlobId: b.Id, Block: 0, Index: 1, Node: "n2"}
	warned := func() int { return strings.Count(logs.String(), "lost shards found") }
	for range 5 {
		s.reportShards([]*pb.ShardRef{ref}, true)
	}
	s.wg.Wait() // the reports in flight
	if n := warned(); n != 1 {
		t.Fatalf("five reads finding one lost copy warned %d times, want once:\n%s", n, logs.String())
	}
	s.repair.mu.Lock()
	reported := s.repair.corrupt[copyKey{shardKey{b.Id, 0, 1}, "n2"}]
	s.repair.mu.Unlock()
	if reported != faultLost {
		t.Fatalf("the leader's repair has the lost copy as %d, want lost (%d)", reported, faultLost)
	}
	other := &pb.ShardRef{BlobId: b.Id, Block: 0, Index: 2, Node: "n3"}
	s.reportShards([]*pb.ShardRef{ref, other}, true)
	if n := warned(); n != 2 || !strings.Contains(logs.String(), "shard=2") {
		t.Fatalf("a read finding that copy and another lost warned %d times in all, want a second warning for the other:\n%s", n, logs.String())
	}
	s.reported.mu.Lock()
	for k := range s.reported.at {
		s.reported.at[k] = time.Now().Add(-time.Hour) // the interval has passed
	}
	s.reported.mu.Unlock()
	s.reportShards([]*pb.ShardRef{ref}, true)
	if n := warned(); n != 3 {
		t.Fatalf("a finding a repair interval later warned %d times in all, want 3:\n%s", n, logs.String())
	}
	s.reported.forget([]*pb.ShardRef{ref})
	s.reportShards([]*pb.ShardRef{ref}, true)
	if n := warned(); n != 4 {
		t.Fatalf("a finding after a report that did not reach the leader warned %d times in all, want 4", n)
	}
	s.wg.Wait()
}

// TestRepairGaugesFollowTheLeadersRepair: the retrying and waiting gauges
// read the repair's state at scrape time while it runs on the leader, and
// read 0 once it no longer does (a former leader does not keep exporting
// its last counts).
func TestRepairGaugesFollowTheLeadersRepair(t *testing.T) {
	s, _ := newTestStore(t, Config{RepairInterval: time.Hour}, "n1", "n1", "n2", "n3")
	r, m := s.repair, s.metrics
	read := func(g prometheus.Metric) float64 {
		var out dto.Metric
		if err := g.Write(&out); err != nil {
			t.Fatal(err)
		}
		return out.GetGauge().GetValue()
	}
	gauges := func() [5]float64 {
		return [5]float64{read(m.repairRetrying), read(m.repairWaiting), read(m.repairWaitingForAgent),
			read(m.repairQueued), read(m.repairInProgress)}
	}
	r.mu.Lock()
	r.leading = true
	r.retry[shardKey{"b", 0, 1}] = time.Now()
	r.retry[shardKey{"b", 1, 1}] = time.Now()
	r.waiting, r.waitingForAgent = 5, 3
	r.inProgress = 4
	r.mu.Unlock()
	r.queue <- task{key: shardKey{"b", 2, 0}}
	if got, want := gauges(), [5]float64{2, 5, 3, 1, 4}; got != want {
		t.Fatalf("leading: retrying, waiting, waiting for an agent, queued, in progress = %v, want %v", got, want)
	}
	r.mu.Lock()
	r.leading = false
	r.mu.Unlock()
	if got := gauges(); got != [5]float64{} {
		t.Fatalf("no longer leading: gauges %v, want 0", got)
	}
}

// TestRepairBacksOffAFullAgentAndComesBackWhenItHasRoom: an agent that
// answers a rebuilt shard with no space gets no shard for fullFirst,
// twice as long after each refusal in a row up to fullFor; shards refused
// while the wait runs (sent before it began) do not lengthen it; the
// agent gets shards again at once when it announces more room, and a
// shard it stores ends the count.
func TestRepairBacksOffAFullAgentAndComesBackWhenItHasRoom(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	s, fc := newTestStore(t, Config{Now: func() time.Time { return now }}, "n1", "n1", "n2", "n3")
	r := s.repair
	fc.setShardRoom("n2", 1<<20)
	refuse := func(at time.Time) time.Duration {
		r.mu.Lock()
		defer r.mu.Unlock()
		return r.refuseSpace("n2", at)
	}
	refused := func(at time.Time) bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		return r.refusedSpace("n2", at)
	}
	if refused(now) {
		t.Fatal("an agent that never refused a shard is refused")
	}
	if w := refuse(now); w != fullFirst {
		t.Fatalf("first refusal: wait %s, want %s", w, fullFirst)
	}
	if !refused(now.Add(fullFirst-time.Millisecond)) || refused(now.Add(fullFirst)) {
		t.Fatalf("after a first refusal the agent must get no shard for exactly %s", fullFirst)
	}
	if w := refuse(now.Add(time.Second)); w != fullFirst-time.Second {
		t.Fatalf("a refusal during the wait: wait %s, want the %s left of it", w, fullFirst-time.Second)
	}
	at, w := now.Add(fullFirst), time.Duration(0)
	var waits []time.Duration
	for range 6 {
		w = refuse(at)
		waits = append(waits, w)
		at = at.Add(w)
	}
	want := []time.Duration{10 * time.Second, 20 * time.Second, 40 * time.Second, fullFor, fullFor, fullFor}
	if !slices.Equal(waits, want) {
		t.Fatalf("refusals in a row wait %v, want %v", waits, want)
	}
	refuse(at)
	if !refused(at.Add(time.Second)) {
		t.Fatal("not refused within its wait")
	}
	fc.setShardRoom("n2", 1<<30) // someone freed space there
	if refused(at.Add(time.Second)) {
		t.Fatal("still refused after the agent announced more room")
	}

	// A shard stored there ends the count: the next refusal waits
	// fullFirst again.
	r.mu.Lock()
	r.inProgress++
	r.mu.Unlock()
	now = at.Add(2 * time.Second)
	r.finish(rebuilt{t: task{key: shardKey{strings.Repeat("cd", 16), 0, 1}}, reserved: "n2"})
	if w := refuse(now); w != fullFirst {
		t.Fatalf("a refusal after a stored shard: wait %s, want %s", w, fullFirst)
	}
}

// TestACorruptCopyWhoseAgentCannotRewriteItMoves: a corrupt copy is
// rewritten on its own agent; once that agent has failed to store the
// rewrite maxInPlace times in a row (its disk fails writes too), the
// shard goes to an agent without a shard of the block, when there is
// one, and back on its own agent when there is none. A failure that is
// not the target's (the rebuild's own) does not count.
func TestACorruptCopyWhoseAgentCannotRewriteItMoves(t *testing.T) {
	for _, tc := range []struct {
		nodes []string
		want  string
	}{
		{[]string{"n1", "n2", "n3", "n4"}, "n4"},
		{[]string{"n1", "n2", "n3"}, "n1"},
	} {
		s, fc := newTestStore(t, Config{}, "n2", tc.nodes...)
		b := commitBlob(t, fc, "bad-disk", 2, 1, "n1", "n2", "n3")
		r := s.repair
		tk := task{key: shardKey{b.Id, 0, 0}, reason: reasonCorrupt}
		fail := func(stored bool) {
			t.Helper()
			target, err := r.target(b, 0, 0, reasonCorrupt)
			if err != nil {
				t.Fatal(err)
			}
			r.mu.Lock()
			r.inProgress++
			r.mu.Unlock()
			res := rebuilt{t: tk, reserved: target, stored: stored, err: errors.New("stage shard: input/output error")}
			r.release([]rebuilt{res})
			r.finish(res)
		}
		fail(false) // the rebuild's failure, not n1's
		for range maxInPlace - 1 {
			fail(true)
		}
		if got, err := r.target(b, 0, 0, reasonCorrupt); err != nil || got != "n1" {
			t.Fatalf("%v: after %d failed rewrites on n1 the shard goes to %s (%v), want n1 still", tc.nodes, maxInPlace-1, got, err)
		}
		r.release([]rebuilt{{t: tk, reserved: "n1"}})
		fail(true)
		if got, err := r.target(b, 0, 0, reasonCorrupt); err != nil || got != tc.want {
			t.Fatalf("%v: after %d failed rewrites on n1 the shard goes to %s (%v), want %s", tc.nodes, maxInPlace, got, err, tc.want)
		}
	}
}

// TestShardReadsTheDiskFailsAreCountedAndWarnedOfOnceAMinute: scrub passes
// over a shard whose reads fail with EIO report it as corrupt each time,
// count every failed read in zrpc_blob_shard_io_errors_total, and warn
// once (a failing disk is the operator's to replace, not a line per read);
// before the disk fails, a pass finds nothing.
func TestShardReadsTheDiskFailsAreCountedAndWarnedOfOnceAMinute(t *testing.T) {
	var logs testlog.Buffer
	var eio atomic.Bool
	fc := newFakeCluster("n1")
	fc.setNodes(t, true, "n1", "n2", "n3")
	shards, err := shardstore.Open(t.TempDir(), shardstore.Options{ReadFault: func(shardstore.ID) error {
		if eio.Load() {
			return syscall.EIO
		}
		return nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	s := New(Config{RepairInterval: time.Hour}, fc, shards, nil, slog.New(slog.NewTextHandler(&logs, nil)))
	fc.store = s
	t.Cleanup(s.Close)
	b := commitBlob(t, fc, "on-a-bad-disk", 2, 1, "n1", "n2", "n3")
	payload := make([]byte, codec.ShardLen(int(b.Blocks[0].Len), 2))
	h := shardstore.Header{ID: shardstore.ID{Blob: b.Id, Block: 0, Index: 0}, K: 2, M: 1, BlockLen: b.Blocks[0].Len,
		ShardLen: uint32(len(payload)), Sum: codec.Checksum(payload), BlockSize: b.BlockSize}
	if err := shards.Put(h, payload); err != nil {
		t.Fatal(err)
	}
	ioErrors := func() float64 {
		var out dto.Metric
		if err := s.metrics.shardIOErrors.Write(&out); err != nil {
			t.Fatal(err)
		}
		return out.GetCounter().GetValue()
	}
	ctx := context.Background()
	if n := s.ScrubOnce(ctx, 0); n != 0 || ioErrors() != 0 {
		t.Fatalf("a pass over a readable shard: %d reported, %v I/O errors; want none", n, ioErrors())
	}
	eio.Store(true)
	for range 3 {
		if n := s.ScrubOnce(ctx, 0); n != 1 {
			t.Fatalf("a pass over a shard the disk cannot read reported %d, want 1", n)
		}
	}
	s.wg.Wait()
	if got := ioErrors(); got != 3 {
		t.Fatalf("zrpc_blob_shard_io_errors_total = %v after three passes, want 3", got)
	}
	if n := strings.Count(logs.String(), "the disk failed to read a shard"); n != 1 {
		t.Fatalf("three failed reads within a minute warned %d times, want once:\n%s", n, logs.String())
	}
}

// hungDisk makes a shard store's fsyncs of part files hang, from hang
// until release, as a disk stuck in fsync does.
type hungDisk struct {
	hung atomic.Bool
	ch   chan struct{}
}

func newHungDisk() *hungDisk { return &hungDisk{ch: make(chan struct{})} }

func (d *hungDisk) hang() { d.hung.Store(true) }

func (d *hungDisk) release() {
	if d.hung.CompareAndSwap(true, false) {
		close(d.ch)
	}
}

// options are the shard store options of a store on d.
func (d *hungDisk) options() shardstore.Options {
	return shardstore.Options{SyncDelay: func() time.Duration {
		if d.hung.Load() {
			<-d.ch
		}
		return 0
	}}
}

// TestRepairSyncGivesUpOnADiskThatHangs: a batch's rebuilt shards staged
// on an agent whose disk hangs in fsync (this agent, or a peer that still
// answers) are failed once the sync's bound passes, so that the batch,
// and every shard queued behind it, goes on; they are counted as
// retrying. Nothing is deleted: the blob's shards already durable on the
// hung disk are still there once it comes back.
func TestRepairSyncGivesUpOnADiskThatHangs(t *testing.T) {
	for _, target := range []string{"n1", "n2"} {
		t.Run("on "+target, func(t *testing.T) {
			disk := newHungDisk()
			var logs testlog.Buffer
			cfg := Config{ShardTimeout: 200 * time.Millisecond, RepairInterval: time.Hour}
			s, fc := newTestStoreOpts(t, cfg, slog.New(slog.NewTextHandler(&logs, nil)), disk.options(), "n1", "n1", "n2", "n3")
			t.Cleanup(disk.release) // before the store closes, which waits for the commit
			fc.peer = func(string) (pb.ShardsClient, error) { return hangingPeer{delay: -1}, nil }
			payload := make([]byte, 50)
			sum := codec.Checksum(payload)
			b := commitBlocks(t, fc, "hung-disk", 2, 2, 1, sum, "n2", "n3", "")
			stage := func(block uint32) {
				t.Helper()
				h := shardstore.Header{ID: shardstore.ID{Blob: b.Id, Block: block, Index: 2}, K: 2, M: 1, BlockLen: 100, ShardLen: 50, Sum: sum, BlockSize: 100}
				if err := s.shards.Stage(h, payload); err != nil {
					t.Fatal(err)
				}
			}
			// Block 0's rebuilt shard is durable here already.
			stage(0)
			if _, err := s.commitStaged(b.Id, nil); err != nil {
				t.Fatal(err)
			}
			if target == "n1" {
				stage(1)
			}
			disk.hang()
			results := []rebuilt{{
				t:      task{key: shardKey{b.Id, 1, 2}, reason: reasonMissing},
				placed: &pb.ShardPlacement{Block: 1, Index: 2, Node: target, Sum: sum}, bytes: len(payload), reserved: target,
			}}
			ctx, cancel := context.WithCancel(context.Background())
			t.Cleanup(cancel) // ends a sync that never gives up
			done := make(chan struct{})
			go func() {
				defer close(done)
				s.repair.syncRebuilt(ctx, results)
			}()
			testwait.For(t, 10*time.Second, "repair's sync to give up on "+target+", whose disk hangs", func() bool {
				select {
				case <-done:
					return true
				default:
					return false
				}
			})
			if err := results[0].err; err == nil || !results[0].stored || !strings.Contains(err.Error(), "dmesg") {
				t.Fatalf("sync on %s whose disk hangs: %v (the target's failure: %v); want a failure saying what to check", target, err, results[0].stored)
			}
			if !strings.Contains(logs.String(), "level=WARN") || !strings.Contains(logs.String(), "agent="+target) {
				t.Fatalf("no warning naming %s:\n%s", target, logs.String())
			}
			s.repair.mu.Lock()
			s.repair.inProgress++ // as runBatch counts it
			s.repair.mu.Unlock()
			s.repair.finish(results[0])
			if st := s.RepairStatus(""); st.InProgress != 0 || st.Retrying != 1 {
				t.Fatalf("after the sync gave up: in progress %d, retrying %d; want 0, 1", st.InProgress, st.Retrying)
			}
			disk.release()
			held := func(block uint32) bool {
				_, _, err := s.shards.Get(shardstore.ID{Blob: b.Id, Block: block, Index: 2}, nil)
				return err == nil
			}
			if target == "n1" {
				testwait.For(t, 10*time.Second, "the commit that repair stopped waiting for to end", func() bool { return held(1) })
			}
			if !held(0) {
				t.Fatal("block 0's shard, durable before the disk hung, is gone")
			}
		})
	}
}
