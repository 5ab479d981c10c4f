package raftstore

import (
	"encoding/binary"
	"hash/crc32"
	"sort"
)

// Every replica keeps an apply hash: a running hash of the command
// entries its state machine applied, each folded in with its index
// (h = H(h, index, data)), from the cluster's first entry. Two
// replicas that applied the same history have the same hash at every
// revision; one that applied an entry no leader committed, or missed one,
// has another from that revision on, whatever later writes do to the
// registry. The Raft leader compares its peers' hashes with its own
// (node divergence.go): a registry that diverged is told, not left to be
// found by chance.
//
// Entries raft never hands to the state machine (a new leader's no-op, a
// barrier) and configuration entries do not change the hash: the
// revision moving over them (applied.go) leaves it as it was. A snapshot
// records the hash at its revision and a replica restored from it goes
// on from there; one restored from a snapshot written before apply hashes
// existed does not know its hash (nor then do the snapshots it takes):
// it answers none until it installs a snapshot from a replica that does,
// or applies an ApplyHashRestart. The Raft leader proposes one when it or
// a peer knows no hash (node divergence.go): every replica then restarts
// its hash at that entry's index, at a value the index alone fixes, and
// all agree from there.
//
// The hash is CRC-32C, which the CPU computes (BenchmarkApplyHash: about
// 30 ns for a registration's entry, under 1 % of its apply). It is meant
// to notice replicas that applied different entries by bad luck or a
// bug, not to resist a forger, who would have to write the Raft log
// anyway; two histories that differ go unnoticed with a chance of one in
// 2^32.

// applyHashRing is how many (revision, hash) pairs a replica remembers:
// the hashes of its last that many commands. A power of two.
const applyHashRing = 4096

var applyHashTable = crc32.MakeTable(crc32.Castagnoli)

// hashAt is the apply hash after the command at rev.
type hashAt struct{ rev, sum uint64 }

// applyHash is a replica's apply hash and the hashes of its last
// commands. The FSM guards it with its mu.
type applyHash struct {
	sum   uint64
	known bool
	// ring holds the last n pairs in revision order, as a circle that
	// ends before next; it is allocated with the first pair.
	ring    []hashAt
	n, next int
	// restarted is the revision of the last ApplyHashRestart applied
	// since the chain started (0: none).
	restarted uint64
}

// start begins the chain at rev with sum (known) or as unknown.
func (a *applyHash) start(rev, sum uint64, known bool) {
	a.sum, a.known, a.n, a.next, a.restarted = sum, known, 0, 0, 0
	if known {
		a.record(rev, sum)
	}
}

// add folds the command entry at index with its data into the hash.
func (a *applyHash) add(index uint64, data []byte) {
	if !a.known {
		return
	}
	// The index goes into the CRC's initial value: one call, over the
	// entry's bytes alone, keeps the hardware's pace.
	seed := uint32(a.sum) ^ uint32(index) ^ uint32(index>>32)*0x9e3779b9
	a.sum = uint64(crc32.Update(seed, applyHashTable, data))
	a.record(index, a.sum)
}

// restart begins the chain again after the ApplyHashRestart at rev, at a
// value rev alone fixes, the same on every replica: known from there
// whether it was known before or not. A chain that was known keeps the
// hashes it recorded before rev.
func (a *applyHash) restart(rev uint64) {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], rev)
	a.sum, a.known, a.restarted = uint64(crc32.Checksum(b[:], applyHashTable)), true, rev
	a.record(rev, a.sum)
}

// record remembers sum as the hash at rev, the newest revision recorded
// (one recorded again is replaced). A rev before the newest (an entry
// applied again) leaves the hashes recorded after it meaningless: they
// are forgotten.
func (a *applyHash) record(rev, sum uint64) {
	if a.ring == nil {
		a.ring = make([]hashAt, applyHashRing)
	}
	if a.n > 0 {
		last := &a.ring[(a.next-1)&(applyHashRing-1)]
		switch {
		case last.rev == rev:
			last.sum = sum
			return
		case last.rev > rev:
			a.n = 0
		}
	}
	a.ring[a.next] = hashAt{rev, sum}
	a.next = (a.next + 1) & (applyHashRing - 1)
	a.n = min(a.n+1, applyHashRing)
}

// at returns the hash at rev of a replica at revision applied: that of
// the last command at or before rev. ok is false when the replica has not
// applied rev yet, rev is older than the commands it remembers, or it
// does not know its hash.
func (a *applyHash) at(rev, applied uint64) (sum uint64, ok bool) {
	if !a.known || a.n == 0 || rev > applied {
		return 0, false
	}
	oldest := a.next - a.n
	pair := func(i int) hashAt { return a.ring[(oldest+i)&(applyHashRing-1)] }
	// The first pair past rev; the one before it is the hash at rev.
	i := sort.Search(a.n, func(i int) bool { return pair(i).rev > rev })
	if i == 0 {
		return 0, false
	}
	return pair(i - 1).sum, true
}

// ApplyHash returns the replica's apply hash at revision rev (see
// applyhash.go); ok is false when it cannot tell: rev is past the
// replica's revision or before the last 4096 commands it applied, or the
// replica was restored from a snapshot that carried no apply hash.
func (f *FSM) ApplyHash(rev uint64) (sum uint64, ok bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.hash.at(rev, f.revision)
}

// ApplyHashChainKnown reports whether the replica knows its apply hash:
// false once restored from a snapshot that carried none, until it applies
// an ApplyHashRestart or installs a snapshot that carries one.
func (f *FSM) ApplyHashChainKnown() bool {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.hash.known
}

// ApplyHashRestartedAt is the revision of the last ApplyHashRestart the
// replica applied since it started or installed a snapshot (0: none).
func (f *FSM) ApplyHashRestartedAt() uint64 {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.hash.restarted
}
