package testcluster

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/raft"

	"github.com/zrpcio/zrpc/node"
	"github.com/zrpcio/zrpc/storage/shardstore"
)

// Faults beyond Kill, Partition and Heal: one-way packet loss and latency,
// a slow, failing or full Raft disk, a slow, failing or full shard disk,
// unreadable shards, leadership transfer and damaged shard files. Each is
// undone by its own call (Heal undoes partitions only; RestoreLinks undoes
// packet loss and latency).

// link is a direction between two agents.
type link struct{ from, to string }

// lostLocked reports whether every packet from -> to is lost.
func (nw *network) lostLocked(from, to string) bool {
	return nw.loss[link{from, to}] >= 1
}

// grouped reports whether from and to are in the same partition group.
func (nw *network) grouped(from, to string) bool {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	return nw.groupedLocked(from, to)
}

// packetPasses decides the fate of one gossip packet from -> to: it is
// dropped across a partition and, on a lossy link, at the link's loss rate.
func (nw *network) packetPasses(from, to string) bool {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	if !nw.groupedLocked(from, to) {
		return false
	}
	rate := nw.loss[link{from, to}]
	return rate <= 0 || rand.Float64() >= rate
}

// setLoss sets the loss rate of from -> to and closes the connections a full
// loss cuts.
func (nw *network) setLoss(from, to string, rate float64) {
	nw.mu.Lock()
	if nw.loss == nil {
		nw.loss = map[link]float64{}
	}
	if rate <= 0 {
		delete(nw.loss, link{from, to})
	} else {
		nw.loss[link{from, to}] = rate
	}
	nw.cutUnlinkedAndUnlock()
}

// restoreLinks ends every packet loss and delay (RestoreLinks).
func (nw *network) restoreLinks() {
	nw.mu.Lock()
	nw.loss, nw.delay = nil, nil
	nw.mu.Unlock()
}

// DropPackets makes gossip packets from agent from to agent to get lost at
// rate (0..1); the other direction is untouched. Rate 1 loses every packet
// of the direction, and then no connection (Raft, gRPC, gossip streams)
// between the two agents works either, as TCP needs both directions: only
// gossip's UDP probes see the asymmetry, and indirect probes through a third
// agent still reach. A lower rate leaves connections alone (TCP
// retransmits).
func (c *Cluster) DropPackets(from, to int, rate float64) {
	c.t.Logf("testcluster: lose %.0f%% of packets %s -> %s", rate*100, c.Name(from), c.Name(to))
	c.net.setLoss(c.Name(from), c.Name(to), rate)
}

// Delay makes everything agent from sends to agent to arrive d later
// (zero: on time): gossip packets are delivered d after they are sent,
// and on connections (Raft, gRPC, gossip streams) each write from -> to,
// and each read of what to answered, waits d first. The other direction
// is untouched. Connections keep their order and stay open; a deadline
// that passes while a write or read waits fails it, as on a slow link.
func (c *Cluster) Delay(from, to int, d time.Duration) {
	c.t.Logf("testcluster: delay %s -> %s by %s", c.Name(from), c.Name(to), d)
	c.net.setDelay(c.Name(from), c.Name(to), d)
}

// RestoreLinks ends every packet loss set by DropPackets and every delay
// set by Delay.
func (c *Cluster) RestoreLinks() {
	c.t.Logf("testcluster: restore links")
	c.net.restoreLinks()
}

// setDelay sets the latency of from -> to.
func (nw *network) setDelay(from, to string, d time.Duration) {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	if nw.delay == nil {
		nw.delay = map[link]time.Duration{}
	}
	if d <= 0 {
		delete(nw.delay, link{from, to})
	} else {
		nw.delay[link{from, to}] = d
	}
}

// delayOf is the latency of from -> to.
func (nw *network) delayOf(from, to string) time.Duration {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	return nw.delay[link{from, to}]
}

// wait sleeps d, or until deadline (then os.ErrDeadlineExceeded).
func (nw *network) wait(d time.Duration, deadline time.Time) error {
	if d <= 0 {
		return nil
	}
	if !deadline.IsZero() && time.Until(deadline) < d {
		time.Sleep(time.Until(deadline))
		return os.ErrDeadlineExceeded
	}
	time.Sleep(d)
	return nil
}

// TransferLeadership asks the leader to hand leadership to another voter and
// waits for the handover to finish or fail.
func (c *Cluster) TransferLeadership() error {
	l := c.Leader()
	if l == nil {
		return fmt.Errorf("testcluster: transfer leadership: no leader")
	}
	c.t.Logf("testcluster: transfer leadership away from %s", l.Name())
	return l.Store().TransferLeadership(context.Background())
}

// Leave makes agent i leave the cluster for good (node.Node.Leave with
// opts) and empties its slot; it reports whether the leader confirmed the
// removal and what became of the agent's blob shards. A leave refused or
// called off leaves the agent running.
func (c *Cluster) Leave(ctx context.Context, i int, opts node.LeaveOptions) (node.LeaveResult, error) {
	n := c.Node(i)
	if n == nil {
		return node.LeaveResult{}, fmt.Errorf("testcluster: leave: %s is not running", c.Name(i))
	}
	c.t.Logf("testcluster: %s leaves", c.Name(i))
	res, err := n.Leave(ctx, opts)
	if err != nil {
		return res, err
	}
	c.Stop(i)
	return res, nil
}

// SlowDisk delays every write of agent i's Raft log by d (zero: back to
// normal), as a disk with slow fsyncs would. It takes effect at once and
// survives restarts of the agent.
func (c *Cluster) SlowDisk(i int, d time.Duration) {
	c.t.Logf("testcluster: %s's Raft log writes take %s longer", c.Name(i), d)
	c.disk.set(c.Name(i), raftLog, d)
}

// FailDisk makes agent i's Raft log refuse every append and truncation
// with an I/O error while on is true, as a failing or full disk would.
// It takes effect at once and survives restarts of the agent. An agent
// that stops its Raft node over it (node.Node.RaftFailed) must be
// restarted, as its process would exit for its supervisor to restart it.
func (c *Cluster) FailDisk(i int, on bool) {
	c.t.Logf("testcluster: %s's Raft log refuses writes: %v", c.Name(i), on)
	c.disk.setFault(c.Name(i), raftFailing, on)
}

// FillRaftDisk makes agent i's Raft log refuse every append with ENOSPC
// while on is true, as a full disk would; truncations, which free space,
// still work. It takes effect at once and survives restarts of the agent.
func (c *Cluster) FillRaftDisk(i int, on bool) {
	c.t.Logf("testcluster: %s's Raft log disk is full: %v", c.Name(i), on)
	c.disk.setFault(c.Name(i), raftFull, on)
}

// SlowShardDisk delays every fsync of agent i's shard files (a put's
// shards, repair's rewrites) by d (zero: back to normal). It takes effect
// at once and survives restarts of the agent.
func (c *Cluster) SlowShardDisk(i int, d time.Duration) {
	c.t.Logf("testcluster: %s's shard fsyncs take %s longer", c.Name(i), d)
	c.disk.set(c.Name(i), shardFsync, d)
}

// FillShardDisk makes agent i's shard store answer every write and fsync
// of a shard file with ENOSPC while on is true, as a full disk would: a
// put's staged shards, its commit and repair's rewrites fail, stored
// shards stay readable. The free space the agent reports is left alone,
// as when the space goes between the check and the write. It takes
// effect at once and survives restarts of the agent.
func (c *Cluster) FillShardDisk(i int, on bool) {
	c.t.Logf("testcluster: %s's shard disk is full: %v", c.Name(i), on)
	c.disk.setFault(c.Name(i), shardsFull, on)
}

// FailShardDisk makes agent i's shard store answer every write and fsync
// of a shard file with EIO while on is true, as a failing disk would. It
// takes effect at once and survives restarts of the agent.
func (c *Cluster) FailShardDisk(i int, on bool) {
	c.t.Logf("testcluster: %s's shard disk fails writes: %v", c.Name(i), on)
	c.disk.setFault(c.Name(i), shardsFailing, on)
}

// UnreadableShards makes every read of the given shards (blob, block,
// index) on agent i fail with EIO, as bad sectors under them would, until
// it is called again for i with no ids. It takes effect at once and
// survives restarts of the agent.
func (c *Cluster) UnreadableShards(i int, ids ...shardstore.ID) {
	c.t.Logf("testcluster: %s cannot read shards %v", c.Name(i), ids)
	set := make(map[shardstore.ID]bool, len(ids))
	for _, id := range ids {
		set[id] = true
	}
	c.disk.mu.Lock()
	defer c.disk.mu.Unlock()
	if c.disk.unreadable == nil {
		c.disk.unreadable = map[string]map[shardstore.ID]bool{}
	}
	c.disk.unreadable[c.Name(i)] = set
}

// disk names what a slow-disk fault slows.
type disk int

const (
	raftLog    disk = iota // Raft log writes (SlowDisk)
	shardFsync             // shard file fsyncs (SlowShardDisk)
)

// diskFault names what a failing-disk fault does.
type diskFault int

const (
	raftFailing   diskFault = iota // the Raft log refuses appends and truncations (FailDisk)
	raftFull                       // the Raft log refuses appends with ENOSPC (FillRaftDisk)
	shardsFailing                  // shard writes fail with EIO (FailShardDisk)
	shardsFull                     // shard writes fail with ENOSPC (FillShardDisk)
)

type faultOf struct {
	agent string
	fault diskFault
}

// diskFaults holds, by agent name, SlowDisk's and SlowShardDisk's delays,
// the failing and full disks of FailDisk, FillRaftDisk, FailShardDisk and
// FillShardDisk, and UnreadableShards' shards.
type diskFaults struct {
	mu         sync.Mutex
	delay      map[diskOf]time.Duration
	faults     map[faultOf]bool
	unreadable map[string]map[shardstore.ID]bool
}

// errDiskFailed is what a failing disk (FailDisk) answers a write.
var errDiskFailed = errors.New("testcluster: input/output error (FailDisk)")

// setFault turns fault f of agent's disk on or off.
func (d *diskFaults) setFault(agent string, f diskFault, on bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.faults == nil {
		d.faults = map[faultOf]bool{}
	}
	d.faults[faultOf{agent, f}] = on
}

// has reports whether fault f of agent's disk is on.
func (d *diskFaults) has(agent string, f diskFault) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.faults[faultOf{agent, f}]
}

// shardWriteFault returns agent's shard write fault
// (node.WithShardWriteFault): EIO while FailShardDisk holds, ENOSPC while
// FillShardDisk does.
func (d *diskFaults) shardWriteFault(agent string) func() error {
	return func() error {
		switch {
		case d.has(agent, shardsFailing):
			return syscall.EIO
		case d.has(agent, shardsFull):
			return syscall.ENOSPC
		}
		return nil
	}
}

// shardReadFault returns agent's shard read fault
// (node.WithShardReadFault): EIO for UnreadableShards' shards.
func (d *diskFaults) shardReadFault(agent string) func(shardstore.ID) error {
	return func(id shardstore.ID) error {
		d.mu.Lock()
		defer d.mu.Unlock()
		if d.unreadable[agent][id] {
			return syscall.EIO
		}
		return nil
	}
}

type diskOf struct {
	agent string
	disk  disk
}

func (d *diskFaults) set(agent string, which disk, delay time.Duration) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.delay == nil {
		d.delay = map[diskOf]time.Duration{}
	}
	d.delay[diskOf{agent, which}] = delay
}

func (d *diskFaults) get(agent string, which disk) time.Duration {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.delay[diskOf{agent, which}]
}

// shardSyncDelay returns agent's shard fsync delay (node.WithShardSyncDelay).
func (d *diskFaults) shardSyncDelay(agent string) func() time.Duration {
	return func() time.Duration { return d.get(agent, shardFsync) }
}

// wrapLog returns agent's Raft log store wrapper.
func (d *diskFaults) wrapLog(agent string) func(raft.LogStore) raft.LogStore {
	return func(s raft.LogStore) raft.LogStore { return &slowLog{LogStore: s, agent: agent, disk: d} }
}

// slowLog delays appends to a Raft log store, or refuses them and
// truncations (FailDisk), or appends only (FillRaftDisk).
type slowLog struct {
	raft.LogStore
	agent string
	disk  *diskFaults
}

func (l *slowLog) StoreLog(log *raft.Log) error { return l.StoreLogs([]*raft.Log{log}) }

func (l *slowLog) StoreLogs(logs []*raft.Log) error {
	l.pause()
	if l.disk.has(l.agent, raftFailing) {
		return errDiskFailed
	}
	if l.disk.has(l.agent, raftFull) {
		return &os.PathError{Op: "write", Path: "raft log segment (FillRaftDisk)", Err: syscall.ENOSPC}
	}
	return l.LogStore.StoreLogs(logs)
}

func (l *slowLog) DeleteRange(min, max uint64) error {
	if l.disk.has(l.agent, raftFailing) {
		return errDiskFailed
	}
	return l.LogStore.DeleteRange(min, max)
}

func (l *slowLog) pause() {
	if d := l.disk.get(l.agent, raftLog); d > 0 {
		time.Sleep(d)
	}
}

// ShardDamage is what DamageShards does to a shard file.
type ShardDamage int

const (
	ShardDelete   ShardDamage = iota // remove the file
	ShardTruncate                    // cut it to a random shorter length
	ShardFlip                        // flip one bit of one byte
)

func (d ShardDamage) String() string {
	return [...]string{"delete", "truncate", "flip"}[d]
}

// ShardFiles lists the shard part files (one per blob per shard index
// the agent holds) in agent i's data dir (running or not), sorted.
func (c *Cluster) ShardFiles(i int) []string {
	var files []string
	root := filepath.Join(c.member(i).cfg.DataDir, "shards")
	filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(path, ".part") {
			files = append(files, path)
		}
		return nil
	})
	slices.Sort(files)
	return files
}

// DamageShards damages up to n of agent i's shard files, chosen with rng,
// the way how says, and returns the files it damaged. Damage on a running
// agent is what a failing disk does under it; the agent is expected to
// notice (checksums, the scrubber) and have the shards rebuilt.
func (c *Cluster) DamageShards(i int, rng *rand.Rand, n int, how ShardDamage) []string {
	c.t.Helper()
	files := c.ShardFiles(i)
	rng.Shuffle(len(files), func(a, b int) { files[a], files[b] = files[b], files[a] })
	files = files[:min(n, len(files))]
	for _, f := range files {
		if err := damageFile(f, rng, how); err != nil {
			c.t.Fatalf("testcluster: %s shard file %s: %v", how, f, err)
		}
	}
	c.t.Logf("testcluster: %s %d shard files of %s", how, len(files), c.Name(i))
	return files
}

func damageFile(path string, rng *rand.Rand, how ShardDamage) error {
	switch how {
	case ShardDelete:
		if err := os.Remove(path); err != nil && !os.IsNotExist(err) {
			return err
		}
		return nil
	case ShardTruncate:
		info, err := os.Stat(path)
		if err != nil {
			return ignoreGone(err)
		}
		return ignoreGone(os.Truncate(path, rng.Int64N(max(info.Size(), 1))))
	default:
		b, err := os.ReadFile(path)
		if err != nil || len(b) == 0 {
			return ignoreGone(err)
		}
		b[rng.IntN(len(b))] ^= 1 << rng.IntN(8)
		return ignoreGone(os.WriteFile(path, b, 0o600))
	}
}

// ignoreGone treats a file that vanished (deleted by its agent meanwhile)
// as nothing to damage.
func ignoreGone(err error) error {
	if os.IsNotExist(err) {
		return nil
	}
	return err
}
