package health

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/zrpcio/zrpc/api/apierr"
	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/internal/testlog"
	"github.com/zrpcio/zrpc/internal/testwait"
)

// racingWriter writes to reg; before runs once, just before the first
// write that matches it is applied (another writer's entry committing
// first).
type racingWriter struct {
	*fakeRegistry
	matches func(*pb.Command) bool
	before  func()
}

func (w *racingWriter) race(cmd *pb.Command) {
	if w.before != nil && w.matches(cmd) {
		before := w.before
		w.before = nil
		before()
	}
}

func (w *racingWriter) Propose(ctx context.Context, cmd *pb.Command) (uint64, error) {
	w.race(cmd)
	return w.fakeRegistry.Propose(ctx, cmd)
}

func (w *racingWriter) ApplyLocal(ctx context.Context, cmd *pb.Command) (uint64, error) {
	w.race(cmd)
	return w.fakeRegistry.ApplyLocal(ctx, cmd)
}

// registerGRPCChecked stores id again as an agent registers it with a
// gRPC check: critical, awaiting its first check.
func registerGRPCChecked(reg *fakeRegistry, id string) {
	inst := ttlInstance(id, 0)
	inst.Check = &pb.Check{Grpc: true, Interval: durationpb.New(time.Second)}
	reg.registerAwaiting(inst)
}

// agentFailed applies the leader's write for the failure of agent a1,
// whose instance id is.
func agentFailed(t *testing.T, reg *fakeRegistry, id string) {
	t.Helper()
	cmd := &pb.Command{Kind: &pb.Command_SetHealth{SetHealth: &pb.SetHealth{Health: pb.Health_CRITICAL, Output: AgentFailed,
		Instances: []*pb.InstanceRef{{Service: "ttl.rpc", Id: id}}}}}
	if _, err := reg.apply(cmd); err != nil {
		t.Fatal(err)
	}
}

// TestRenewalWritesPassingOnlyOverTheVersionItJudged: a renewal of a
// critical instance writes it passing, and another write to the instance
// commits between the renewal's reading and its write. An instance
// registered again with a gRPC check (critical, awaiting its first check)
// stays so, and the renewal says it has no TTL check; an instance the
// leader wrote critical because its agent failed is still the same
// registration, and the renewal makes it passing.
func TestRenewalWritesPassingOnlyOverTheVersionItJudged(t *testing.T) {
	for _, tc := range []struct {
		name       string
		race       func(t *testing.T, reg *fakeRegistry)
		wantErr    error
		want       pb.Health
		wantOutput string
	}{
		{"registered again with a gRPC check", func(t *testing.T, reg *fakeRegistry) { registerGRPCChecked(reg, "i1") },
			apierr.ErrInvalidArgument, pb.Health_CRITICAL, AwaitingFirstCheck},
		{"agent failed", func(t *testing.T, reg *fakeRegistry) { agentFailed(t, reg, "i1") },
			nil, pb.Health_PASSING, "TTL renewed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg := newFakeRegistry()
			clock := &fakeClock{now: time.Unix(1000, 0)}
			w := &racingWriter{fakeRegistry: reg, matches: func(cmd *pb.Command) bool { return cmd.GetSetHealth() != nil }}
			k := New(Config{Agent: "a1", Replica: reg, Writer: w, Interval: time.Hour, Now: clock.Now, Logger: testlog.New(t, "a1")})
			reg.register(ttlInstance("i1", 10*time.Second))
			startTTLs(k, clock.Now())
			k.ttl.observe(makeCritical(reg, "i1", clock.Now()), clock.Now())
			w.before = func() { tc.race(t, reg) }

			_, err := k.RenewTTL(context.Background(), "ttl.rpc", "i1")
			if !errors.Is(err, tc.wantErr) || (err == nil) != (tc.wantErr == nil) {
				t.Fatalf("renewal: %v, want %v", err, tc.wantErr)
			}
			if w.before != nil {
				t.Fatal("the renewal wrote nothing")
			}
			cur := reg.Instance("ttl.rpc", "i1")
			if cur.Health != tc.want || cur.HealthOutput != tc.wantOutput {
				t.Fatalf("instance after the renewal: %v %q, want %v %q", cur.Health, cur.HealthOutput, tc.want, tc.wantOutput)
			}
			for _, cmd := range reg.written() {
				if cmd.GetSetHealth().GetOutput() != "TTL renewed" {
					continue // the racing write
				}
				for _, ref := range cmd.GetSetHealth().GetInstances() {
					if ref.ModRevision == 0 {
						t.Fatalf("renewal wrote %v, want it conditional on the version it judged", cmd)
					}
				}
			}
		})
	}
}

// TestRenewalWaitingForATickDoesNotMakeARegistrationAgainPassing: a
// renewal that arrives while a tick writes the instance critical waits
// for that write, then reads the instance again; registered again
// meanwhile with a gRPC check, it is critical awaiting that check, and
// the renewal leaves it so.
func TestRenewalWaitingForATickDoesNotMakeARegistrationAgainPassing(t *testing.T) {
	reg := newFakeRegistry()
	t0 := time.Unix(1000, 0)
	clock := &fakeClock{now: t0}
	entered, release := make(chan struct{}), make(chan struct{})
	w := &racingWriter{fakeRegistry: reg, matches: func(cmd *pb.Command) bool { return cmd.GetSetHealth() != nil }}
	w.before = func() {
		close(entered)
		<-release
		registerGRPCChecked(reg, "i1") // commits before the tick's write
	}
	k := New(Config{Agent: "a1", Replica: reg, Writer: w, Interval: time.Hour, Now: clock.Now, Logger: testlog.New(t, "a1")})
	reg.register(ttlInstance("i1", 10*time.Second))
	startTTLs(k, t0)
	clock.set(t0.Add(11 * time.Second))
	swept := make(chan struct{})
	go func() {
		defer close(swept)
		k.sweep(context.Background(), clock.Now())
	}()
	<-entered
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	renewed := make(chan error, 1)
	gen := func() uint64 {
		k.ttl.mu.Lock()
		defer k.ttl.mu.Unlock()
		return k.ttl.entries[instanceKey{"ttl.rpc", "i1"}].gen
	}
	judged := gen()
	go func() {
		_, err := k.RenewTTL(ctx, "ttl.rpc", "i1")
		renewed <- err
	}()
	testwait.For(t, 10*time.Second, "the renewal to wait for the tick's write", func() bool { return gen() != judged })
	close(release)
	<-swept
	if err := <-renewed; !errors.Is(err, apierr.ErrInvalidArgument) {
		t.Fatalf("renewal of an instance registered again with a gRPC check: %v, want invalid argument (no TTL check)", err)
	}
	if cur := reg.Instance("ttl.rpc", "i1"); !awaitingFirstCheck(cur) {
		t.Fatalf("the registration again is %v %q after the renewal, want it left awaiting its first check", cur.Health, cur.HealthOutput)
	}
}

// TestRenewalOfAnInstanceTheReplicaLacks: the leader's replica lacks the
// instance. A renewal answers "not found" only once the agent has
// confirmed that it leads and its replica has applied the read index of
// that confirmation: a registration committed and not yet applied is
// renewed; a deposed leader answers "no leader", which the forwarding
// retries on the agent that leads now.
func TestRenewalOfAnInstanceTheReplicaLacks(t *testing.T) {
	for _, tc := range []struct {
		name    string
		confirm func(reg *fakeRegistry) (uint64, error)
		wantErr error
	}{
		{"registration not applied yet", func(reg *fakeRegistry) (uint64, error) {
			index := reg.Revision() + 1
			go reg.register(ttlInstance("i1", 10*time.Second)) // committed; applied soon after
			return index, nil
		}, nil},
		{"deposed leader", func(reg *fakeRegistry) (uint64, error) {
			return 0, fmt.Errorf("%w: leadership lost while confirming it", apierr.ErrNotLeader)
		}, apierr.ErrNoLeader},
		{"not registered", func(reg *fakeRegistry) (uint64, error) { return reg.Revision(), nil }, apierr.ErrNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg := newFakeRegistry()
			clock := &fakeClock{now: time.Unix(1000, 0)}
			reg.register(ttlInstance("other", 10*time.Second))
			var calls atomic.Int32
			confirm := func(context.Context) (uint64, error) { calls.Add(1); return tc.confirm(reg) }
			k := New(Config{Agent: "a1", Replica: reg, Writer: reg, Interval: time.Hour, Now: clock.Now,
				ConfirmLeader: confirm, Logger: testlog.New(t, "a1")})
			startTTLs(k, clock.Now())
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()

			_, err := k.RenewTTL(ctx, "ttl.rpc", "i1")
			if !errors.Is(err, tc.wantErr) || (err == nil) != (tc.wantErr == nil) {
				t.Fatalf("renewal of an instance the replica lacked: %v, want %v", err, tc.wantErr)
			}
			if calls.Load() == 0 {
				t.Fatal("renewal answered without confirming leadership")
			}
		})
	}
}

// TestRenewalOfAnInstanceLackedWithoutConfirmationsIsNotFound: without
// Config.ConfirmLeader (tests, a one-agent setup) an instance the replica
// lacks is not found at once, and the error says what to do.
func TestRenewalOfAnInstanceLackedWithoutConfirmationsIsNotFound(t *testing.T) {
	reg := newFakeRegistry()
	k := newTestKeeper(t, reg, &fakeClock{now: time.Unix(1000, 0)})
	_, err := k.RenewTTL(context.Background(), "ttl.rpc", "i1")
	if !errors.Is(err, apierr.ErrNotFound) {
		t.Fatalf("renewal of an unknown instance: %v, want not found", err)
	}
}
