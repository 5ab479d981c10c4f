package client

import (
	"errors"
	"slices"
	"time"
)

// A striped read's holders that lag: a holder stopped (SIGSTOP, a paused
// VM) or cut off by a network that drops its packets keeps its stream
// open, neither failing nor sending. The read gives up on it once the
// block it waits for has every other shard it asked for, and reads parity
// from the others in its place (stripeget.go reads the shards).

// holderLag is how long a holder may keep the block the read waits for
// waiting, silent, once every other shard of that block asked for has
// arrived, before the read gives up on it and reads parity from the other
// agents instead (when they have enough). A stopped agent (SIGSTOP, a
// paused VM), or one whose connection still answers pings but no longer
// moves, would otherwise hold the read for shardStall, or until the
// connection's keepalive gives up on it. A healthy holder sends a shard
// in milliseconds; giving up on one that is only slow costs the read a
// decode per block, not its bytes. A variable for tests.
var holderLag = time.Second

// errHolderLagged ends the streams of a holder the read gave up on.
var errHolderLagged = errors.New("sent no shard while the other holders sent theirs")

// touch records that agent node's streams moved.
func (g *stripedGet) touch(node int) {
	g.mu.Lock()
	g.moving[node] = time.Now()
	g.mu.Unlock()
}

// await waits until block i (sb) is ready, looking every quarter of
// holderLag for holders that keep it waiting. It returns false when the
// read ends first.
func (g *stripedGet) await(i int, sb *readBlockState) bool {
	select {
	case <-sb.ready:
		return true
	default:
	}
	tick := time.NewTicker(holderLag / 4)
	defer tick.Stop()
	for {
		select {
		case <-sb.ready:
			return true
		case <-g.ctx.Done():
			return false
		case now := <-tick.C:
			g.mu.Lock()
			g.giveUpOnLaggards(i, now)
			g.mu.Unlock()
		}
	}
}

// giveUpOnLaggards ends the streams of the holders that keep block i
// waiting, when every other shard of it asked for has arrived (or failed)
// and they have not moved for holderLag since, and only when the agents
// not given up on can still give the block k shards: agentFailed then
// asks them for parity in place of the laggards' shards. Holders the
// read can only wait for keep the stall bound. g.mu is held.
func (g *stripedGet) giveUpOnLaggards(i int, now time.Time) {
	sb := g.block(i)
	if sb.done {
		return
	}
	var lagging []int // by index in blob.Nodes
	for idx := range sb.asked {
		if !sb.inFlight(idx) {
			continue
		}
		node := int(g.blob.Blocks[i].Holders[idx]) - 1
		if g.nodeCtx[node].Err() != nil || now.Sub(sb.arrived) < holderLag || now.Sub(g.moving[node]) < holderLag {
			return // given up on already, a shard on its way, or the others' arrived just now
		}
		if !slices.Contains(lagging, node) {
			lagging = append(lagging, node)
		}
	}
	if len(lagging) == 0 {
		return
	}
	others := sb.have
	for idx := range sb.asked {
		if node := g.holder(i, idx); node >= 0 && !sb.asked[idx] && !slices.Contains(lagging, node) {
			others++
		}
	}
	if others < g.k {
		return
	}
	for _, node := range lagging {
		g.c.log.Info("blob read: an agent holding shards sent none while the others sent theirs; reading parity from the others instead",
			"blob", g.blob.Name, "agent", g.blob.Nodes[node], "block", i, "silent", now.Sub(g.moving[node]).Round(time.Millisecond))
		g.nodeCancel[node](errHolderLagged)
	}
}
