package balancer

import (
	"context"
	"hash/fnv"
	"strconv"
	"testing"

	"google.golang.org/grpc/balancer"
	"google.golang.org/grpc/metadata"
)

func TestFNV1a64MatchesHashFNV(t *testing.T) {
	for _, s := range []string{"", "a", "user-42", "10.0.0.1:9000#159"} {
		h := fnv.New64a()
		h.Write([]byte(s))
		if got, want := fnv1a64(s), h.Sum64(); got != want {
			t.Fatalf("fnv1a64(%q) = %x, want %x", s, got, want)
		}
	}
}

// owners returns the address each of keys maps to on a ring over scs.
func owners(t *testing.T, scs []*fakeSubConn, keys []string) []string {
	t.Helper()
	p := consistentHashPickerBuilder{}.Build(buildInfo(scs))
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i] = pick(t, p, WithHashKey(context.Background(), k)).SubConn.(*fakeSubConn).addr
	}
	return out
}

func TestConsistentHash(t *testing.T) {
	all := newSubConns(5)
	four := all[:4]
	keys := make([]string, 10000)
	for i := range keys {
		keys[i] = "user-" + strconv.Itoa(i)
	}
	before := owners(t, four, keys)

	t.Run("stable", func(t *testing.T) {
		again := owners(t, four, keys)
		perOwner := map[string]int{}
		for i := range keys {
			if again[i] != before[i] {
				t.Fatalf("key %q went to %s, then %s", keys[i], before[i], again[i])
			}
			perOwner[before[i]]++
		}
		for _, sc := range four {
			if n := perOwner[sc.addr]; n < 1500 || n > 3500 {
				t.Fatalf("%s owns %d of 10000 keys, want about 2500: %v", sc.addr, n, perOwner)
			}
		}
	})

	t.Run("add", func(t *testing.T) {
		after := owners(t, all, keys)
		moved := 0
		for i := range keys {
			if after[i] == before[i] {
				continue
			}
			moved++
			if after[i] != all[4].addr {
				t.Fatalf("key %q moved from %s to %s, not to the new endpoint", keys[i], before[i], after[i])
			}
		}
		if frac := float64(moved) / float64(len(keys)); frac < 0.10 || frac > 0.30 {
			t.Fatalf("%.1f%% of keys moved when adding a 5th endpoint, want 10-30%%", 100*frac)
		}
	})

	t.Run("remove", func(t *testing.T) {
		removed := four[1]
		rest := []*fakeSubConn{four[0], four[2], four[3]}
		after := owners(t, rest, keys)
		for i := range keys {
			if (after[i] != before[i]) != (before[i] == removed.addr) {
				t.Fatalf("key %q: %s before, %s after removing %s", keys[i], before[i], after[i], removed.addr)
			}
		}
	})
}

func TestConsistentHashKeySources(t *testing.T) {
	scs := newSubConns(4)
	p := consistentHashPickerBuilder{}.Build(buildInfo(scs))
	byCtx := pick(t, p, WithHashKey(context.Background(), "k1")).SubConn
	md := metadata.AppendToOutgoingContext(context.Background(), HashKeyMetadataKey, "k1")
	if got := pick(t, p, md).SubConn; got != byCtx {
		t.Fatalf("metadata key went to %v, context key to %v", got, byCtx)
	}
	// The context value wins over metadata.
	var other string
	for i := 0; ; i++ {
		other = "other-" + strconv.Itoa(i)
		if pick(t, p, WithHashKey(context.Background(), other)).SubConn != byCtx {
			break
		}
	}
	if got := pick(t, p, WithHashKey(md, other)).SubConn; got == byCtx {
		t.Fatal("metadata key took precedence over WithHashKey")
	}
	// No key: spread like Random.
	counts := countPicks(t, p, 1000)
	for _, sc := range scs {
		if counts[sc] == 0 || counts[sc] > 500 {
			t.Fatalf("calls without a key: counts %v, want a spread", counts)
		}
	}
	_ = balancer.PickInfo{}
}
