package gossip

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeResolver answers every name with what answer returns, and counts
// the lookups.
type fakeResolver struct {
	mu      sync.Mutex
	lookups int
	answer  func(lookup int, host string) ([]netip.Addr, error)
}

func (r *fakeResolver) LookupNetIP(_ context.Context, network, host string) ([]netip.Addr, error) {
	r.mu.Lock()
	r.lookups++
	n := r.lookups
	r.mu.Unlock()
	if network != "ip" {
		return nil, fmt.Errorf("looked up network %q, want ip (A and AAAA)", network)
	}
	return r.answer(n, host)
}

func (r *fakeResolver) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.lookups
}

func addrs(ss ...string) []netip.Addr {
	out := make([]netip.Addr, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParseAddr(s)
	}
	return out
}

// startAgentsOnOnePort starts one agent on each loopback IP, all on the
// same gossip port (as pods behind a headless Service are), and returns
// them and the port.
func startAgentsOnOnePort(t *testing.T, ips ...string) ([]*agent, int) {
	t.Helper()
	var lastErr error
	for try := 0; try < 5; try++ {
		port := freePort(t)
		var gs []*Gossip
		lastErr = nil
		for i, ip := range ips {
			cfg := testConfig(t, string(rune('a'+i)))
			cfg.BindAddr, cfg.BindPort = ip, port
			g, err := New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			if err := g.Start(); err != nil {
				lastErr = err
				break
			}
			gs = append(gs, g)
		}
		if lastErr != nil { // the port was taken on one of the IPs: try another
			for _, g := range gs {
				g.Close()
			}
			continue
		}
		agents := make([]*agent, len(gs))
		for i, g := range gs {
			a := &agent{Gossip: g, name: string(rune('a' + i)), rec: record(g)}
			agents[i] = a
			t.Cleanup(func() {
				g.Close()
				<-a.rec.done
			})
		}
		return agents, port
	}
	t.Fatalf("no port free on all of %v: %v", ips, lastErr)
	return nil, 0
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func TestJoinByNameContactsEveryAddressItResolvesTo(t *testing.T) {
	agents, port := startAgentsOnOnePort(t, "127.0.0.1", "127.0.0.2", "127.0.0.3")
	res := &fakeResolver{answer: func(_ int, host string) ([]netip.Addr, error) {
		if host != "zrpc.default.svc.cluster.local" {
			return nil, fmt.Errorf("no such host %q", host)
		}
		// The name lists the joining agent too, as a headless Service lists
		// every pod; it must be skipped.
		return addrs("127.0.0.1", "127.0.0.2", "127.0.0.4", "127.0.0.3"), nil
	}}
	d := startAgent(t, "d", func(c *Config) {
		c.BindAddr, c.BindPort, c.Resolver = "127.0.0.4", port, res
	})

	joined, err := d.Join(context.Background(), []string{"zrpc.default.svc.cluster.local"})
	if err != nil || joined != 3 {
		t.Fatalf("Join(name of 4 addresses, one of them d's own) = %d, %v; want 3 (every other address), nil", joined, err)
	}
	// Each agent was contacted itself: it knows d although none of them
	// had joined another.
	for _, a := range agents {
		waitForOr(t, a.name+" to see d alive", func() bool { return hasStatus(a.Gossip, "d", StatusAlive) }, a.about("d"))
	}
}

func TestJoinRetryLooksTheNameUpAgainUntilItListsAnotherAgent(t *testing.T) {
	a := startAgent(t, "a", nil)
	aAddr := netip.MustParseAddrPort(a.LocalAddr())
	res := &fakeResolver{}
	b := startAgent(t, "b", func(c *Config) { c.BindAddr, c.BindPort, c.Resolver = "127.0.0.2", int(aAddr.Port()), res })
	res.answer = func(lookup int, _ string) ([]netip.Addr, error) {
		switch lookup {
		case 1:
			return addrs("127.0.0.2"), nil // only b itself, as for the first pod
		case 2:
			return nil, &net.DNSError{Err: "no such host", Name: "peers", IsNotFound: true}
		}
		return addrs("127.0.0.2", "127.0.0.1"), nil
	}

	// A name that lists b only is an error to retry, not "nothing to join".
	if _, err := b.Join(context.Background(), []string{"peers"}); !errors.Is(err, errNoOtherAddress) {
		t.Fatalf("Join(name listing only this agent) = %v; want errNoOtherAddress", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if err := b.JoinRetry(ctx, []string{"peers"}, 200*time.Millisecond); err != nil {
		t.Fatalf("JoinRetry(peers): %v", err)
	}
	if n := res.count(); n != 3 {
		t.Errorf("the name was looked up %d times; want once per attempt: 3 (only b, not found, then a too)", n)
	}
	waitFor(t, "a to see b", func() bool { return hasStatus(a.Gossip, "b", StatusAlive) })
}

func TestJoinLocalhostWithTheSystemResolver(t *testing.T) {
	a := startAgent(t, "a", nil)
	b := startAgent(t, "b", nil)
	port := netip.MustParseAddrPort(a.LocalAddr()).Port()
	// localhost resolves to 127.0.0.1 and maybe ::1, where nothing listens:
	// one answer is enough.
	joined, err := b.Join(context.Background(), []string{net.JoinHostPort("localhost", strconv.Itoa(int(port)))})
	if err != nil || joined != 1 {
		t.Fatalf("Join(localhost:%d) = %d, %v; want 1, nil", port, joined, err)
	}
	waitFor(t, "a to see b", func() bool { return hasStatus(a.Gossip, "b", StatusAlive) })
}

func TestJoinRetryRefusesAMalformedAddressAtOnce(t *testing.T) {
	a := startAgent(t, "a", nil)
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	err := a.JoinRetry(ctx, []string{"10.0.0.1:8402", "bad name:8402"}, time.Second)
	if err == nil || ctx.Err() != nil {
		t.Fatalf("JoinRetry with a malformed address = %v; want an immediate error", err)
	}
}

func TestValidJoinAddr(t *testing.T) {
	for _, tc := range []struct {
		addr string
		ok   bool
	}{
		{"10.0.0.1:8402", true},
		{"10.0.0.1", true},
		{"::1", true},
		{"[::1]:8402", true},
		{"localhost", true},
		{"zrpc.default.svc.cluster.local:8402", true},
		{"zrpc-0.zrpc.default.svc.cluster.local.", true},
		{"", false},
		{"bad name:8402", false},
		{"host:0", false},
		{"host:65536", false},
		{"host:port", false},
		{"a..b", false},
		{"[::1]", false},
	} {
		err := ValidJoinAddr(tc.addr)
		if (err == nil) != tc.ok {
			t.Errorf("ValidJoinAddr(%q) = %v; want ok %v", tc.addr, err, tc.ok)
		}
	}
}

func TestExpandJoinDefaultsThePortAndDropsRepeats(t *testing.T) {
	res := &fakeResolver{answer: func(int, string) ([]netip.Addr, error) {
		return addrs("10.0.0.2", "::ffff:10.0.0.3", "fd00::1"), nil
	}}
	got, errs, named := expandJoin(context.Background(), res, []string{"10.0.0.2", "peers", "10.0.0.3:8402"}, 8402)
	if len(errs) != 0 || !named {
		t.Fatalf("errs %v, named %v; want none, true", errs, named)
	}
	want := []string{"10.0.0.2:8402", "10.0.0.3:8402", "[fd00::1]:8402"}
	if len(got) != len(want) {
		t.Fatalf("targets %v; want %v", got, want)
	}
	for i := range want {
		if got[i].addr.String() != want[i] {
			t.Errorf("target %d = %s; want %s", i, got[i].addr, want[i])
		}
	}
}

// TestRestartedAgentRejoinsFromANewAddress: an agent that failed and comes
// back under its name at another address (a Kubernetes pod restarted with
// a new IP) is taken as alive at once, not refused as a conflicting
// address until the others forget it.
func TestRestartedAgentRejoinsFromANewAddress(t *testing.T) {
	logs := &logRecords{}
	a := startAgent(t, "a", func(c *Config) {
		c.Logger = slog.New(recordingHandler{Handler: c.Logger.Handler(), rec: logs})
	})
	b := startAgent(t, "b", nil)
	if _, err := b.Join(context.Background(), []string{a.LocalAddr()}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a to see b alive", func() bool { return hasStatus(a.Gossip, "b", StatusAlive) })
	b.Close()
	waitFor(t, "a to see b failed", func() bool { return hasStatus(a.Gossip, "b", StatusFailed) })

	b2 := startAgent(t, "b", func(c *Config) { c.BindAddr = "127.0.0.2" })
	if _, err := b2.Join(context.Background(), []string{a.LocalAddr()}); err != nil {
		t.Fatal(err)
	}
	waitForOr(t, "a to see b alive at its new address", func() bool {
		m, ok := a.Member("b")
		return ok && m.Status == StatusAlive && m.Addr == b2.LocalAddr()
	}, func() string {
		conflicts := 0
		logs.mu.Lock()
		for _, r := range logs.recs {
			if strings.HasPrefix(r.Message, "Conflicting address for b") {
				conflicts++
			}
		}
		logs.mu.Unlock()
		return fmt.Sprintf("%s; a logged %d conflicting-address refusals", a.about("b")(), conflicts)
	})
}
