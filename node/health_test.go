package node

import (
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
)

func TestSessionEndRemovesItsInstances(t *testing.T) {
	n := startNode(t, testConfig(t))
	_, c := dial(t, n.GRPCAddr())
	cases := []struct {
		name string
		end  func(conn interface{ Close() error }, stream pb.Registry_SessionClient)
	}{
		// The process closes its stream cleanly.
		{"clean close", func(_ interface{ Close() error }, s pb.Registry_SessionClient) { s.CloseSend() }},
		// The process dies: its connection goes away without a goodbye.
		{"connection dropped", func(conn interface{ Close() error }, _ pb.Registry_SessionClient) { conn.Close() }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			conn, _ := dial(t, n.GRPCAddr())
			stream, err := pb.NewRegistryClient(conn).Session(ctxT(t))
			if err != nil {
				t.Fatal(err)
			}
			send := func(req *pb.SessionRequest) *pb.SessionResponse {
				t.Helper()
				if err := stream.Send(req); err != nil {
					t.Fatal(err)
				}
				resp, err := stream.Recv()
				if err != nil {
					t.Fatal(err)
				}
				if resp.Seq != req.Seq || resp.Error != nil {
					t.Fatalf("response %v to seq %d", resp, req.Seq)
				}
				return resp
			}
			open := send(&pb.SessionRequest{Seq: 1, Kind: &pb.SessionRequest_Open{Open: &pb.SessionOpen{Owner: "test"}}})
			if open.Session == "" {
				t.Fatal("open returned no session id")
			}
			for i, id := range []string{"s1", "s2"} {
				r := send(&pb.SessionRequest{Seq: uint64(2 + i), Kind: &pb.SessionRequest_Register{
					Register: &pb.RegisterRequest{Instance: inst("sess.rpc", id, "127.0.0.1:9001")}}})
				if r.Instance.Session != open.Session {
					t.Fatalf("instance bound to %q, want %q", r.Instance.Session, open.Session)
				}
			}
			// An instance registered without a session outlives the stream.
			if _, err := c.Register(ctxT(t), &pb.RegisterRequest{Instance: inst("sess.rpc", "plain", "127.0.0.1:9002")}); err != nil {
				t.Fatal(err)
			}
			if got := len(getInstances(t, c, "sess.rpc")); got != 3 {
				t.Fatalf("%d instances, want 3", got)
			}
			tc.end(conn, stream)
			waitFor(t, 5*time.Second, "session instances removed", func() bool {
				insts := getInstances(t, c, "sess.rpc")
				return len(insts) == 1 && insts[0].Id == "plain"
			})
			if s := n.Store().FSM().Sessions(); len(s) != 0 {
				t.Fatalf("sessions left: %v", s)
			}
			if _, err := c.Deregister(ctxT(t), &pb.DeregisterRequest{Service: "sess.rpc", Id: "plain"}); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestSessionRejectsRequestsBeforeOpen(t *testing.T) {
	n := startNode(t, testConfig(t))
	_, c := dial(t, n.GRPCAddr())
	stream, err := c.Session(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	stream.Send(&pb.SessionRequest{Kind: &pb.SessionRequest_Keepalive{Keepalive: &pb.SessionKeepAlive{}}})
	if _, err := stream.Recv(); err == nil {
		t.Fatal("session without open was accepted")
	}
}

func TestTTLExpiryThenRemoval(t *testing.T) {
	n := startNode(t, testConfig(t))
	_, c := dial(t, n.GRPCAddr())
	ctx := ctxT(t)
	in := inst("ttl.rpc", "t1", "127.0.0.1:9001")
	in.Check = &pb.Check{Ttl: durationpb.New(time.Second), DeregisterCriticalAfter: durationpb.New(time.Second)}
	if _, err := c.Register(ctx, &pb.RegisterRequest{Instance: in}); err != nil {
		t.Fatal(err)
	}
	if h := healthOf(t, c, "ttl.rpc", "t1"); h != pb.Health_PASSING {
		t.Fatalf("health after register = %v", h)
	}
	waitFor(t, 5*time.Second, "TTL expiry turns the instance critical", func() bool {
		return healthOf(t, c, "ttl.rpc", "t1") == pb.Health_CRITICAL
	})
	// A renewal brings it back.
	if _, err := c.RenewTTL(ctx, &pb.RenewTTLRequest{Service: "ttl.rpc", Id: "t1"}); err != nil {
		t.Fatal(err)
	}
	if h := healthOf(t, c, "ttl.rpc", "t1"); h != pb.Health_PASSING {
		t.Fatalf("health after renew = %v", h)
	}
	// Without renewals it turns critical again and is removed after
	// deregister_critical_after.
	waitFor(t, 5*time.Second, "critical again", func() bool { return healthOf(t, c, "ttl.rpc", "t1") == pb.Health_CRITICAL })
	waitFor(t, 5*time.Second, "removed", func() bool { return len(getInstances(t, c, "ttl.rpc")) == 0 })

	if _, err := c.RenewTTL(ctx, &pb.RenewTTLRequest{Service: "ttl.rpc", Id: "t1"}); err == nil {
		t.Fatal("renew of a removed instance succeeded")
	}
}

func TestTTLRenewalsKeepInstancePassing(t *testing.T) {
	n := startNode(t, testConfig(t))
	_, c := dial(t, n.GRPCAddr())
	ctx := ctxT(t)
	in := inst("ttl.rpc", "t1", "127.0.0.1:9001")
	in.Check = &pb.Check{Ttl: durationpb.New(time.Second)}
	reg, err := c.Register(ctx, &pb.RegisterRequest{Instance: in})
	if err != nil {
		t.Fatal(err)
	}
	// Renew every 200ms for 3 TTLs: the instance stays passing, and renewals
	// cost no Raft write (its mod_revision does not move).
	for i := 0; i < 15; i++ {
		if _, err := c.RenewTTL(ctx, &pb.RenewTTLRequest{Service: "ttl.rpc", Id: "t1"}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	got := getInstances(t, c, "ttl.rpc")[0]
	if got.Health != pb.Health_PASSING || got.ModRevision != reg.Instance.ModRevision {
		t.Fatalf("instance while renewed = %v, want passing at mod_revision %d", got, reg.Instance.ModRevision)
	}
	// Renewing an instance without a TTL check is an error.
	if _, err := c.Register(ctx, &pb.RegisterRequest{Instance: inst("plain.rpc", "p1", "127.0.0.1:9002")}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.RenewTTL(ctx, &pb.RenewTTLRequest{Service: "plain.rpc", Id: "p1"}); err == nil {
		t.Fatal("renew of an instance without TTL succeeded")
	}
}

func TestGRPCHealthCheckFlipsHealth(t *testing.T) {
	n := startNode(t, testConfig(t))
	_, c := dial(t, n.GRPCAddr())

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	hs := health.NewServer()
	healthpb.RegisterHealthServer(srv, hs)
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)

	in := inst("checked.rpc", "c1", ln.Addr().String())
	in.Check = &pb.Check{Grpc: true, Interval: durationpb.New(100 * time.Millisecond), Timeout: durationpb.New(50 * time.Millisecond)}
	r, err := c.Register(ctxT(t), &pb.RegisterRequest{Instance: in})
	if err != nil {
		t.Fatal(err)
	}
	if r.Instance.Health != pb.Health_CRITICAL {
		t.Fatalf("a gRPC-checked instance starts %v, want critical until its first check", r.Instance.Health)
	}
	waitFor(t, 5*time.Second, "first check passes", func() bool { return healthOf(t, c, "checked.rpc", "c1") == pb.Health_PASSING })
	hs.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	waitFor(t, 5*time.Second, "NOT_SERVING turns critical", func() bool { return healthOf(t, c, "checked.rpc", "c1") == pb.Health_CRITICAL })
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	waitFor(t, 5*time.Second, "SERVING turns passing", func() bool { return healthOf(t, c, "checked.rpc", "c1") == pb.Health_PASSING })
	srv.Stop()
	waitFor(t, 5*time.Second, "a dead server turns critical", func() bool { return healthOf(t, c, "checked.rpc", "c1") == pb.Health_CRITICAL })

	// Only passing instances are routable.
	resp, err := c.Get(ctxT(t), &pb.GetRequest{Service: "checked.rpc", PassingOnly: true})
	if err != nil || len(resp.Instances) != 0 {
		t.Fatalf("passing-only Get = %v, %v; want none", resp.GetInstances(), err)
	}
}

// TestTTLRenewedWhileTheSweepJudgesStaysPassing: a renewal that reaches the
// leader after a sweep has judged the instance's TTL expired, but before
// the sweep writes, wins: the instance is never marked critical. The sweep
// runs by hand on a fake clock; the renewal runs at the exact moment
// between the sweep's judgement and its write.
func TestTTLRenewedWhileTheSweepJudgesStaysPassing(t *testing.T) {
	cfg := testConfig(t)
	cfg.HealthInterval = time.Hour // no sweeps but the test's own
	n := startNode(t, cfg)
	_, c := dial(t, n.GRPCAddr())
	ctx := ctxT(t)
	const ttl = time.Minute
	in := inst("ttl.rpc", "t1", "127.0.0.1:9001")
	in.Check = &pb.Check{Ttl: durationpb.New(ttl)}
	if _, err := c.Register(ctx, &pb.RegisterRequest{Instance: in}); err != nil {
		t.Fatal(err)
	}
	renewed := false
	n.ttl.judged = func() {
		if renewed {
			return
		}
		renewed = true
		if _, err := c.RenewTTL(ctx, &pb.RenewTTLRequest{Service: "ttl.rpc", Id: "t1"}); err != nil {
			t.Errorf("renew: %v", err)
		}
	}
	// The first sweep starts the TTL; each later one is two TTLs on, so it
	// judges the TTL expired (a leadership start may reset the deadlines
	// once, hence the loop).
	now := time.Now()
	for i := 0; i < 4 && !renewed; i++ {
		n.sweepHealth(ctx, now)
		now = now.Add(2 * ttl)
	}
	if !renewed {
		t.Fatal("no sweep judged the TTL expired")
	}
	if h := healthOf(t, c, "ttl.rpc", "t1"); h != pb.Health_PASSING {
		t.Fatalf("health after a renewal that beat the sweep's write = %v, want passing", h)
	}
	// Not renewed again: the next sweep past the deadline does expire it.
	n.sweepHealth(ctx, time.Now().Add(2*ttl))
	if h := healthOf(t, c, "ttl.rpc", "t1"); h != pb.Health_CRITICAL {
		t.Fatalf("health after the TTL ran out = %v, want critical", h)
	}
}

// TestTTLTrackerOrdersSweepsAndRenewals: a renewal before the sweep's
// claim voids the sweep's verdict; a renewal after it is told to wait for
// the sweep's write, and is released when the write is done.
func TestTTLTrackerOrdersSweepsAndRenewals(t *testing.T) {
	tr := newTTLTracker()
	a := &pb.Instance{Service: "ttl.rpc", Id: "a", ModRevision: 7, Health: pb.Health_PASSING, Check: &pb.Check{Ttl: durationpb.New(time.Second)}}
	b := &pb.Instance{Service: "ttl.rpc", Id: "b", ModRevision: 8, Health: pb.Health_PASSING, Check: &pb.Check{Ttl: durationpb.New(time.Second)}}
	t0 := time.Unix(1000, 0)
	var verdicts []verdict
	for _, in := range []*pb.Instance{a, b} {
		tr.expired(in, t0) // starts the TTL
		ok, gen := tr.expired(in, t0.Add(2*time.Second))
		if !ok {
			t.Fatalf("%s not expired two TTLs on", in.Id)
		}
		verdicts = append(verdicts, verdict{in, gen})
	}
	if wait := tr.renew(a, t0.Add(2*time.Second)); wait != nil {
		t.Fatal("a renewal with no sweep in flight was told to wait")
	}
	done := make(chan struct{})
	claimed := tr.claim(verdicts, done)
	if len(claimed) != 1 || claimed[0].Id != "b" {
		t.Fatalf("claimed %v, want only b (a was renewed after the verdict)", claimed)
	}
	wait := tr.renew(b, t0.Add(2*time.Second))
	if wait == nil {
		t.Fatal("a renewal during the sweep's write was not told to wait")
	}
	select {
	case <-wait:
		t.Fatal("released before the sweep's write was done")
	default:
	}
	tr.release(done)
	select {
	case <-wait:
	default:
		t.Fatal("not released after the sweep's write")
	}
	if wait := tr.renew(b, t0.Add(3*time.Second)); wait != nil {
		t.Fatal("told to wait after the sweep was done")
	}
}
