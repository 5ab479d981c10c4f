package node

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/internal/testlog"
	"github.com/zrpcio/zrpc/internal/testwait"
	"github.com/zrpcio/zrpc/node/grpcapi"
)

// panicService is a gRPC service whose unary and stream methods panic.
var panicService = grpc.ServiceDesc{
	ServiceName: "zrpc.test.Panic",
	HandlerType: (*any)(nil),
	Methods: []grpc.MethodDesc{{
		MethodName: "Unary",
		Handler: func(srv any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
			var in emptypb.Empty
			if err := dec(&in); err != nil {
				return nil, err
			}
			h := func(context.Context, any) (any, error) {
				panic("boom: a handler bug")
			}
			return interceptor(ctx, &in, &grpc.UnaryServerInfo{Server: srv, FullMethod: "/zrpc.test.Panic/Unary"}, h)
		},
	}},
	Streams: []grpc.StreamDesc{{
		StreamName:    "Stream",
		ServerStreams: true,
		Handler: func(any, grpc.ServerStream) error {
			var s []int
			_ = s[3] // index out of range
			return nil
		},
	}},
}

func TestHandlerPanicAnswersInternalAndAgentKeepsServing(t *testing.T) {
	var logs testlog.Buffer
	n := startNode(t, testConfig(t), WithLogger(slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelError}))))

	// A server built with the agent's interceptors, serving handlers that
	// panic. Without recovery, the first call would end the test process.
	s := grpc.NewServer(grpcapi.Interceptors(n.apiServerConfig())...)
	s.RegisterService(&panicService, struct{}{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(ln)
	t.Cleanup(s.Stop)
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	ctx := ctxT(t)

	const unary, stream = "/zrpc.test.Panic/Unary", "/zrpc.test.Panic/Stream"
	for range 2 {
		err := conn.Invoke(ctx, unary, &emptypb.Empty{}, &emptypb.Empty{})
		if st := status.Convert(err); st.Code() != codes.Internal || st.Message() != "internal error" {
			t.Fatalf("unary call to a panicking handler: %v, want Internal \"internal error\"", err)
		}
	}
	cs, err := conn.NewStream(ctx, &panicService.Streams[0], stream)
	if err != nil {
		t.Fatal(err)
	}
	if err := cs.SendMsg(&emptypb.Empty{}); err != nil {
		t.Fatal(err)
	}
	cs.CloseSend()
	err = cs.RecvMsg(&emptypb.Empty{})
	if st := status.Convert(err); st.Code() != codes.Internal || st.Message() != "internal error" {
		t.Fatalf("stream call to a panicking handler: %v, want Internal \"internal error\"", err)
	}

	metrics := httpGet(t, n, "/metrics")
	for _, want := range []string{
		`zrpc_grpc_panics_total{method="` + unary + `"} 2`,
		`zrpc_grpc_panics_total{method="` + stream + `"} 1`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	// The agent itself still answers.
	_, c := dial(t, n.GRPCAddr())
	if _, err := c.Register(ctx, &pb.RegisterRequest{Instance: inst("user.rpc", "u1", "127.0.0.1:9001")}); err != nil {
		t.Fatalf("Register after panics: %v", err)
	}
	logged := logs.String()
	for _, want := range []string{"panic in gRPC handler", "method=" + unary, "method=" + stream, "boom: a handler bug", "goroutine "} {
		if !strings.Contains(logged, want) {
			t.Errorf("agent log lacks %q:\n%s", want, logged)
		}
	}
}

// httpGet returns the body of the agent's HTTP endpoint path, failing the
// test unless it answers 200.
func httpGet(t testing.TB, n *Node, path string) string {
	t.Helper()
	resp, err := http.Get("http://" + n.HTTPAddr() + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %v", path, resp.StatusCode, err)
	}
	return string(b)
}

// TestGRPCPortBoundsTheConnectionsOfOneClient: with max_conns_per_client
// 3, a fourth connection from 127.0.0.1 is closed as it comes, counted in
// zrpc_grpc_connections_refused_total and warned of; a client from
// 127.0.0.2 is served meanwhile.
func TestGRPCPortBoundsTheConnectionsOfOneClient(t *testing.T) {
	var logs testlog.Buffer
	cfg := testConfig(t)
	cfg.MaxConnsPerClient = 3
	n := startNode(t, cfg, WithLogger(slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))))
	for range 3 {
		c, err := net.Dial("tcp", n.GRPCAddr())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
	}
	c, err := net.Dial("tcp", n.GRPCAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadAll(c); err != nil {
		t.Fatalf("the fourth connection from 127.0.0.1 was not closed: %v", err)
	}

	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}}
	conn, err := grpc.NewClient(n.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) { return d.DialContext(ctx, "tcp", addr) }))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := pb.NewStatusClient(conn).Status(ctxT(t), &pb.StatusRequest{}); err != nil {
		t.Fatalf("a client from 127.0.0.2: %v", err)
	}
	if !strings.Contains(logs.String(), "client=127.0.0.1") || !strings.Contains(logs.String(), "max_conns_per_client") {
		t.Errorf("no warning naming 127.0.0.1 and max_conns_per_client:\n%s", logs.String())
	}
	resp, err := http.Get("http://" + n.HTTPAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), "\nzrpc_grpc_connections_refused_total 1\n") {
		t.Errorf("/metrics lacks zrpc_grpc_connections_refused_total 1")
	}
}

// TestAgentBoundsItsWatchAndSessionStreams: an agent with max_watches 2
// and max_sessions 1 serves two Watch streams and one Session; the next
// of each is refused at once, ResourceExhausted naming its limit (the web
// UI's live stream, also a watch, 503), counted in
// zrpc_registry_streams_refused_total and warned of, while the open ones
// go on; once a watch ends, a new one is served.
func TestAgentBoundsItsWatchAndSessionStreams(t *testing.T) {
	var logs testlog.Buffer
	cfg := testConfig(t)
	cfg.MaxWatches, cfg.MaxSessions = 2, 1
	n := startNode(t, cfg, WithLogger(slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))))
	conn, err := grpc.NewClient(n.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	reg := pb.NewRegistryClient(conn)
	ctx := ctxT(t)

	watch := func(service string) (context.CancelFunc, error) {
		wctx, cancel := context.WithCancel(ctx)
		s, err := reg.Watch(wctx, &pb.WatchRequest{Service: service})
		if err == nil {
			_, err = s.Recv() // the snapshot, or the refusal
		}
		if err != nil {
			cancel()
			return nil, err
		}
		return cancel, nil
	}
	first, err := watch("a.rpc")
	if err != nil {
		t.Fatalf("first watch: %v", err)
	}
	if _, err := watch("b.rpc"); err != nil {
		t.Fatalf("second watch: %v", err)
	}
	_, err = watch("c.rpc")
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "max_watches") {
		t.Fatalf("third watch: %v, want ResourceExhausted naming max_watches", err)
	}
	// The web UI's live stream is a watch too.
	hc := http.Client{Timeout: 5 * time.Second}
	resp, err := hc.Get("http://" + n.HTTPAddr() + "/ui/api/events")
	if err != nil {
		t.Fatalf("GET /ui/api/events: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), "max_watches") {
		t.Fatalf("GET /ui/api/events at the limit: %d %s, want 503 naming max_watches", resp.StatusCode, body)
	}

	sess, err := reg.Session(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := sess.Send(&pb.SessionRequest{Kind: &pb.SessionRequest_Open{Open: &pb.SessionOpen{Owner: "first"}}}); err != nil {
		t.Fatal(err)
	}
	if resp, err := sess.Recv(); err != nil || resp.GetSession() == "" {
		t.Fatalf("first session: %v, %v", resp, err)
	}
	second, err := reg.Session(ctx)
	if err != nil {
		t.Fatal(err)
	}
	second.Send(&pb.SessionRequest{Kind: &pb.SessionRequest_Open{Open: &pb.SessionOpen{Owner: "second"}}})
	if _, err := second.Recv(); status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "max_sessions") {
		t.Fatalf("second session: %v, want ResourceExhausted naming max_sessions", err)
	}
	// The open session is still served.
	if err := sess.Send(&pb.SessionRequest{Kind: &pb.SessionRequest_Keepalive{Keepalive: &pb.SessionKeepAlive{}}, Seq: 7}); err != nil {
		t.Fatal(err)
	}
	if resp, err := sess.Recv(); err != nil || resp.GetSeq() != 7 || resp.GetError() != nil {
		t.Fatalf("keepalive on the open session: %v, %v", resp, err)
	}

	st, err := pb.NewStatusClient(conn).Status(ctx, &pb.StatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if st.GetWatchStreams() != 2 || st.GetMaxWatches() != 2 || st.GetSessionStreams() != 1 || st.GetMaxSessions() != 1 {
		t.Errorf("Status says %d of %d watches, %d of %d sessions; want 2 of 2, 1 of 1",
			st.GetWatchStreams(), st.GetMaxWatches(), st.GetSessionStreams(), st.GetMaxSessions())
	}
	metrics := httpGet(t, n, "/metrics")
	for _, want := range []string{
		"\nzrpc_registry_streams_refused_total{kind=\"Watch\"} 2\n",
		"\nzrpc_registry_streams_refused_total{kind=\"Session\"} 1\n",
		"\nzrpc_registry_session_streams 1\n",
		"\nzrpc_registry_watchers 2\n",
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %q", strings.TrimSpace(want))
		}
	}
	for _, want := range []string{"max_watches", "max_sessions"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("no warning naming %s:\n%s", want, logs.String())
		}
	}

	first()
	testwait.For(t, 10*time.Second, "a watch served after another ended", func() bool {
		_, err := watch("c.rpc")
		return err == nil
	})
}
