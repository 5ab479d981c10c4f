package raftstore

import (
	"context"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"
)

// addrBook is a Config.ServerAddr the test fills in, as gossip would.
type addrBook struct {
	mu    sync.Mutex
	addrs map[string]string
	asked map[string]int
}

func (b *addrBook) lookup(id string) (string, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.asked[id]++
	a, ok := b.addrs[id]
	return a, ok
}

func (b *addrBook) set(id, addr string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.addrs[id] = addr
}

// TestTransportDialsTheAddressServerAddrGives: a voter recorded in the
// configuration at an address nothing listens on (it came back at another
// one) is reached where Config.ServerAddr says, so the configuration
// change commits and the voter replicates writes.
func TestTransportDialsTheAddressServerAddrGives(t *testing.T) {
	book := &addrBook{addrs: map[string]string{}, asked: map[string]int{}}
	log := testLogger(t, slog.LevelWarn)
	open := func(id string, bootstrap bool) *Store {
		cfg := testStoreConfig(t, t.TempDir(), slog.LevelWarn)
		cfg.NodeID, cfg.Bootstrap, cfg.Logger, cfg.ServerAddr = id, bootstrap, log, book.lookup
		s := New(cfg)
		if err := s.Open(); err != nil {
			t.Fatalf("open %s: %v", id, err)
		}
		t.Cleanup(func() { s.Close() })
		book.set(id, s.RaftAddr())
		return s
	}
	n1 := open("n1", true)
	eventually(t, 10*time.Second, "n1 leads", n1.IsLeader)
	n2 := open("n2", false)

	// n2's and n3's configured addresses: two distinct ports nothing
	// listens on (taken together, so the second cannot reuse the first).
	unused := unusedAddrs(t, 2)
	stale, stale3 := unused[0], unused[1]
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := n1.AddVoter(ctx, "n2", stale); err != nil {
		t.Fatalf("AddVoter(n2 at a stale address): %v (the transport dialed the configuration's address, not ServerAddr's)", err)
	}
	rev := mustStoreApply(t, n1, registerCmd(testInstance("api", "1", "n1")))
	eventually(t, 10*time.Second, "n2 applies the write", func() bool { return n2.FSM().Revision() >= rev })

	// A server ServerAddr does not know is dialed at the configuration's
	// address, with no warning per RPC.
	if err := n1.AddNonvoter(ctx, "n3", stale3); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the transport to ask for n3", func() bool {
		book.mu.Lock()
		defer book.mu.Unlock()
		return book.asked["n3"] > 0
	})
	if a, err := n1.addrs.ServerAddr("n3"); err != nil || string(a) != stale3 {
		t.Errorf("ServerAddr(n3) = %q, %v; want the configuration's %s", a, err, stale3)
	}
}

// unusedAddrs returns n distinct loopback addresses nothing listens on:
// all n listeners are held open together, so the kernel cannot hand out
// one port twice.
func unusedAddrs(t *testing.T, n int) []string {
	t.Helper()
	addrs := make([]string, 0, n)
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		addrs = append(addrs, ln.Addr().String())
	}
	return addrs
}
