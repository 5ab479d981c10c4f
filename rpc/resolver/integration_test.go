package resolver

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/serviceconfig"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/client/clienttest"
	"github.com/zrpcio/zrpc/internal/grpctest"
	"github.com/zrpcio/zrpc/internal/testlog"
	"github.com/zrpcio/zrpc/internal/testport"
	"github.com/zrpcio/zrpc/internal/testwait"
	_ "github.com/zrpcio/zrpc/rpc/balancer" // registers zrpc_round_robin
	"github.com/zrpcio/zrpc/testcluster"
)

const roundRobinConfig = `{"loadBalancingConfig":[{"zrpc_round_robin":{}}]}`

// dial creates a ClientConn to target with the given options plus insecure
// credentials and the round-robin balancer.
func dial(t *testing.T, target string, opts ...grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	opts = append(opts,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultServiceConfig(roundRobinConfig))
	cc, err := grpc.NewClient(target, opts...)
	if err != nil {
		t.Fatalf("NewClient(%s): %v", target, err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

// check makes one Health/Check call.
func check(cc *grpc.ClientConn) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{})
	return err
}

// callN makes n calls, all of which must succeed, and returns how many each
// server answered.
func callN(t *testing.T, cc *grpc.ClientConn, servers []*grpctest.Server, n int) []int64 {
	t.Helper()
	before := counts(servers)
	for i := range n {
		if err := check(cc); err != nil {
			t.Fatalf("call %d of %d: %v", i+1, n, err)
		}
	}
	after := counts(servers)
	for i := range after {
		after[i] -= before[i]
	}
	return after
}

func counts(servers []*grpctest.Server) []int64 {
	out := make([]int64, len(servers))
	for i, s := range servers {
		out[i] = s.Calls.Load()
	}
	return out
}

// waitCalls makes rounds of calls until one round's per-server counts satisfy
// cond, failing the test after a deadline.
func waitCalls(t *testing.T, cc *grpc.ClientConn, servers []*grpctest.Server, what string, cond func(got []int64) bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		got := callN(t, cc, servers, 30)
		if cond(got) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for: %s (last round: %v)", what, got)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func registerInstance(t *testing.T, c *testcluster.Cluster, id, addr string) {
	t.Helper()
	retry(t, "register "+id, func(ctx context.Context) error {
		_, err := c.Registry(0).Register(ctx, &zrpcpb.RegisterRequest{Instance: &zrpcpb.Instance{
			Id: id, Service: "echo.rpc", Address: addr, Zone: "z1", Version: "v1",
		}})
		return err
	})
}

func deregisterInstance(t *testing.T, c *testcluster.Cluster, id string) {
	t.Helper()
	retry(t, "deregister "+id, func(ctx context.Context) error {
		_, err := c.Registry(0).Deregister(ctx, &zrpcpb.DeregisterRequest{Service: "echo.rpc", Id: id})
		return err
	})
}

// retry calls f until it succeeds, failing the test after a deadline (an
// agent that has just restarted may not have a leader yet).
func retry(t *testing.T, what string, f func(ctx context.Context) error) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := f(ctx)
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestZRPCResolverFollowsRegistry(t *testing.T) {
	c := testcluster.New(t, 1)
	servers := grpctest.StartHealthServers(t, 3)
	registerInstance(t, c, "i0", servers[0].Addr)
	registerInstance(t, c, "i1", servers[1].Addr)

	b := NewBuilder(WithAgents([]string{c.GRPCAddr(0)}), WithLogger(testlog.New(t, "resolver")))
	cc := dial(t, "zrpc:///echo.rpc", grpc.WithResolvers(b))

	got := callN(t, cc, servers, 200)
	if got[0] == 0 || got[1] == 0 || got[2] != 0 {
		t.Fatalf("200 calls went %v to the servers, want some to each of the first two and none to the third", got)
	}

	registerInstance(t, c, "i2", servers[2].Addr)
	waitCalls(t, cc, servers, "the third instance gets calls", func(got []int64) bool { return got[2] > 0 })

	deregisterInstance(t, c, "i0")
	waitCalls(t, cc, servers, "the deregistered instance gets no calls", func(got []int64) bool { return got[0] == 0 })
	if got := callN(t, cc, servers, 60); got[0] != 0 || got[1] == 0 || got[2] == 0 {
		t.Fatalf("after deregistering i0, 60 calls went %v, want none to i0 and some to i1 and i2", got)
	}

	// With the only agent down the client keeps its cached instances. The
	// agent is killed rather than stopped: node.Close does not close the
	// gossip transport, so a cleanly stopped agent cannot be restarted on
	// its port (Restart fails with "address already in use").
	c.Kill(0)
	if got := callN(t, cc, servers, 60); got[1] == 0 || got[2] == 0 {
		t.Fatalf("with the agent down, 60 calls went %v, want some to i1 and i2", got)
	}

	// Once the agent is back the resolver resyncs.
	c.Restart(0)
	deregisterInstance(t, c, "i1")
	waitCalls(t, cc, servers, "the instance deregistered after the agent restart gets no calls", func(got []int64) bool { return got[1] == 0 })
	if got := callN(t, cc, servers, 30); got[1] != 0 || got[2] != 30 {
		t.Fatalf("after the restart, 30 calls went %v, want all to i2", got)
	}

	// A service with no instances left fails calls with Unavailable,
	// saying so.
	deregisterInstance(t, c, "i2")
	waitUnavailable(t, cc, "the registry has no instance of echo.rpc")

	// One whose only instance's check fails says why.
	retry(t, "register a checked instance", func(ctx context.Context) error {
		_, err := c.Registry(0).Register(ctx, &zrpcpb.RegisterRequest{Instance: &zrpcpb.Instance{
			Id: "down", Service: "echo.rpc", Address: testport.Unused(t),
			Check: &zrpcpb.Check{Grpc: true, Interval: durationpb.New(time.Hour)}}})
		return err
	})
	waitUnavailable(t, cc, "the one instance of echo.rpc is not routable: down critical (gRPC health check of ")

	// A passing instance again: once it is connected calls go through
	// (grpc fails them fast while its connection is being made, as after
	// any moment with no instance), the error reported while none was
	// routable is gone.
	registerInstance(t, c, "i3", servers[2].Addr)
	testwait.For(t, 30*time.Second, "a call to succeed once i3 is registered", func() bool { return check(cc) == nil })
	if got := callN(t, cc, servers, 30); got[2] != 30 {
		t.Fatalf("with i3 the only routable instance, 30 calls went %v, want all to it", got)
	}
}

// waitUnavailable makes calls until one fails with Unavailable and a
// message containing want, failing the test after a deadline.
func waitUnavailable(t *testing.T, cc *grpc.ClientConn, want string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := check(cc)
		if status.Code(err) == codes.Unavailable && strings.Contains(err.Error(), want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("call error = %v, want Unavailable saying %q", err, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestZRPCResolverTargetAgentsAndRegister(t *testing.T) {
	c := testcluster.New(t, 1)
	servers := grpctest.StartHealthServers(t, 2)
	registerInstance(t, c, "i0", servers[0].Addr)
	registerInstance(t, c, "i1", servers[1].Addr)

	Register()
	Register() // idempotent
	// The global builder has default options; the target names the agent.
	// An unreachable second agent is skipped.
	cc := dial(t, fmt.Sprintf("zrpc://%s,127.0.0.1:1/echo.rpc", c.GRPCAddr(0)))
	if got := callN(t, cc, servers, 100); got[0] == 0 || got[1] == 0 {
		t.Fatalf("100 calls went %v, want some to each server", got)
	}
}

func TestZRPCResolverFilterAndPreferZone(t *testing.T) {
	c := testcluster.New(t, 1)
	servers := grpctest.StartHealthServers(t, 3)
	for i, z := range []struct{ zone, version string }{{"a", "v1"}, {"b", "v1"}, {"b", "v2"}} {
		retry(t, "register", func(ctx context.Context) error {
			_, err := c.Registry(0).Register(ctx, &zrpcpb.RegisterRequest{Instance: &zrpcpb.Instance{
				Id: fmt.Sprintf("i%d", i), Service: "echo.rpc", Address: servers[i].Addr, Zone: z.zone, Version: z.version,
			}})
			return err
		})
	}
	agents := WithAgents([]string{c.GRPCAddr(0)})
	tests := []struct {
		name string
		opts []Option
		want []bool // which servers get calls
	}{
		{"version filter", []Option{WithFilter(VersionFilter("v1"))}, []bool{true, true, false}},
		{"prefer zone with instances", []Option{PreferZone("b")}, []bool{false, true, true}},
		{"prefer zone without instances falls back", []Option{PreferZone("c")}, []bool{true, true, true}},
		{"filter then zone", []Option{WithFilter(VersionFilter("v2")), PreferZone("a")}, []bool{false, false, true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := NewBuilder(append([]Option{agents}, tt.opts...)...)
			cc := dial(t, "zrpc:///echo.rpc", grpc.WithResolvers(b))
			got := callN(t, cc, servers, 90)
			for i, want := range tt.want {
				if (got[i] > 0) != want {
					t.Fatalf("90 calls went %v, want calls to servers %v", got, tt.want)
				}
			}
		})
	}
}

// fakeClientConn records what a resolver reports.
type fakeClientConn struct {
	resolver.ClientConn // not called; panics if it is
	mu                  sync.Mutex
	states              []resolver.State
	errs                []error
}

func (f *fakeClientConn) UpdateState(s resolver.State) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.states = append(f.states, s)
	return nil
}

func (f *fakeClientConn) ReportError(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.errs = append(f.errs, err)
}

func (f *fakeClientConn) ParseServiceConfig(string) *serviceconfig.ParseResult {
	return &serviceconfig.ParseResult{}
}

func (f *fakeClientConn) snapshot() ([]resolver.State, []error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]resolver.State(nil), f.states...), append([]error(nil), f.errs...)
}

func buildTarget(t *testing.T, b resolver.Builder, target string, cc resolver.ClientConn) (resolver.Resolver, error) {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatalf("parse %s: %v", target, err)
	}
	return b.Build(resolver.Target{URL: *u}, cc, resolver.BuildOptions{})
}

func TestZRPCResolverReportsErrorBeforeFirstList(t *testing.T) {
	fcc := &fakeClientConn{}
	b := NewBuilder(WithAgents([]string{testport.Unused(t)}), WithLogger(testlog.New(t, "resolver")))
	r, err := buildTarget(t, b, "zrpc:///echo.rpc", fcc)
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		states, errs := fcc.snapshot()
		if len(states) != 0 {
			t.Fatalf("resolver sent state %v without an agent", states)
		}
		if len(errs) > 0 {
			if !strings.Contains(errs[0].Error(), "echo.rpc") {
				t.Fatalf("reported error %q does not name the service", errs[0])
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("timed out waiting for the resolver to report an error")
		}
		time.Sleep(20 * time.Millisecond)
	}
	r.Close()
	r.Close() // safe twice
}

func TestZRPCResolverRejectsBadTargets(t *testing.T) {
	b := NewBuilder()
	for _, target := range []string{"zrpc:///", "zrpc:///a/b", "zrpc://not-an-addr/echo.rpc"} {
		if r, err := buildTarget(t, b, target, &fakeClientConn{}); err == nil {
			r.Close()
			t.Errorf("Build(%s) succeeded, want an error", target)
		}
	}
}

func TestDirectResolver(t *testing.T) {
	servers := grpctest.StartHealthServers(t, 2)
	cc := dial(t, fmt.Sprintf("direct:///%s,%s", servers[0].Addr, servers[1].Addr), grpc.WithResolvers(NewDirectBuilder()))
	if got := callN(t, cc, servers, 100); got[0] == 0 || got[1] == 0 {
		t.Fatalf("100 calls went %v, want some to each server", got)
	}
}

func TestDirectResolverBadEntry(t *testing.T) {
	servers := grpctest.StartHealthServers(t, 1)
	cc := dial(t, fmt.Sprintf("direct:///%s,bogus-entry", servers[0].Addr), grpc.WithResolvers(NewDirectBuilder()))
	err := check(cc)
	if err == nil || !strings.Contains(err.Error(), "bogus-entry") {
		t.Fatalf("call error = %v, want one naming bogus-entry", err)
	}
	if got := servers[0].Calls.Load(); got != 0 {
		t.Fatalf("server got %d calls through a target with a bad entry, want 0", got)
	}
}

// TestZRPCResolverStartsOnServiceLargerThanOneMessage: the resolver of a
// service whose instances total more than 64 MiB (the gRPC message cap)
// gets its whole address list from the watch's snapshot in parts.
func TestZRPCResolverStartsOnServiceLargerThanOneMessage(t *testing.T) {
	const n = 1300 // clienttest.LargeInstance: about 54 KB each
	c := testcluster.New(t, 1, testcluster.WithInstanceMetadataLimit(clienttest.LargeInstanceLimit))
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := clienttest.RegisterLarge(ctx, c.Registry(0), "big.rpc", n); err != nil {
		t.Fatal(err)
	}
	fcc := &fakeClientConn{}
	b := NewBuilder(WithAgents([]string{c.GRPCAddr(0)}), WithLogger(testlog.New(t, "resolver")))
	r, err := buildTarget(t, b, "zrpc:///big.rpc", fcc)
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	defer r.Close()
	c.WaitFor(time.Minute, fmt.Sprintf("the resolver reports %d addresses", n), func() bool {
		states, _ := fcc.snapshot()
		return len(states) > 0 && len(states[len(states)-1].Addresses) == n
	})
	if _, errs := fcc.snapshot(); len(errs) != 0 {
		t.Fatalf("the resolver reported errors: %v", errs)
	}
}

// silentRegistry takes every watch and sends nothing, as a hung agent.
type silentRegistry struct {
	zrpcpb.UnimplementedRegistryServer
}

func (silentRegistry) Watch(_ *zrpcpb.WatchRequest, st grpc.ServerStreamingServer[zrpcpb.WatchResponse]) error {
	<-st.Context().Done()
	return st.Context().Err()
}

func (silentRegistry) WatchMany(st grpc.BidiStreamingServer[zrpcpb.WatchManyRequest, zrpcpb.WatchManyResponse]) error {
	<-st.Context().Done()
	return st.Context().Err()
}

// TestZRPCResolverReportsAnAgentThatSendsNothing: an agent that takes the
// watch and sends nothing does not leave calls waiting for their
// deadlines: past firstListWait the resolver reports an error naming the
// service, and no list.
func TestZRPCResolverReportsAnAgentThatSendsNothing(t *testing.T) {
	defer func(d time.Duration) { firstListWait = d }(firstListWait)
	firstListWait = 200 * time.Millisecond
	agent := grpctest.Serve(t, func(s *grpc.Server) { zrpcpb.RegisterRegistryServer(s, silentRegistry{}) })
	fcc := &fakeClientConn{}
	r, err := buildTarget(t, NewBuilder(WithAgents([]string{agent}), WithLogger(testlog.New(t, "resolver"))), "zrpc:///echo.rpc", fcc)
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	defer r.Close()
	testwait.For(t, 10*time.Second, "the resolver to report the silent agent", func() bool {
		_, errs := fcc.snapshot()
		return len(errs) > 0
	})
	states, errs := fcc.snapshot()
	if len(states) != 0 || !strings.Contains(errs[0].Error(), "echo.rpc") || !strings.Contains(errs[0].Error(), "send nothing") {
		t.Fatalf("states %v, errors %v: want no list and an error naming echo.rpc and saying the agents send nothing", states, errs)
	}
}
