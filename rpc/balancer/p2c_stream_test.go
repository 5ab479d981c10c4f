package balancer

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/balancer"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	_ "google.golang.org/grpc/reflection/grpc_reflection_v1" // registers ServerReflectionInfo, a bidi stream
	"google.golang.org/grpc/status"

	"github.com/zrpcio/zrpc/internal/grpctest"
	"github.com/zrpcio/zrpc/rpc/clientchain"
)

// Methods of grpc's health service, whose generated package registers its
// descriptors: Watch streams replies, Check answers once.
const (
	watchMethod = "/grpc.health.v1.Health/Watch"
	checkMethod = "/grpc.health.v1.Health/Check"
)

func TestStreamMethodsTellStreamsFromUnaryCalls(t *testing.T) {
	cases := []struct {
		method string
		stream bool
	}{
		{checkMethod, false},
		{watchMethod, true},
		{"/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", true},
		{"/grpc.health.v1.Health/Nope", false},              // no such method
		{"/grpc.health.v1.HealthCheckRequest/Check", false}, // a message, not a service
		{"/svc/Method", false},                              // not in the registry
		{"/grpc.health.v1.Health", false},
		{"", false},
	}
	var s streamMethods
	for range 2 { // the second time from what s keeps
		for _, tc := range cases {
			if got := s.stream(tc.method); got != tc.stream {
				t.Fatalf("stream(%q) = %v, want %v", tc.method, got, tc.stream)
			}
		}
	}

	// Many pickers asking at once get the same answers.
	var fresh streamMethods
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for _, tc := range cases {
				if got := fresh.stream(tc.method); got != tc.stream {
					t.Errorf("concurrent stream(%q) = %v, want %v", tc.method, got, tc.stream)
				}
			}
		})
	}
	wg.Wait()
}

// openStream picks sc (the others excluded) for a Watch stream, which the
// caller ends with Done.
func openStream(t *testing.T, sim *p2cSim, scs []*fakeSubConn, sc *fakeSubConn) balancer.PickResult {
	t.Helper()
	ctx := context.Background()
	for _, other := range scs {
		if other != sc {
			ctx = clientchain.WithExcluded(ctx, other.addr)
		}
	}
	res := pickMethod(t, sim.p, ctx, watchMethod)
	if res.SubConn != sc {
		t.Fatalf("stream picked %v, want %v", res.SubConn, sc)
	}
	return res
}

// A subscription or a watch is a pick whose Done comes when the stream
// ends, minutes on. It is no slow call: the instance holding it gets its
// share of the unary calls.
func TestP2CInstanceHoldingAStreamGetsItsShareOfUnaryCalls(t *testing.T) {
	scs := newSubConns(2)
	sim := newP2CSim(t, scs)
	sim.run(200) // both answer unary calls in 3 ms
	stream := openStream(t, sim, scs, scs[0])
	defer stream.Done(balancer.DoneInfo{Err: status.Error(codes.Canceled, "test over")})
	sim.idle(10 * time.Minute)

	counts := sim.run(2000)
	if s := share(counts, scs[0]); s < 0.4 {
		t.Fatalf("%s, as fast as the other, got %.1f%% of 2000 unary calls while holding a 10-minute-old stream, want at least 40%%: %v",
			scs[0], 100*s, counts)
	}
}

// A stream's life is not a latency: when a 10-minute stream ends, its
// instance is as cheap as before.
func TestP2CEndedStreamIsNoLatencySample(t *testing.T) {
	for _, code := range []codes.Code{codes.OK, codes.Canceled, codes.DeadlineExceeded} {
		t.Run(code.String(), func(t *testing.T) {
			scs := newSubConns(2)
			sim := newP2CSim(t, scs)
			sim.run(200)
			stream := openStream(t, sim, scs, scs[0])
			sim.idle(10 * time.Minute)
			sim.run(200)
			stream.Done(balancer.DoneInfo{Err: status.Error(code, "stream over")}) // nil for OK

			counts := sim.run(1000)
			if s := share(counts, scs[0]); s < 0.4 {
				t.Fatalf("%s got %.1f%% of 1000 unary calls after a 10-minute stream ended with %v, want at least 40%%: %v",
					scs[0], 100*s, code, counts)
			}
		})
	}
}

// A stream failing through its instance's fault (refused, cut off) says
// what a failed unary call says and pushes the instance away as one does;
// a stream the caller ended or whose deadline passed does not.
func TestP2CStreamFailingThroughItsInstanceCountsAsFailure(t *testing.T) {
	for _, tc := range []struct {
		code    codes.Code
		avoided bool
	}{
		{codes.Unavailable, true},
		{codes.Unimplemented, true},
		{codes.ResourceExhausted, true},
		{codes.DeadlineExceeded, false},
		{codes.Canceled, false},
		{codes.NotFound, false},
	} {
		t.Run(tc.code.String(), func(t *testing.T) {
			scs := newSubConns(2)
			sim := newP2CSim(t, scs)
			sim.run(200)
			stream := openStream(t, sim, scs, scs[0])
			sim.run(100)
			stream.Done(balancer.DoneInfo{Err: status.Error(tc.code, "stream failed")})

			counts := sim.run(200) // 200 ms
			if tc.avoided && counts[scs[0]] > 0 {
				t.Fatalf("%s got %d of 200 calls just after its stream failed with %v, want none: %v",
					scs[0], counts[scs[0]], tc.code, counts)
			}
			if s := share(counts, scs[0]); !tc.avoided && s < 0.3 {
				t.Fatalf("%s got %.1f%% of 200 calls after its stream ended with %v, want a fair share: %v",
					scs[0], 100*s, tc.code, counts)
			}
		})
	}
}

// Leaving streams out of the calls in flight keeps hung unary calls
// counted: an instance whose calls hang is still avoided while the other
// holds a 10-minute-old stream.
func TestP2CStopsPickingAHungInstanceWhileTheOtherHoldsAStream(t *testing.T) {
	scs := newSubConns(2)
	sim := newP2CSim(t, scs)
	sim.run(200)
	stream := openStream(t, sim, scs, scs[1])
	defer stream.Done(balancer.DoneInfo{Err: status.Error(codes.Canceled, "test over")})
	sim.idle(10 * time.Minute)
	sim.latency = func(sc balancer.SubConn) time.Duration {
		if sc == scs[0] {
			return time.Hour // hangs
		}
		return 3 * time.Millisecond
	}
	counts := sim.run(2000)
	if counts[scs[0]] > 10 {
		t.Fatalf("the hung instance got %d of 2000 calls (%v) because the other holds a stream; want a handful",
			counts[scs[0]], counts)
	}
}

// The same through grpc: with a Health.Watch stream held open on one of
// two servers, Checks on the same ClientConn, one a millisecond, reach
// both. How evenly depends on loopback latencies (one slow answer holds a
// server back for a few 100 ms time constants), so the test waits, up to
// a deadline, until each has answered some; a server starved by its
// stream answers none.
func TestIntegrationP2CServerHoldingAWatchIsNotStarved(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	servers := grpctest.StartHealthServers(t, 2)
	cc, _ := dial(t, P2CEWMA, addresses(servers, 0, 0))
	warmUp(t, ctx, cc, servers)
	watch, err := healthpb.NewHealthClient(cc).Watch(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := watch.Recv(); err != nil {
		t.Fatal(err)
	}

	const want = 20
	deadline := time.Now().Add(5 * time.Second)
	got := make([]int64, len(servers))
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for slices.Min(got) < want {
		if time.Now().After(deadline) {
			t.Fatalf("with a Watch open on one server, Checks answered per server %v after 5 s, want %d by each", got, want)
		}
		<-tick.C
		for i, n := range callN(t, ctx, cc, servers, 1) {
			got[i] += n
		}
	}
}
