package grpcapi

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"net"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/internal/grpctest"
)

// goroutineStatus answers Version with nothing and records the goroutine
// each call ran on.
type goroutineStatus struct {
	pb.UnimplementedStatusServer
	mu  sync.Mutex
	ran map[uint64]bool
}

func (s *goroutineStatus) Version(context.Context, *pb.VersionRequest) (*pb.VersionResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ran[goroutineID()] = true
	return &pb.VersionResponse{}, nil
}

// goroutineID is the current goroutine's number, read off its stack trace
// ("goroutine 42 [running]:").
func goroutineID() uint64 {
	buf := make([]byte, 64)
	buf = buf[:runtime.Stack(buf, false)]
	buf = bytes.TrimPrefix(buf, []byte("goroutine "))
	id, _ := strconv.ParseUint(string(buf[:bytes.IndexByte(buf, ' ')]), 10, 64)
	return id
}

// TestServerRunsCallsOnReusedGoroutines: the agent's server runs calls on
// its stream workers, which keep their grown stacks from call to call,
// instead of starting (and growing) a new goroutine for every call.
func TestServerRunsCallsOnReusedGoroutines(t *testing.T) {
	st := &goroutineStatus{ran: make(map[uint64]bool)}
	s := NewServer(ServerConfig{Metrics: keyringNoMetrics{}, Proofs: AgentProofs{Secret: func() []byte { return nil }}},
		Services{Status: st})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(ln) }()
	t.Cleanup(func() {
		s.Stop()
		if err := <-served; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	c := pb.NewStatusClient(conn)

	calls := 3 * streamWorkers
	for i := range calls {
		if _, err := c.Version(context.Background(), &pb.VersionRequest{}); err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if len(st.ran) > streamWorkers {
		t.Fatalf("%d sequential calls ran on %d goroutines, want at most the %d stream workers", calls, len(st.ran), streamWorkers)
	}
}

// TestClusterAuthAllocatesNothingOnceMethodIsProven: the proof of a
// method is computed once per secret and then reused; a new secret gets
// its own proofs, equal to the HMAC of the method.
func TestClusterAuthAllocatesNothingOnceMethodIsProven(t *testing.T) {
	method := pb.Internal_Apply_FullMethodName
	want := func(secret []byte) string {
		mac := hmac.New(sha256.New, secret)
		mac.Write([]byte(method))
		return hex.EncodeToString(mac.Sum(nil))
	}
	for _, secret := range [][]byte{[]byte("first secret"), []byte("second secret"), []byte("first secret")} {
		if got := ClusterAuth(secret, method); got != want(secret) {
			t.Fatalf("ClusterAuth(%q) = %s, want %s", secret, got, want(secret))
		}
		if allocs := testing.AllocsPerRun(100, func() { ClusterAuth(secret, method) }); allocs != 0 {
			t.Errorf("ClusterAuth of a proven method allocates %.0f times per call, want 0", allocs)
		}
	}
}

// TestServerGrantsCallersStaticWindows: the agent's server grants every
// connection a 4 MiB window per stream and 16 MiB for the connection from
// its first SETTINGS and WINDOW_UPDATE, so that a client streaming shards
// does not wait for gRPC to grow the windows (nor pay its window updates
// and pings).
func TestServerGrantsCallersStaticWindows(t *testing.T) {
	addr := serveTest(t, Services{Status: &goroutineStatus{ran: make(map[uint64]bool)}})
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(20 * time.Second))
	w, err := grpctest.ServerWindows(conn)
	if err != nil {
		t.Fatal(err)
	}
	if w.Stream != uint32(StreamWindow) || w.Conn != uint32(ConnWindow) {
		t.Fatalf("server granted %d bytes per stream and %d per connection; want %d and %d",
			w.Stream, w.Conn, StreamWindow, ConnWindow)
	}
}
