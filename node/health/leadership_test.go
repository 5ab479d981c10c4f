package health

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/zrpcio/zrpc/api/apierr"
	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/internal/testlog"
	"github.com/zrpcio/zrpc/internal/testwait"
)

// TestRenewalOnADeposedLeaderIsRetried: a leader deposed that does not
// know it yet (cut off from the other voters, its lease not run out) must
// not answer the renewal of a passing instance "renewed": it writes
// nothing, and the leader that leads now, never told, writes the instance
// critical at its deadline. The renewal fails with "no leader", which its
// forwarding retries, and the instance's health is left alone.
func TestRenewalOnADeposedLeaderIsRetried(t *testing.T) {
	reg := newFakeRegistry()
	clock := &fakeClock{now: time.Unix(1000, 0)}
	deposed := func(context.Context) (uint64, error) {
		return 0, fmt.Errorf("%w: leadership lost while confirming it", apierr.ErrNotLeader)
	}
	k := New(Config{Agent: "a1", Replica: reg, Writer: reg, Interval: time.Hour, Now: clock.Now,
		ConfirmLeader: deposed, Logger: testlog.New(t, "a1")})
	reg.register(ttlInstance("i1", 10*time.Second))
	startTTLs(k, clock.Now())

	_, err := k.RenewTTL(context.Background(), "ttl.rpc", "i1")
	if !errors.Is(err, apierr.ErrNoLeader) {
		t.Fatalf("renewal of a passing instance on a deposed leader: %v, want no leader (retried)", err)
	}
	if !strings.Contains(err.Error(), "ttl.rpc/i1") || !strings.Contains(err.Error(), "leadership lost") {
		t.Fatalf("error %q does not name the instance and why leadership was not confirmed", err)
	}
	if w := reg.written(); len(w) != 0 {
		t.Fatalf("a renewal on a deposed leader wrote %v", w)
	}
}

// TestConcurrentRenewalsShareConfirmationsOfLeadership: renewals that
// arrive while a confirmation of leadership runs wait for the next one,
// which begins after they arrived (the one running may have been answered
// by followers that voted for another leader since), and they all share
// it: fifty renewals cost one confirmation, not fifty.
func TestConcurrentRenewalsShareConfirmationsOfLeadership(t *testing.T) {
	reg := newFakeRegistry()
	clock := &fakeClock{now: time.Unix(1000, 0)}
	var calls atomic.Int32
	firstHeld := make(chan struct{})
	confirm := func(ctx context.Context) (uint64, error) {
		if calls.Add(1) == 1 {
			<-firstHeld // still leads as of this confirmation's start
			return reg.Revision(), nil
		}
		return 0, fmt.Errorf("%w: deposed since", apierr.ErrNotLeader)
	}
	k := New(Config{Agent: "a1", Replica: reg, Writer: reg, Interval: time.Hour, Now: clock.Now,
		ConfirmLeader: confirm, Logger: testlog.New(t, "a1")})
	const later = 50
	for i := range later + 1 {
		reg.register(ttlInstance(fmt.Sprint("i", i), 10*time.Second))
	}
	startTTLs(k, clock.Now())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	first := make(chan error, 1)
	go func() {
		_, err := k.RenewTTL(ctx, "ttl.rpc", "i0")
		first <- err
	}()
	testwait.For(t, 10*time.Second, "the first renewal's confirmation to start", func() bool { return calls.Load() == 1 })
	var wg sync.WaitGroup
	errs := make([]error, later)
	for i := range later {
		wg.Go(func() { _, errs[i] = k.RenewTTL(ctx, "ttl.rpc", fmt.Sprint("i", i+1)) })
	}
	testwait.For(t, 10*time.Second, "the later renewals to wait for the next confirmation", func() bool {
		k.confirms.mu.Lock()
		defer k.confirms.mu.Unlock()
		return k.confirms.next != nil && k.confirms.next.waiters == later
	})
	close(firstHeld)
	if err := <-first; err != nil {
		t.Fatalf("renewal confirmed by a confirmation that began after it: %v", err)
	}
	wg.Wait()
	for i, err := range errs {
		if !errors.Is(err, apierr.ErrNoLeader) {
			t.Fatalf("renewal %d, arrived while an older confirmation ran, answered %v; want the next confirmation's verdict (no leader)", i+1, err)
		}
	}
	if n := calls.Load(); n != 2 {
		t.Fatalf("%d renewals cost %d confirmations of leadership, want 2", later+1, n)
	}
}

// TestRenewalOfACriticalInstanceNeedsNoConfirmation: a renewal that makes
// an instance passing again is a Raft write, which a deposed leader
// cannot commit; it asks for no confirmation of its own.
func TestRenewalOfACriticalInstanceNeedsNoConfirmation(t *testing.T) {
	reg := newFakeRegistry()
	clock := &fakeClock{now: time.Unix(1000, 0)}
	var calls atomic.Int32
	confirm := func(context.Context) (uint64, error) { calls.Add(1); return reg.Revision(), nil }
	k := New(Config{Agent: "a1", Replica: reg, Writer: reg, Interval: time.Hour, Now: clock.Now,
		ConfirmLeader: confirm, Logger: testlog.New(t, "a1")})
	reg.register(ttlInstance("i1", 10*time.Second))
	startTTLs(k, clock.Now())
	makeCritical(reg, "i1", clock.Now())
	if _, err := k.RenewTTL(context.Background(), "ttl.rpc", "i1"); err != nil {
		t.Fatal(err)
	}
	if h := reg.health("ttl.rpc", "i1"); h != pb.Health_PASSING {
		t.Fatalf("renewed instance is %v, want passing", h)
	}
	if n := calls.Load(); n != 0 {
		t.Fatalf("renewal written through Raft also confirmed leadership %d times", n)
	}
}

// TestRenewalWaitingForAConfirmationEndsWithItsContext: a renewal whose
// caller gives up while leadership is being confirmed returns at once,
// saying so.
func TestRenewalWaitingForAConfirmationEndsWithItsContext(t *testing.T) {
	reg := newFakeRegistry()
	clock := &fakeClock{now: time.Unix(1000, 0)}
	release := make(chan struct{})
	defer close(release)
	confirm := func(context.Context) (uint64, error) { <-release; return reg.Revision(), nil }
	k := New(Config{Agent: "a1", Replica: reg, Writer: reg, Interval: time.Hour, Now: clock.Now,
		ConfirmLeader: confirm, Logger: testlog.New(t, "a1")})
	reg.register(ttlInstance("i1", 10*time.Second))
	startTTLs(k, clock.Now())
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := k.RenewTTL(ctx, "ttl.rpc", "i1"); !errors.Is(err, context.Canceled) {
		t.Fatalf("renewal whose caller gave up: %v, want context canceled", err)
	}
}
