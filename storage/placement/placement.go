// Package placement decides which agents hold the shards of a block, by
// rendezvous (highest random weight) hashing: every node gets a score from
// a hash of the key and its id, and the best scores win. Every agent
// computes the same order from the same member list, with no coordination,
// and a node joining or leaving moves only the keys it wins or held.
//
// The hash is FNV-1a 64 followed by the MurmurHash3 64-bit finaliser. It is
// part of the storage format: changing it moves every shard, so the golden
// test pins it.
//
// The package is pure functions over a node list. It does not know who is
// alive (the caller passes the live members), does not move data, and does
// not remember earlier placements.
package placement

import (
	"cmp"
	"slices"
)

// Node is a candidate holder: an agent's id and, optionally, its zone.
type Node struct {
	ID   string
	Zone string // "" is a zone like any other
}

// score is the rendezvous weight of node id for key.
func score(key, id string) uint64 {
	const (
		offset = 14695981039346656037
		prime  = 1099511628211
	)
	h := uint64(offset)
	for i := range len(key) {
		h = (h ^ uint64(key[i])) * prime
	}
	// A separator byte, so that ("ab", "c") and ("a", "bc") differ.
	h = (h ^ 0xff) * prime
	for i := range len(id) {
		h = (h ^ uint64(id[i])) * prime
	}
	// FNV alone mixes its last bytes poorly; ids often differ only there.
	h ^= h >> 33
	h *= 0xff51afd7ed558ccd
	h ^= h >> 33
	h *= 0xc4ceb9fe1a85ec53
	h ^= h >> 33
	return h
}

type ranked struct {
	node  Node
	score uint64
}

// Rank returns nodes ordered by rendezvous score for key, best first; equal
// scores are ordered by ID. The result is a new slice; nodes is not
// modified. Every process computes the same order.
func Rank(key string, nodes []Node) []Node {
	rs := rank(key, nodes)
	out := make([]Node, len(rs))
	for i, r := range rs {
		out[i] = r.node
	}
	return out
}

func rank(key string, nodes []Node) []ranked {
	rs := make([]ranked, len(nodes))
	for i, n := range nodes {
		rs[i] = ranked{node: n, score: score(key, n.ID)}
	}
	slices.SortFunc(rs, func(a, b ranked) int {
		return cmp.Or(cmp.Compare(b.score, a.score), cmp.Compare(a.node.ID, b.node.ID), cmp.Compare(a.node.Zone, b.node.Zone))
	})
	return rs
}

// Place picks n nodes with distinct IDs for key, in rendezvous order, at
// most maxPerZone of them from one zone (maxPerZone < 1: no limit). When
// the zones cannot hold n nodes at that limit, the limit is raised one
// step at a time until they can, so the nodes stay as evenly spread over
// the zones as possible, rather than returning fewer. Fewer than n nodes
// come back only when there are fewer than n distinct IDs. The result is
// in rendezvous order, best first.
//
// Removing or adding a node that Place did not pick for a key does not
// change that key's placement.
func Place(key string, nodes []Node, n, maxPerZone int) []Node {
	if n <= 0 {
		return nil
	}
	rs := rank(key, nodes)
	// Drop repeated IDs, keeping each one's first (best) entry.
	seen := make(map[string]bool, len(rs))
	rs = slices.DeleteFunc(rs, func(r ranked) bool {
		dup := seen[r.node.ID]
		seen[r.node.ID] = true
		return dup
	})
	if maxPerZone < 1 {
		maxPerZone = len(rs)
	}
	picked := make([]bool, len(rs))
	perZone := make(map[string]int)
	count := 0
	for limit := maxPerZone; count < n && count < len(rs); limit++ {
		for i, r := range rs {
			if count == n {
				break
			}
			if picked[i] || perZone[r.node.Zone] >= limit {
				continue
			}
			picked[i] = true
			perZone[r.node.Zone]++
			count++
		}
	}
	out := make([]Node, 0, count)
	for i, r := range rs {
		if picked[i] {
			out = append(out, r.node)
		}
	}
	return out
}

// DefaultScheme is the k+m erasure code for a blob stored on a cluster of
// clusterSize agents: 1 → 1+0, 2 → 1+1, 3-4 → 2+1, 5 → 3+2, 6 or more →
// 4+2. Below 1 it is 1+0.
func DefaultScheme(clusterSize int) (k, m int) {
	switch {
	case clusterSize <= 1:
		return 1, 0
	case clusterSize == 2:
		return 1, 1
	case clusterSize <= 4:
		return 2, 1
	case clusterSize == 5:
		return 3, 2
	default:
		return 4, 2
	}
}
