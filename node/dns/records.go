package dns

import (
	"math/rand/v2"
	"slices"
	"sync"

	"github.com/miekg/dns"
)

// records are the answers to one service name, built once from the
// replica at revision rev and shared by the queries that ask for it until
// the revision moves: the records are never changed after they are built
// (packing an answer only reads them).
type records struct {
	rev uint64
	// checks are the ACL decisions the records depend on: which services
	// the name could mean were readable.
	checks []aclCheck
	// srv are the SRV records of the passing instances; srvTarget the
	// index in targets of each one's address record, -1 for an instance
	// registered with a host name.
	srv       []dns.RR
	srvTarget []int32
	targets   []dns.RR
	// a and aaaa are the A and AAAA records of the name, each address once.
	a, aaaa []dns.RR
}

type aclCheck struct {
	service string
	allowed bool
}

// readable reports whether canRead still decides as it did when rs was
// built.
func (rs *records) readable(canRead func(string) bool) bool {
	for _, c := range rs.checks {
		if canRead(c.service) != c.allowed {
			return false
		}
	}
	return true
}

// count is the number of records rs has for a question of type qtype.
func (rs *records) count(qtype uint16) int {
	switch qtype {
	case dns.TypeSRV:
		return len(rs.srv)
	case dns.TypeA:
		return len(rs.a)
	case dns.TypeAAAA:
		return len(rs.aaaa)
	case dns.TypeANY:
		return len(rs.a) + len(rs.aaaa)
	}
	return 0
}

// size is roughly the number of records rs holds, what the cache bounds.
func (rs *records) size() int { return len(rs.srv) + len(rs.targets) + len(rs.a) + len(rs.aaaa) }

// pick returns min(n, k) distinct indexes below n in a random order,
// every ordered choice as likely, in O(k) (but for a few of many, in
// O(k²) with k at most 128, which allocates less).
func pick(n, k int) []int {
	k = min(n, k)
	switch {
	case k <= 128 && 2*k <= n:
		// A few of many (a UDP answer of a large service): draw until k
		// differ, at most twice as many draws as k on average.
		out := make([]int, 0, k)
		for len(out) < k {
			if i := rand.IntN(n); !slices.Contains(out, i) {
				out = append(out, i)
			}
		}
		return out
	case 2*k <= n:
		return pickSparse(n, k) // many of many more: a TCP answer
	}
	out := make([]int, n)
	for i := range out {
		out[i] = i
	}
	// A partial Fisher-Yates shuffle: the first k are a random choice.
	for i := range k {
		j := i + rand.IntN(n-i)
		out[i], out[j] = out[j], out[i]
	}
	return out[:k]
}

// pickSparse is pick's partial Fisher-Yates shuffle of the indexes below
// n, keeping only the places it moved (by place) rather than n indexes.
func pickSparse(n, k int) []int {
	out := make([]int, k)
	moved := make(map[int]int, k)
	at := func(i int) int {
		if v, ok := moved[i]; ok {
			return v
		}
		return i
	}
	for i := range k {
		j := i + rand.IntN(n-i)
		out[i] = at(j)
		moved[j] = at(i)
	}
	return out
}

// pickRecords returns at most k of the records of a and b together, in a
// random order.
func pickRecords(a, b []dns.RR, k int) []dns.RR {
	order := pick(len(a)+len(b), k)
	out := make([]dns.RR, len(order))
	for o, i := range order {
		if i < len(a) {
			out[o] = a[i]
		} else {
			out[o] = b[i-len(a)]
		}
	}
	return out
}

// cache holds the records of the names asked recently, at most maxNames
// names and maxRecords records: a stranger asking many names evicts
// others, but cannot grow it.
type cache struct {
	mu       sync.RWMutex
	names    map[string]*records
	held     int // records in names
	maxNames int
	maxRecs  int
}

// The cache's default bounds: about 16 MB of records at most; the names
// without a record kept apart (handler.empty); and the names whose
// records alone exceed cacheRecords (a service of tens of thousands of
// instances), kept apart too (handler.large), two of them, each as
// large as the registry makes it.
const (
	cacheNames   = 4096
	cacheRecords = 100_000
	emptyNames   = 4096
	largeNames   = 2
)

func newCache(maxNames, maxRecords int) *cache {
	return &cache{names: map[string]*records{}, maxNames: maxNames, maxRecs: maxRecords}
}

func (c *cache) get(name string) *records {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.names[name]
}

// remove forgets the records of name.
func (c *cache) remove(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.drop(name)
}

// drop forgets the records of name; c.mu is held.
func (c *cache) drop(name string) {
	if old, ok := c.names[name]; ok {
		c.held -= old.size()
		delete(c.names, name)
	}
}

// put stores rs for name, evicting names at random when the bounds need
// it; a name whose records alone exceed them is not kept.
func (c *cache) put(name string, rs *records) {
	if rs.size() > c.maxRecs {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.drop(name)
	for other, old := range c.names { // map order is random
		if len(c.names) < c.maxNames && c.held+rs.size() <= c.maxRecs {
			break
		}
		c.held -= old.size()
		delete(c.names, other)
	}
	c.names[name] = rs
	c.held += rs.size()
}
