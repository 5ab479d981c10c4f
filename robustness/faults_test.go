package robustness

import (
	"context"
	"math/rand/v2"
	"time"

	"github.com/zrpcio/zrpc/node"
	"github.com/zrpcio/zrpc/storage/shardstore"
	"github.com/zrpcio/zrpc/testcluster"
)

// The fault schedule: one fault at a time, chosen, aimed and timed by the
// run's seed, with a short quiet spell between faults.

type fault struct {
	key    string // for ROBUSTNESS_SKIP
	name   string
	weight int
	inject func(r *run)
}

var faults = []fault{
	{"kill", "kill and restart an agent", 3, (*run).killRestart},
	{"kill-leader", "kill and restart the leader", 2, (*run).killLeader},
	{"partition", "partition one agent away", 3, (*run).partitionOne},
	{"split", "split the cluster", 1, (*run).partitionSplit},
	{"packet-loss", "one-way packet loss", 2, (*run).oneWayLoss},
	{"slow-disk", "slow Raft disk", 2, (*run).slowDisk},
	{"transfer", "leadership transfer", 2, (*run).transferLeader},
	{"join-leave", "agent joins or leaves", 1, (*run).joinOrLeave},
	{"damage-shards", "damage shard files", 2, (*run).damageShards},
}

// Faults added to the schedule after seeds were recorded draw from their
// own random source (run.extra), so that the faults above stay where an
// older seed put them: at its slot, one of these may come first.
var (
	// reapFault takes one slot of a quarter of the runs, which run with a
	// dead_node_reap of reapFaultReap instead of deadNodeReap.
	reapFault = fault{"reap", "partition an agent until it is reaped", 0, (*run).reapOne}
	// slowShardDiskFault comes before the slot's fault with odds 1 in
	// slowShardDiskOdds.
	slowShardDiskFault = fault{"slow-shard-disk", "slow shard disk", 0, (*run).slowShardDisk}
	// wipeFault comes before the slot's fault with odds 1 in wipeOdds,
	// drawn from run.wipes.
	wipeFault = fault{"wipe", "replace an agent's disk", 0, (*run).wipeOne}
	// latencyFault comes before the slot's fault with odds 1 in
	// latencyOdds, drawn from run.latency.
	latencyFault = fault{"latency", "slow links to and from one agent", 0, (*run).slowLinks}
	// diskFailFault comes before the slot's fault with odds 1 in
	// diskFailOdds, drawn from run.diskFail.
	diskFailFault = fault{"disk-fail", "an agent's Raft log refuses writes", 0, (*run).failRaftDisk}
	// shardFullFault comes before the slot's fault with odds 1 in
	// shardFullOdds, drawn from run.shardFull.
	shardFullFault = fault{"shard-disk-full", "an agent's shard disk is full", 0, (*run).fillShardDisk}
	// flapFault comes before the slot's fault with odds 1 in flapOdds,
	// drawn from run.flap.
	flapFault = fault{"flap", "links to one agent flap", 0, (*run).flapLinks}
	// badSectorsFault comes before the slot's fault with odds 1 in
	// badSectorsOdds, drawn from run.sectors.
	badSectorsFault = fault{"bad-sectors", "shards an agent's disk cannot read", 0, (*run).badSectors}
)

const (
	slowShardDiskOdds = 6
	wipeOdds          = 8
	latencyOdds       = 5
	diskFailOdds      = 6
	shardFullOdds     = 6
	flapOdds          = 5
	badSectorsOdds    = 6
)

// injectFaults runs the schedule. A fault named in ROBUSTNESS_SKIP keeps
// its place in the schedule (so the other faults stay where the seed puts
// them) but is not injected.
func (r *run) injectFaults() {
	total := 0
	for _, f := range faults {
		total += f.weight
	}
	for n := 0; time.Since(r.start) < faultsFor; n++ {
		time.Sleep(300*time.Millisecond + r.randDuration(500*time.Millisecond))
		if f, ok := r.laterFault(n); ok {
			r.inject(n, f)
			if time.Since(r.start) >= faultsFor {
				break
			}
			time.Sleep(300*time.Millisecond + time.Duration(r.extra.Int64N(int64(500*time.Millisecond))))
		}
		x := r.rng.IntN(total)
		for _, f := range faults {
			if x -= f.weight; x >= 0 {
				continue
			}
			r.inject(n, f)
			break
		}
	}
}

// laterFault returns the fault added later that comes first in slot n, if
// any.
func (r *run) laterFault(n int) (fault, bool) {
	wipe := r.wipes.IntN(wipeOdds) == 0 // drawn in every slot, whatever comes first
	slow := r.latency.IntN(latencyOdds) == 0
	failDisk := r.diskFail.IntN(diskFailOdds) == 0
	shardFull := r.shardFull.IntN(shardFullOdds) == 0
	flap := r.flap.IntN(flapOdds) == 0
	sectors := r.sectors.IntN(badSectorsOdds) == 0
	switch {
	case n == r.reapSlot:
		return reapFault, true
	case r.extra.IntN(slowShardDiskOdds) == 0:
		return slowShardDiskFault, true
	case wipe:
		return wipeFault, true
	case slow:
		return latencyFault, true
	case failDisk:
		return diskFailFault, true
	case shardFull:
		return shardFullFault, true
	case flap:
		return flapFault, true
	case sectors:
		return badSectorsFault, true
	}
	return fault{}, false
}

// inject injects fault f in slot n, unless ROBUSTNESS_SKIP names it.
func (r *run) inject(n int, f fault) {
	if skipped(f.key) {
		r.t.Logf("robustness: fault %d at %s: %s skipped (ROBUSTNESS_SKIP)", n, time.Since(r.start).Round(time.Millisecond), f.name)
		return
	}
	r.t.Logf("robustness: fault %d at %s: %s", n, time.Since(r.start).Round(time.Millisecond), f.name)
	f.inject(r)
}

func (r *run) randDuration(d time.Duration) time.Duration {
	return time.Duration(r.rng.Int64N(int64(d)))
}

// hold keeps a fault for lo + up to spread, never more than maxHold.
func (r *run) hold(lo, spread time.Duration) { time.Sleep(min(lo+r.randDuration(spread), maxHold)) }

// leaderOr returns the leader, or a random core agent when there is none
// (or when the coin says so and leaderFirst is false). It draws the same
// random numbers whatever the cluster's state, so that the rest of the
// schedule does not depend on who leads.
func (r *run) leaderOr(leaderFirst bool) int {
	coin, random := r.rng.IntN(2), r.rng.IntN(r.core)
	l := r.c.LeaderIndex()
	if l < 0 || l >= r.core || (!leaderFirst && coin == 0) {
		return random
	}
	return l
}

func (r *run) killRestart() {
	a := r.rng.IntN(r.core)
	r.t.Logf("robustness: kill %s", r.c.Name(a))
	r.kill(a)
	r.hold(500*time.Millisecond, 2500*time.Millisecond)
	r.restart(a)
}

func (r *run) killLeader() {
	a := r.leaderOr(true)
	r.t.Logf("robustness: kill %s", r.c.Name(a))
	r.kill(a)
	r.hold(500*time.Millisecond, 2*time.Second)
	r.restart(a)
}

// others lists the running agents other than the given ones.
func (r *run) others(not ...int) []int {
	var out []int
	for _, i := range r.running() {
		skip := false
		for _, n := range not {
			skip = skip || i == n
		}
		if !skip {
			out = append(out, i)
		}
	}
	return out
}

// partitionOne cuts one agent (the leader half of the time) off for longer
// than failure detection takes, then heals.
func (r *run) partitionOne() {
	a := r.leaderOr(false)
	r.partition([]int{a}, r.others(a))
	r.hold(2*time.Second, 3*time.Second)
	r.c.Heal()
}

// partition splits the agents into groups, half of the time silently (a
// pulled cable: connections hang rather than fail, held bytes flow again
// at the heal), drawn from a random source of its own, added after seeds
// were recorded.
func (r *run) partition(groups ...[]int) {
	if r.silent.IntN(2) == 0 && !skipped("silent") {
		r.c.PartitionSilently(groups...)
		return
	}
	r.c.Partition(groups...)
}

// partitionSplit cuts the cluster in two: a minority (with the leader half
// of the time) and a majority.
func (r *run) partitionSplit() {
	running := r.running()
	r.rng.Shuffle(len(running), func(a, b int) { running[a], running[b] = running[b], running[a] })
	minority := running[:len(running)/2]
	r.partition(minority, running[len(running)/2:])
	r.hold(2*time.Second, 3*time.Second)
	r.c.Heal()
}

// oneWayLoss loses the packets of one direction between two agents: all of
// them (then connections between the two fail too) or half.
func (r *run) oneWayLoss() {
	a := r.leaderOr(false)
	others := r.others(a)
	if len(others) == 0 {
		return
	}
	b := others[r.rng.IntN(len(others))]
	from, to := a, b
	if r.rng.IntN(2) == 0 {
		from, to = b, a
	}
	rate := 1.0
	if r.rng.IntN(3) == 0 {
		rate = 0.5
	}
	r.c.DropPackets(from, to, rate)
	r.hold(2*time.Second, 3*time.Second)
	r.c.RestoreLinks()
}

// slowDisk delays the Raft log writes of one agent (the leader half of the
// time) by 20-200 ms each.
func (r *run) slowDisk() {
	a := r.leaderOr(false)
	r.c.SlowDisk(a, 20*time.Millisecond+r.randDuration(180*time.Millisecond))
	r.hold(time.Second, 3*time.Second)
	r.c.SlowDisk(a, 0)
}

// slowShardDisk delays every shard fsync of one agent (puts' staged shards,
// repair's rewrites) by 20-200 ms, for 1-4 s.
func (r *run) slowShardDisk() {
	a := r.extra.IntN(r.core)
	r.c.SlowShardDisk(a, 20*time.Millisecond+time.Duration(r.extra.Int64N(int64(180*time.Millisecond))))
	time.Sleep(time.Second + time.Duration(r.extra.Int64N(int64(3*time.Second))))
	r.c.SlowShardDisk(a, 0)
}

// leaderHalf draws a core agent from rng, the faults added later's own
// source: the leader half of the time (when there is one), a random core
// agent otherwise. It draws the same numbers whatever the cluster's state.
// (leaderOr does the same from the schedule's source, in its own order.)
func (r *run) leaderHalf(rng *rand.Rand) int {
	a, leader := rng.IntN(r.core), rng.IntN(2) == 0
	if l := r.c.LeaderIndex(); leader && l >= 0 && l < r.core {
		a = l
	}
	return a
}

// slowLinks delays everything one core agent (the leader half of the
// time) sends and receives by 20-150 ms, for 1-4 s: a congested or
// distant link, slower than the test's Raft heartbeat timeout allows at
// its upper end, that drops nothing.
func (r *run) slowLinks() {
	a := r.leaderHalf(r.latency)
	d := (20*time.Millisecond + time.Duration(r.latency.Int64N(int64(130*time.Millisecond)))).Round(time.Millisecond)
	for _, b := range r.others(a) {
		r.c.Delay(a, b, d)
		r.c.Delay(b, a, d)
	}
	time.Sleep(time.Second + time.Duration(r.latency.Int64N(int64(3*time.Second))))
	r.c.RestoreLinks()
}

// flapLinks cuts one core agent (the leader half of the time) off and
// lets it back, again and again for 2-4 s, each cut and each spell
// between cuts 50-400 ms: a flaky cable or switch port. No cut lasts as
// long as failure detection, but gossip probes fail, Raft heartbeats and
// appends miss, and connections break, over and over. Half of the runs
// cut silently (connections hang rather than fail).
func (r *run) flapLinks() {
	a := r.leaderHalf(r.flap)
	silent := r.flap.IntN(2) == 0 && !skipped("silent")
	spell := func() time.Duration {
		return 50*time.Millisecond + time.Duration(r.flap.Int64N(int64(350*time.Millisecond)))
	}
	end := time.Now().Add(2*time.Second + time.Duration(r.flap.Int64N(int64(2*time.Second))))
	for time.Now().Before(end) {
		if silent {
			r.c.PartitionSilently([]int{a}, r.others(a))
		} else {
			r.c.Partition([]int{a}, r.others(a))
		}
		time.Sleep(spell())
		r.c.Heal()
		time.Sleep(spell())
	}
}

// badSectors makes 1-8 of the shards held by the agent whose shard files
// are damaged during the run (chosen here if none was yet: blobs survive
// one agent's losses) unreadable for 1-4 s: every read of them fails
// with EIO, as over bad sectors. Reads go to parity, the agent reports
// the shards as corrupt and repair rewrites them in place (which the
// fault outlives: they keep failing until it ends). Half of the time the
// disk fails every shard write too (a dying disk): puts that need the
// agent fail, and repair moves the shards it cannot rewrite there to
// another agent that can take them.
func (r *run) badSectors() {
	a := r.damagedAgent(r.sectors)
	n, want := r.c.Node(a), 1+r.sectors.IntN(8)
	hold := time.Second + time.Duration(r.sectors.Int64N(int64(3*time.Second)))
	failWrites := r.sectors.IntN(2) == 0
	if n == nil {
		return
	}
	var held []shardstore.ID
	n.Blobs().Shards().Walk(func(id shardstore.ID, _ int64, _ time.Time) error {
		held = append(held, id)
		return nil
	})
	r.sectors.Shuffle(len(held), func(i, j int) { held[i], held[j] = held[j], held[i] })
	r.c.UnreadableShards(a, held[:min(want, len(held))]...)
	if failWrites {
		r.c.FailShardDisk(a, true)
	}
	time.Sleep(hold)
	r.c.UnreadableShards(a)
	r.c.FailShardDisk(a, false)
}

// failRaftDisk makes one core agent's Raft log (the leader's half of the
// time) refuse every write for 0.5-2 s: every append and truncation (an
// I/O error), or, half of the time (a coin from run.fullLog, added
// later), appends only, with ENOSPC, as a full disk does while
// truncations still free space. Raft refuses the entries (a leader steps
// down) and the agent catches up once its disk takes writes again;
// should it stop its Raft node (an append refused right after a
// truncation), it is killed then, as zrpcd agent exits for its
// supervisor, and restarted once its disk is back.
func (r *run) failRaftDisk() {
	a := r.leaderHalf(r.diskFail)
	hold := 500*time.Millisecond + time.Duration(r.diskFail.Int64N(int64(1500*time.Millisecond)))
	n := r.c.Node(a)
	if n == nil {
		return
	}
	end := time.Now().Add(hold)
	fail := r.c.FailDisk
	if r.fullLog.IntN(2) == 0 {
		fail = r.c.FillRaftDisk
	}
	fail(a, true)
	stopped := false
	select {
	case <-n.RaftFailed():
		stopped = true
		r.t.Logf("robustness: %s stopped its Raft node (%s); it exits", r.c.Name(a), n.RaftFailure())
		r.kill(a)
		time.Sleep(time.Until(end))
	case <-time.After(hold):
	}
	fail(a, false)
	if stopped {
		r.restart(a)
	}
}

// fillShardDisk fills the shard disk of the agent whose shard files are
// damaged during the run (chosen here if none was yet: blobs survive one
// agent's losses, and a put acknowledged while its disk is full lacks
// that agent's shards) for 1-4 s: its shard writes fail with ENOSPC while
// the room it announces still says there is some. Puts that need its
// shards fail, saying so; others are acknowledged without them, and
// repair stores them once the disk has room again.
func (r *run) fillShardDisk() {
	a := r.damagedAgent(r.shardFull)
	r.c.FillShardDisk(a, true)
	time.Sleep(time.Second + time.Duration(r.shardFull.Int64N(int64(3*time.Second))))
	r.c.FillShardDisk(a, false)
}

// wipeOne kills an agent and starts it again under its name and
// addresses with an empty data dir, as after a disk replacement: its Raft
// log, its replica and its shards are gone. The agent is the one whose
// shard files are damaged during the run (chosen here if none was yet):
// blobs survive one agent's losses, not two.
func (r *run) wipeOne() {
	a := r.damagedAgent(r.wipes)
	r.mu.Lock()
	r.incarnations[a]++
	r.mu.Unlock()
	r.t.Logf("robustness: wipe %s", r.c.Name(a))
	r.c.Kill(a)
	time.Sleep(200*time.Millisecond + time.Duration(r.wipes.Int64N(int64(time.Second))))
	r.mu.Lock()
	r.incarnations[a]++
	r.mu.Unlock()
	r.c.RestartWiped(a)
}

func (r *run) transferLeader() {
	if err := r.c.TransferLeadership(); err != nil {
		r.t.Logf("robustness: leadership transfer: %v", err)
	}
}

// joinOrLeave adds an agent when none has been added, else makes the added
// one leave for good. Added agents carry no registry writes.
func (r *run) joinOrLeave() {
	r.mu.Lock()
	joined := r.joined
	r.mu.Unlock()
	if len(joined) == 0 {
		i := r.c.Add(clusterOptions(r.reap)...)
		r.mu.Lock()
		r.joined = append(r.joined, i)
		r.mu.Unlock()
		return
	}
	i := joined[0]
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// Leaving may take shards no agent can take (blobs put while the
	// added agent ran, on every agent): the suite checks that repair
	// counts them as waiting for an agent.
	res, err := r.c.Leave(ctx, i, node.LeaveOptions{AllowDegraded: true})
	r.t.Logf("robustness: %s left: removal confirmed %v, blob shards handed off %d, left %d, err %v",
		r.c.Name(i), res.Removed, res.HandedOff, res.ShardsLeft, err)
	if err != nil {
		r.c.Stop(i)
	}
	r.mu.Lock()
	r.joined = r.joined[1:]
	r.left = append(r.left, i)
	r.mu.Unlock()
}

// damageShards deletes, truncates or flips shard files of one agent; a run
// damages only one agent, so that every block keeps enough shards.
func (r *run) damageShards() {
	a := r.damagedAgent(r.rng)
	how := testcluster.ShardDamage(r.rng.IntN(3))
	r.c.DamageShards(a, r.rng, 1+r.rng.IntN(4), how)
}

// damagedAgent returns the core agent whose shards the run damages (a
// blob survives one agent's losses, not two), drawing it from rng when
// no fault has chosen it yet.
func (r *run) damagedAgent(rng *rand.Rand) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.damaged < 0 {
		r.damaged = rng.IntN(r.core)
	}
	return r.damaged
}
