package storage

import (
	"context"
	"fmt"
	"maps"
	"sort"
	"sync"
	"time"

	"github.com/zrpcio/zrpc/api/apierr"
	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/internal/stall"
)

// Why a shard is queued for repair.
const (
	reasonMissing = "missing"      // the put could not store it
	reasonFailed  = "node-failed"  // its agent has been failed past the repair delay
	reasonGone    = "node-gone"    // its agent left the cluster
	reasonCorrupt = "corrupt"      // a read or the scrubber found its holder's copy corrupt or lost
	reasonLeaving = "node-leaving" // its agent is leaving the cluster and hands it off
)

type shardKey struct {
	blob  string
	block uint32
	index uint32
}

// copyKey names one agent's copy of a shard.
type copyKey struct {
	shardKey
	node string
}

// blockRef names one block of a blob.
type blockRef struct {
	blob  string
	block uint32
}

type task struct {
	key    shardKey
	node   string // the shard's holder when it was queued ("" for none)
	reason string
}

// repairer rebuilds lost shards. It runs on the leader only: Run is started
// by the leader hook and returns when leadership ends. Corrupt shard reports
// reach it from any agent through the leader.
type repairer struct {
	s     *Store
	wake  chan struct{}
	queue chan task

	mu     sync.Mutex
	queued map[shardKey]bool // queued or in progress
	// corrupt holds the copies reported corrupt or lost, by agent: only the
	// copy on the shard's holder matters (another agent's copy is an
	// orphan, which orphan collection deletes).
	corrupt map[copyKey]fault
	// placing holds, per block, the agents a worker is storing a rebuilt
	// shard of it on and whose holder is not recorded yet, so that two
	// workers never place two shards of one block on one agent.
	placing  map[blockRef]map[string]bool
	failedAt map[string]time.Time // agent -> when this leader first saw it failed
	// putSeen: pending put id -> when this leader first saw it pending,
	// or its start if it began while this agent leads (abortStalePuts);
	// leadSince is when this agent's leadership began.
	putSeen   map[string]time.Time
	leadSince time.Time
	// lost is the time this agent lost (Config.Lost) since a scan last
	// moved failedAt and putSeen by it (catchUp).
	lost *stall.Since
	// full holds the agents that answered a rebuilt shard with no space
	// (their disk or shard store is full): repair places no shard on them
	// for a while (spaceRefusal), since each scan would otherwise try
	// every lost shard on them again, failing and warning for each.
	full map[string]spaceRefusal
	// inPlace counts, by shard, the rewrites of a corrupt copy on its
	// own agent that the agent failed to store in a row (a disk that
	// fails writes too): past maxInPlace, repair places it on another
	// agent when one can take it.
	inPlace map[shardKey]int
	// retry holds the shards whose rebuild failed, and when, until a scan
	// queues them again (or finds they need none): neither queued nor in
	// progress meanwhile, they are still lost. A scan queues one again
	// only RepairInterval after its failure: the reads of a failed
	// rebuild report its block's lost shards, and each report wakes a
	// scan, which would otherwise retry at once, fail the same way and
	// report again, as fast as the calls go.
	retry      map[shardKey]time.Time
	inProgress int
	waiting    int // lost shards that cannot be rebuilt yet
	// waitingForAgent: the part of waiting that no alive agent with room
	// can take, each already holding a shard of the block.
	waitingForAgent int
	rebuilt         uint64
	rebuiltB        uint64
	failures        uint64
	lastErr         string
	lastScan        time.Time
	leading         bool
}

func newRepairer(s *Store) *repairer {
	return &repairer{
		s: s, wake: make(chan struct{}, 1), queue: make(chan task, 4096),
		queued: make(map[shardKey]bool), retry: make(map[shardKey]time.Time), corrupt: make(map[copyKey]fault), failedAt: make(map[string]time.Time),
		placing: make(map[blockRef]map[string]bool), full: make(map[string]spaceRefusal), inPlace: make(map[shardKey]int),
		lost: stall.NewSince(s.cfg.Lost),
	}
}

func (r *repairer) nudge() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// fault is how a copy of a shard was found bad.
type fault uint8

const (
	faultCorrupt fault = iota + 1 // it fails its CRC32C
	faultLost                     // its holder has no file for it
)

// report records copies of shards found corrupt or lost and wakes the
// scan. A ref without a node is the reporter's own copy (a scrubber's
// report from an agent that does not name holders).
func (r *repairer) report(refs []*pb.ShardRef, reporter string) {
	r.mu.Lock()
	for _, ref := range refs {
		node := ref.GetNode()
		if node == "" {
			node = reporter
		}
		if node != "" {
			f := faultCorrupt
			if ref.Lost {
				f = faultLost
			}
			r.corrupt[copyKey{shardKey{ref.BlobId, ref.Block, ref.Index}, node}] = f
		}
	}
	r.mu.Unlock()
	r.nudge()
}

// RunRepair runs the repair loop until ctx ends (leadership is lost or the
// agent stops): every RepairInterval, or sooner when nudged, it scans all
// blobs for shards to rebuild, aborts puts whose coordinator died, and
// feeds the workers.
func (s *Store) RunRepair(ctx context.Context) {
	r := s.repair
	r.mu.Lock()
	r.leading = true
	r.failedAt = make(map[string]time.Time)
	r.putSeen = make(map[string]time.Time)
	r.leadSince = r.s.now()
	r.lost = stall.NewSince(r.s.cfg.Lost)
	r.retry = make(map[shardKey]time.Time)
	r.full = make(map[string]spaceRefusal)
	r.inPlace = make(map[shardKey]int)
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		r.leading = false
		r.mu.Unlock()
	}()
	var wg sync.WaitGroup
	defer wg.Wait()
	for range s.cfg.RepairWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.work(ctx)
		}()
	}
	t := time.NewTicker(s.cfg.RepairInterval)
	defer t.Stop()
	for {
		r.scan(ctx)
		select {
		case <-ctx.Done():
			return
		case <-s.ctx.Done():
			return
		case <-t.C:
		case <-r.wake:
		}
	}
}

// scan finds shards to repair and pending puts to abort.
func (r *repairer) scan(ctx context.Context) {
	s := r.s
	now := r.s.now()
	state := make(map[string]string) // agent -> "" alive, reasonLeaving, reasonFailed (past delay), "waiting"
	open := make(map[string]bool)    // the agents a lost shard can go to: alive, with room, staying
	r.mu.Lock()
	r.catchUp()
	for _, m := range s.members() {
		if m.Alive {
			delete(r.failedAt, m.Name)
			state[m.Name] = ""
			if m.Leaving {
				state[m.Name] = reasonLeaving
				continue
			}
			if !m.Full && !r.refusedSpace(m.Name, now) {
				open[m.Name] = true
			}
			continue
		}
		since, ok := r.failedAt[m.Name]
		if !ok {
			since = now
			r.failedAt[m.Name] = now
		}
		if now.Sub(since) >= s.cfg.RepairDelay {
			state[m.Name] = reasonFailed
		} else {
			state[m.Name] = "waiting"
		}
	}
	r.lastScan = now
	r.mu.Unlock()

	r.abortStalePuts(ctx, state, now)

	blobs, _ := s.cluster.Meta().Blobs("")
	var tasks []task
	waiting, forAgent := 0, 0
	needs := make(map[shardKey]bool) // lost shards a worker can rebuild now
	r.mu.Lock()
	for _, b := range blobs {
		for bi, blk := range b.Blocks {
			// Open agents that hold no shard of this block: where a lost
			// shard can go. With none, lost shards wait for an agent.
			free := len(open)
			for idx := range blk.Holders {
				if open[b.Holder(blk, idx)] {
					free--
				}
			}
			for idx := range blk.Holders {
				key := shardKey{b.Id, uint32(bi), uint32(idx)}
				node := b.Holder(blk, idx)
				st, known := state[node]
				reason := ""
				switch {
				case st == reasonLeaving:
					reason = reasonLeaving
				case b.ParityShards == 0:
					// Nothing to rebuild a lost shard from (stat shows
					// it); only a leaving agent's, still readable, moves.
					continue
				case node == "":
					reason = reasonMissing
				case !known:
					reason = reasonGone
				case st == reasonFailed:
					reason = reasonFailed
				case st == "waiting":
					waiting++
				case r.corrupt[copyKey{key, node}] != 0:
					reason = reasonCorrupt
				}
				if reason != "" && reason != reasonCorrupt && free <= 0 {
					waiting++
					forAgent++
					continue
				}
				if reason == "" {
					continue
				}
				needs[key] = true
				if failed, ok := r.retry[key]; ok && now.Sub(failed) < s.cfg.RepairInterval {
					continue // failed lately: a later scan retries it
				}
				if !r.queued[key] {
					tasks = append(tasks, task{key: key, node: node, reason: reason})
				}
			}
		}
	}
	r.waiting, r.waitingForAgent = waiting, forAgent
	// A failed shard this scan does not find lost (its blob is gone, it
	// moved, or it now waits for an agent) is no longer retried.
	for key := range r.inPlace {
		if !needs[key] {
			delete(r.inPlace, key)
		}
	}
	for key := range r.retry {
		if !needs[key] {
			delete(r.retry, key)
		}
	}
	// Forget reports of copies the metadata no longer places on their
	// agent: the blob is gone, or the shard moved.
	for key := range r.corrupt {
		if holderOf(s.cluster.Meta().BlobByID(key.blob), key.block, key.index) != key.node {
			delete(r.corrupt, key)
		}
	}
	r.mu.Unlock()
	for _, t := range tasks {
		r.mu.Lock()
		if r.queued[t.key] {
			r.mu.Unlock()
			continue
		}
		select {
		case r.queue <- t:
			r.queued[t.key] = true
			delete(r.retry, t.key)
		default: // queue full: the next scan finds the rest
		}
		r.mu.Unlock()
	}
}

// leaderCount is count of r's state while r runs on the leader, else 0
// (also for a nil r): what the repair gauges export.
func (r *repairer) leaderCount(count func(*repairer) int) float64 {
	if r == nil {
		return 0
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.leading {
		return 0
	}
	return float64(count(r))
}

// abortStalePuts aborts puts whose coordinating agent is gone or has been
// failed for the repair delay, client-striped puts whose lease has passed
// on this (the leader's) clock, and any put pending longer than
// PutTimeout. The shards of a client-striped put may be on any agent: the
// alive ones are asked to delete them at once, and orphan collection gets
// the rest.
//
// A put's start and lease are stamped by the clock of whichever agent led
// then; a leader whose clock runs ahead of that one's would take every
// put begun before it took over for timed out. It therefore counts the
// put timeout, and a lease's ttl, from when it first saw a put begun
// before it took over pending: such a put may run up to one lease (or
// put timeout) longer, never shorter. A put begun since, stamped by its
// own clock, is counted from its start.
func (r *repairer) abortStalePuts(ctx context.Context, state map[string]string, now time.Time) {
	var ids, leased []string
	pending := r.s.cluster.Meta().PendingBlobs()
	seen := r.seenPending(pending, now)
	for _, p := range pending {
		if now.Sub(seen[p.Id]) > r.s.cfg.PutTimeout {
			ids = append(ids, p.Id)
			continue
		}
		if p.LeaseExpires != 0 {
			// The client owns the put, not the agent that began it.
			if now.UnixNano() > p.LeaseExpires && now.Sub(seen[p.Id]) > time.Duration(p.LeaseTtl) {
				ids = append(ids, p.Id)
				leased = append(leased, p.Id)
			}
			continue
		}
		// A coordinator merely suspected (failed for less than the repair
		// delay) keeps its put: a busy agent can miss gossip probes.
		st, known := state[p.Node]
		if !known || st == reasonFailed {
			ids = append(ids, p.Id)
		}
	}
	if len(ids) == 0 {
		return
	}
	rev, err := r.s.cluster.Propose(ctx, &pb.Command{Kind: &pb.Command_BlobAbort{BlobAbort: &pb.BlobAbort{Ids: ids}}})
	if err != nil {
		r.s.log.Warn("abort stale puts", "ids", ids, "err", err)
		return
	}
	r.s.log.Info("aborted puts whose coordinator failed, whose lease passed or that timed out; their shards will be collected", "ids", ids)
	if len(leased) > 0 {
		r.s.dropPutShards(leased, rev)
	}
}

// seenPending records when this leader first saw each of the pending puts
// (now, for those new to it; the start of one begun while it leads),
// forgets the puts no longer pending, and returns the record.
// catchUp moves the times this leader first saw agents failed and puts
// pending by the time it lost since the last scan (stopped, paused,
// starved: Config.Lost): meanwhile it could read neither the renewals of
// put leases nor the gossip of agents coming back, and a put or an agent
// must not be given up on because the leader was not running. r.mu held.
func (r *repairer) catchUp() {
	d := r.lost.Take()
	if d <= 0 {
		return
	}
	for name, t := range r.failedAt {
		r.failedAt[name] = t.Add(d)
	}
	for id, t := range r.putSeen {
		r.putSeen[id] = t.Add(d)
	}
	r.s.log.Warn("put leases and failed agents' repair delays moved later by the time this agent did not run", "by", d.Round(time.Millisecond))
}

func (r *repairer) seenPending(pending []*pb.BlobPending, now time.Time) map[string]time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.putSeen == nil {
		r.putSeen = make(map[string]time.Time)
	}
	still := make(map[string]bool, len(pending))
	for _, p := range pending {
		still[p.Id] = true
		if _, ok := r.putSeen[p.Id]; !ok {
			first := now
			if started := time.Unix(0, p.Started); !started.Before(r.leadSince) {
				first = started
			}
			r.putSeen[p.Id] = first
		}
	}
	for id := range r.putSeen {
		if !still[id] {
			delete(r.putSeen, id)
		}
	}
	return maps.Clone(r.putSeen)
}

// An agent that answers a rebuilt shard with no space gets none for
// fullFirst, twice as long after each refusal in a row, up to fullFor;
// a shard it stores again ends the count. It gets shards again at once
// when it announces more room than it did when it refused (someone freed
// space there): an operator who frees space sees repair resume within a
// gossip round, not at the end of the wait.
const (
	fullFirst = 5 * time.Second
	fullFor   = time.Minute
)

// spaceRefusal is what repair remembers of an agent that answered a
// rebuilt shard with no space.
type spaceRefusal struct {
	until   time.Time // no shard before this...
	room    int64     // ...unless the agent announces more room than this
	strikes int       // refusals in a row
}

// refusedSpace reports whether repair places no shard on agent now
// because it refused one for want of space; r.mu is held.
func (r *repairer) refusedSpace(agent string, now time.Time) bool {
	f, ok := r.full[agent]
	return ok && now.Before(f.until) && r.s.cluster.ShardRoom(agent) <= f.room
}

// refuseSpace records that agent answered a rebuilt shard with no space
// and returns how long repair places none on it; r.mu is held.
func (r *repairer) refuseSpace(agent string, now time.Time) time.Duration {
	f := r.full[agent]
	f.room = r.s.cluster.ShardRoom(agent)
	if now.Before(f.until) {
		// One of the shards sent before the wait began (or before the
		// agent announced more room): not another refusal in a row.
		r.full[agent] = f
		return f.until.Sub(now)
	}
	f.strikes = min(f.strikes+1, 8)
	wait := min(fullFirst<<(f.strikes-1), fullFor)
	f.until = now.Add(wait)
	r.full[agent] = f
	return wait
}

// LeaderRepairStatus is RepairStatus as the leader, which runs repair,
// answers it.
func (s *Store) LeaderRepairStatus(ctx context.Context, blobID string) (*pb.RepairStatusResponse, error) {
	return s.LeaderRepairStatusOf(ctx, &pb.RepairStatusRequest{BlobId: blobID})
}

// LeaderRepairStatusOf is the leader's answer to req, which may name many
// blobs.
func (s *Store) LeaderRepairStatusOf(ctx context.Context, req *pb.RepairStatusRequest) (*pb.RepairStatusResponse, error) {
	if n := len(req.GetBlobIds()); n > MaxRepairStatusBlobs {
		return nil, fmt.Errorf("%w: blob_ids: %d blob ids, at most %d in one request", apierr.ErrInvalidArgument, n, MaxRepairStatusBlobs)
	}
	return s.cluster.Leader().RepairStatus(ctx, req)
}

// MaxRepairStatusBlobs bounds the blob ids of one RepairStatusRequest.
const MaxRepairStatusBlobs = 4096

// RepairStatus is the state of the leader's repair; with a blob id, it
// lists that blob's shards reported corrupt or lost and not yet
// rewritten.
func (s *Store) RepairStatus(blobID string) *pb.RepairStatusResponse {
	return s.repairStatus([]string{blobID})
}

// repairStatus is RepairStatus listing the corrupt or lost shards of the
// blobs ids names ("" names none).
func (s *Store) repairStatus(ids []string) *pb.RepairStatusResponse {
	r := s.repair
	r.mu.Lock()
	defer r.mu.Unlock()
	out := &pb.RepairStatusResponse{
		Leader: s.cluster.Self(), Queued: uint64(len(r.queue)), InProgress: uint64(r.inProgress),
		RebuiltShards: r.rebuilt, RebuiltBytes: r.rebuiltB, Failed: r.failures, LastError: r.lastErr,
		Waiting: uint64(r.waiting), WaitingForAgent: uint64(r.waitingForAgent), Retrying: uint64(len(r.retry)),
	}
	if !r.lastScan.IsZero() {
		out.LastScan = r.lastScan.UnixNano()
	}
	blobs := make(map[string]*pb.Blob, len(ids))
	meta := s.cluster.Meta()
	for _, id := range ids {
		if b := meta.BlobByID(id); b != nil {
			blobs[id] = b
		}
	}
	if len(blobs) == 0 {
		return out
	}
	for k, f := range r.corrupt {
		if b := blobs[k.blob]; b != nil && holderOf(b, k.block, k.index) == k.node {
			out.Corrupt = append(out.Corrupt, &pb.ShardRef{BlobId: k.blob, Block: k.block, Index: k.index, Node: k.node, Lost: f == faultLost})
		}
	}
	sort.Slice(out.Corrupt, func(i, j int) bool {
		a, b := out.Corrupt[i], out.Corrupt[j]
		return a.BlobId < b.BlobId || a.BlobId == b.BlobId && (a.Block < b.Block || a.Block == b.Block && a.Index < b.Index)
	})
	return out
}

// holderOf is the agent b's metadata names for shard (block, index), or ""
// when b is nil or has no such shard.
func holderOf(b *pb.Blob, block, index uint32) string {
	if b == nil || int(block) >= len(b.Blocks) {
		return ""
	}
	return b.Holder(b.Blocks[block], int(index))
}

// blobBlockSize is the block size of b's part files: its recorded block
// size, or for metadata without one its first block's length, which every
// block but the last has.
func blobBlockSize(b *pb.Blob) int {
	if b.BlockSize > 0 {
		return int(b.BlockSize)
	}
	if len(b.Blocks) > 0 {
		return int(b.Blocks[0].Len)
	}
	return 0
}
