package balancer

import (
	"cmp"
	"math/rand/v2"
	"slices"
	"strconv"

	"google.golang.org/grpc/balancer"
	"google.golang.org/grpc/balancer/base"
)

// virtualNodes is the number of points each endpoint has on the ring.
const virtualNodes = 160

// consistentHashPickerBuilder builds [ConsistentHash] pickers.
//
// Each endpoint has 160 points on a ring of 64-bit hashes, at
// hash64(addr + "#" + i) for i in [0, 160). A call's key hashes to a point
// and goes to the endpoint owning the first point at or after it (wrapping
// around). Adding or removing one of n endpoints moves only the keys between
// its points and their predecessors, about 1/n of them, and every moved key
// moves to (or from) that endpoint. The hash is stable across processes and
// versions, so all clients agree.
type consistentHashPickerBuilder struct{}

func (consistentHashPickerBuilder) Build(info base.PickerBuildInfo) balancer.Picker {
	eps := readyEndpoints(info)
	if len(eps) == 0 {
		return errPickerNoSubConn
	}
	ring := make([]ringPoint, 0, len(eps)*virtualNodes)
	var buf []byte
	for i, ep := range eps {
		for v := range virtualNodes {
			buf = strconv.AppendInt(append(append(buf[:0], ep.addr...), '#'), int64(v), 10)
			ring = append(ring, ringPoint{hash: hash64(string(buf)), endpoint: int32(i)})
		}
	}
	// Ties (vanishingly rare) are broken by address order, which is
	// deterministic because eps is sorted.
	slices.SortFunc(ring, func(a, b ringPoint) int {
		return cmp.Or(cmp.Compare(a.hash, b.hash), cmp.Compare(a.endpoint, b.endpoint))
	})
	return &consistentHashPicker{ring: ring, scs: subConns(eps)}
}

type ringPoint struct {
	hash     uint64
	endpoint int32
}

type consistentHashPicker struct {
	ring []ringPoint
	scs  []balancer.SubConn
}

func (p *consistentHashPicker) Pick(info balancer.PickInfo) (balancer.PickResult, error) {
	key, ok := hashKeyFrom(info.Ctx)
	if !ok {
		return balancer.PickResult{SubConn: p.scs[rand.IntN(len(p.scs))]}, nil
	}
	return balancer.PickResult{SubConn: p.scs[p.lookup(hash64(key))]}, nil
}

// lookup returns the endpoint owning h: that of the first point at or after h.
func (p *consistentHashPicker) lookup(h uint64) int32 {
	i, _ := slices.BinarySearchFunc(p.ring, h, func(pt ringPoint, h uint64) int { return cmp.Compare(pt.hash, h) })
	if i == len(p.ring) {
		i = 0
	}
	return p.ring[i].endpoint
}

// hash64 is FNV-1a 64 followed by murmur3's fmix64 finalizer, which spreads
// the near-identical virtual node names over the ring.
func hash64(s string) uint64 { return fmix64(fnv1a64(s)) }

// fnv1a64 is hash/fnv's New64a, inlined so that hashing a key does not
// allocate.
func fnv1a64(s string) uint64 {
	const (
		offset64 = 14695981039346656037
		prime64  = 1099511628211
	)
	h := uint64(offset64)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= prime64
	}
	return h
}

// fmix64 is the 64-bit finalizer of MurmurHash3.
func fmix64(h uint64) uint64 {
	h ^= h >> 33
	h *= 0xff51afd7ed558ccd
	h ^= h >> 33
	h *= 0xc4ceb9fe1a85ec53
	h ^= h >> 33
	return h
}
