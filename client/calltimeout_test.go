package client

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/client/clienttest"
	"github.com/zrpcio/zrpc/internal/grpctest"
)

// testCallTimeout is the CallTimeout of the tests' clients: short, so
// that they see it pass.
const testCallTimeout = 300 * time.Millisecond

// finishes runs call and returns its error, failing t when it has not
// returned within 10 s: a call nothing bounds would hold the test for
// good.
func finishes(t *testing.T, what string, call func() error) error {
	t.Helper()
	errc := make(chan error, 1)
	go func() { errc <- call() }()
	select {
	case err := <-errc:
		return err
	case <-time.After(10 * time.Second):
		t.Fatalf("%s did not return: nothing bounds it", what)
		return nil
	}
}

// unansweringAgent is a fake agent that takes every registry and status
// call and answers none until its caller gives up, while it answers its
// health checks and its connection's pings: an agent whose handler hangs.
func unansweringAgent(t *testing.T) *clienttest.Agent {
	hang := func(ctx context.Context) error {
		<-ctx.Done()
		return ctx.Err()
	}
	return (&clienttest.Agent{
		OnRegister: func(ctx context.Context, _ *zrpcpb.RegisterRequest) (*zrpcpb.RegisterResponse, error) {
			return nil, hang(ctx)
		},
		OnDeregister: func(ctx context.Context, _ *zrpcpb.DeregisterRequest) (*zrpcpb.DeregisterResponse, error) {
			return nil, hang(ctx)
		},
		OnRenewTTL: func(ctx context.Context, _ *zrpcpb.RenewTTLRequest) (*zrpcpb.RenewTTLResponse, error) {
			return nil, hang(ctx)
		},
		OnGet: func(ctx context.Context, _ *zrpcpb.GetRequest) (*zrpcpb.GetResponse, error) { return nil, hang(ctx) },
		OnStatus: func(ctx context.Context, _ *zrpcpb.StatusRequest) (*zrpcpb.StatusResponse, error) {
			return nil, hang(ctx)
		},
	}).Start(t)
}

// TestCallWithoutADeadlineEndsAfterCallTimeout: a call whose context has
// no deadline, to agents that take it and never answer while they answer
// health checks, fails after the client's CallTimeout with
// DeadlineExceeded, saying which timeout ended it; it does not wait for
// good.
func TestCallWithoutADeadlineEndsAfterCallTimeout(t *testing.T) {
	a, b := unansweringAgent(t), unansweringAgent(t)
	c, err := New(Config{Endpoints: []string{a.Addr, b.Addr}, CallTimeout: testCallTimeout, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	inst := &zrpcpb.Instance{Service: "user.rpc", Id: "u1", Address: "10.0.0.1:9000"}
	ctx := context.Background() // no deadline: the client's is the only bound
	for _, tc := range []struct {
		name string
		call func() error
	}{
		{"Register", func() error { _, _, err := c.Register(ctx, inst); return err }},
		{"Deregister", func() error { _, err := c.Deregister(ctx, "user.rpc", "u1"); return err }},
		{"RenewTTL", func() error { return c.RenewTTL(ctx, "user.rpc", "u1") }},
		{"Get", func() error { _, _, err := c.Get(ctx, "user.rpc"); return err }},
		{"Status", func() error { _, err := c.Status(ctx); return err }},
	} {
		err := finishes(t, tc.name+" without a deadline", tc.call)
		if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "CallTimeout") {
			t.Errorf("%s to agents that never answer = %v, want DeadlineExceeded naming CallTimeout", tc.name, err)
		}
	}
}

// TestCallersDeadlineOutlastsCallTimeout: a call whose context has a
// deadline is bounded by it alone, longer than CallTimeout too: an agent
// that answers after CallTimeout has passed is waited for.
func TestCallersDeadlineOutlastsCallTimeout(t *testing.T) {
	agent := (&clienttest.Agent{OnGet: func(ctx context.Context, _ *zrpcpb.GetRequest) (*zrpcpb.GetResponse, error) {
		select {
		case <-time.After(3 * testCallTimeout): // a slow answer
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		return &zrpcpb.GetResponse{Header: &zrpcpb.ResponseHeader{Revision: 3}}, nil
	}}).Start(t)
	c, err := New(Config{Endpoints: []string{agent.Addr}, CallTimeout: testCallTimeout, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, rev, err := c.Get(testContext(t), "user.rpc"); err != nil || rev != 3 {
		t.Fatalf("Get with the caller's deadline past CallTimeout = revision %d, %v; want the agent's answer", rev, err)
	}
}

// slowSnapshotAgent streams a snapshot in two chunks with a pause of
// several CallTimeouts between them, as a large snapshot takes long.
type slowSnapshotAgent struct {
	zrpcpb.UnimplementedSnapshotServer
}

func (slowSnapshotAgent) Save(_ *zrpcpb.SnapshotSaveRequest, stream zrpcpb.Snapshot_SaveServer) error {
	if err := stream.Send(&zrpcpb.SnapshotChunk{Data: []byte("first ")}); err != nil {
		return err
	}
	select {
	case <-time.After(3 * testCallTimeout):
	case <-stream.Context().Done():
		return stream.Context().Err()
	}
	return stream.Send(&zrpcpb.SnapshotChunk{Data: []byte("second")})
}

// TestSnapshotSaveOutlastsCallTimeout: a snapshot that streams for longer
// than CallTimeout, with no deadline of its caller, is saved whole: the
// timeout of unary calls does not cut streams that last as long as their
// data.
func TestSnapshotSaveOutlastsCallTimeout(t *testing.T) {
	addr := grpctest.Serve(t, func(s *grpc.Server) { zrpcpb.RegisterSnapshotServer(s, slowSnapshotAgent{}) })
	c, err := New(Config{Endpoints: []string{addr}, CallTimeout: testCallTimeout, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	var out bytes.Buffer
	err = finishes(t, "SaveSnapshot", func() error {
		_, err := c.SaveSnapshot(context.Background(), &out, SnapshotOptions{})
		return err
	})
	if err != nil || out.String() != "first second" {
		t.Fatalf("SaveSnapshot streaming past CallTimeout = %q, %v; want the whole snapshot", out.String(), err)
	}
}

// TestSessionOutlivesCallTimeout: CallTimeout bounds opening a session,
// not the session: one opened without a deadline is still open after
// CallTimeout has passed.
func TestSessionOutlivesCallTimeout(t *testing.T) {
	a := &sessionAgent{batch: 1, end: make(chan struct{})}
	agent := (&clienttest.Agent{OnSession: a.serve}).Start(t)
	c, err := New(Config{Endpoints: []string{agent.Addr}, CallTimeout: testCallTimeout, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	s, err := c.Session(context.Background(), "test pid 1")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	select {
	case <-s.Done():
		t.Fatalf("the session ended with its opening's CallTimeout: %v", s.Err())
	case <-time.After(3 * testCallTimeout):
	}
}

// pausingReader reads r after a pause of several CallTimeouts: a blob
// source that takes long, such as a slow disk or pipe.
type pausingReader struct {
	r      io.Reader
	paused bool
}

func (p *pausingReader) Read(b []byte) (int, error) {
	if !p.paused {
		p.paused = true
		time.Sleep(3 * testCallTimeout)
	}
	return p.r.Read(b)
}

// TestPutThroughAnAgentOutlastsCallTimeout: a blob put through an agent
// whose source takes longer than CallTimeout to read, with no deadline of
// its caller, is stored whole: the timeout of unary calls does not cut
// the put's stream.
func TestPutThroughAnAgentOutlastsCallTimeout(t *testing.T) {
	f := newFakeBlobs(t, 3)
	data := randomBytes(t, 2*putChunk+17)
	c, err := New(Config{Endpoints: []string{f.agents[0].addr}, CallTimeout: testCallTimeout, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	src := io.MultiReader(bytes.NewReader(data[:putChunk]), &pausingReader{r: bytes.NewReader(data[putChunk:])})
	err = finishes(t, "PutBlob", func() error {
		_, err := c.PutBlob(context.Background(), "slow-source", src, PutOptions{ThroughAgent: true})
		return err
	})
	if err != nil {
		t.Fatalf("PutBlob through an agent, its source slower than CallTimeout: %v", err)
	}
}
