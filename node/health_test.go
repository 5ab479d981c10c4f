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
