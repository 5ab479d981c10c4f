package client

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/client/clienttest"
	"github.com/zrpcio/zrpc/internal/grpctest"
)

// testAttemptTimeout is the AttemptTimeout of the tests' clients: short,
// so that they see it pass.
const testAttemptTimeout = 300 * time.Millisecond

// newAttemptClient returns a client of endpoints with AttemptTimeout
// testAttemptTimeout, closed when the test ends.
func newAttemptClient(t *testing.T, endpoints ...string) *Client {
	t.Helper()
	c, err := New(Config{Endpoints: endpoints, AttemptTimeout: testAttemptTimeout, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// requestIDs records the request ids of the registrations an agent took.
type requestIDs struct {
	mu  sync.Mutex
	ids []string
}

func (r *requestIDs) add(id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ids = append(r.ids, id)
}

func (r *requestIDs) all() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.ids...)
}

// TestCallLeavesAnAgentThatAnswersHealthChecksButNotTheCall: the first
// endpoint's agent takes every call and answers none, while it answers
// its health checks and pings (a handler that hangs, a disk that does not
// return). A read and a write with a 10 s deadline are answered by the
// next endpoint once AttemptTimeout has passed, not failed at their
// deadline; the write reaches the next agent with the request id the
// first one got, so the agents apply it once; and the calls after go to
// the next endpoint first.
func TestCallLeavesAnAgentThatAnswersHealthChecksButNotTheCall(t *testing.T) {
	var hungIDs, nextIDs requestIDs
	hung := (&clienttest.Agent{
		OnGet: func(ctx context.Context, _ *zrpcpb.GetRequest) (*zrpcpb.GetResponse, error) {
			<-ctx.Done()
			return nil, ctx.Err()
		},
		OnRegister: func(ctx context.Context, req *zrpcpb.RegisterRequest) (*zrpcpb.RegisterResponse, error) {
			hungIDs.add(req.RequestId)
			<-ctx.Done()
			return nil, ctx.Err()
		},
	}).Start(t)
	next := (&clienttest.Agent{
		OnGet: func(context.Context, *zrpcpb.GetRequest) (*zrpcpb.GetResponse, error) {
			return &zrpcpb.GetResponse{Header: &zrpcpb.ResponseHeader{Revision: 5}}, nil
		},
		OnRegister: func(_ context.Context, req *zrpcpb.RegisterRequest) (*zrpcpb.RegisterResponse, error) {
			nextIDs.add(req.RequestId)
			return &zrpcpb.RegisterResponse{Header: &zrpcpb.ResponseHeader{Revision: 6}, Instance: req.Instance}, nil
		},
	}).Start(t)
	inst := &zrpcpb.Instance{Service: "user.rpc", Id: "u1", Address: "10.0.0.1:9000"}
	for _, tc := range []struct {
		name string
		call func(*Client, context.Context) (uint64, error)
		rev  uint64
	}{
		{"Get", func(c *Client, ctx context.Context) (uint64, error) {
			_, rev, err := c.Get(ctx, "user.rpc")
			return rev, err
		}, 5},
		{"Register", func(c *Client, ctx context.Context) (uint64, error) {
			_, rev, err := c.Register(ctx, inst)
			return rev, err
		}, 6},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newAttemptClient(t, hung.Addr, next.Addr)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if rev, err := tc.call(c, ctx); err != nil || rev != tc.rev {
				t.Fatalf("%s with the first agent hung = revision %d, %v; want the next agent's answer, %d", tc.name, rev, err, tc.rev)
			}
			before := hung.Calls()
			if rev, err := tc.call(c, testContext(t)); err != nil || rev != tc.rev {
				t.Fatalf("the %s after = revision %d, %v", tc.name, rev, err)
			}
			if n := hung.Calls() - before; n != 0 {
				t.Errorf("the %s after went to the hung agent %d times, want 0: the next endpoint first", tc.name, n)
			}
		})
	}
	hungSaw, nextSaw := hungIDs.all(), nextIDs.all()
	if len(hungSaw) != 1 || len(nextSaw) != 2 || hungSaw[0] == "" || nextSaw[0] != hungSaw[0] {
		t.Errorf("request ids: the hung agent got %q, the next %q; want the first write's id sent to both", hungSaw, nextSaw)
	}
}

// TestCallToAgentsThatAllHangNamesEach: when every agent takes the call
// and answers none within AttemptTimeout, the call fails Unavailable
// before its deadline, and the error names each agent, what happened
// there and what to look at.
func TestCallToAgentsThatAllHangNamesEach(t *testing.T) {
	a, b := unansweringAgent(t), unansweringAgent(t)
	c := newAttemptClient(t, a.Addr, b.Addr)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, _, err := c.Get(ctx, "user.rpc")
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("Get with every agent hung = %v, want Unavailable", err)
	}
	for _, want := range []string{
		a.Addr + ": no answer within 300ms (client.Config.AttemptTimeout)",
		b.Addr + ": no answer within 300ms (client.Config.AttemptTimeout)",
		"answers health checks",
		"logs",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
}

// slowAdmin is an agent's Status and Keyring service that answers
// RemovePeer and keyring installs after several AttemptTimeouts, as an
// agent does that removes a peer through Raft or asks every agent of a
// large cluster; it counts the calls it took.
type slowAdmin struct {
	zrpcpb.UnimplementedStatusServer
	zrpcpb.UnimplementedKeyringServer
	calls atomic.Int32
}

func (s *slowAdmin) wait(ctx context.Context) error {
	s.calls.Add(1)
	select {
	case <-time.After(3 * testAttemptTimeout):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *slowAdmin) RemovePeer(ctx context.Context, _ *zrpcpb.RemovePeerRequest) (*zrpcpb.RemovePeerResponse, error) {
	if err := s.wait(ctx); err != nil {
		return nil, err
	}
	return &zrpcpb.RemovePeerResponse{Header: &zrpcpb.ResponseHeader{Revision: 9}}, nil
}

func (s *slowAdmin) Install(ctx context.Context, _ *zrpcpb.KeyringKeyRequest) (*zrpcpb.KeyringResponse, error) {
	if err := s.wait(ctx); err != nil {
		return nil, err
	}
	return &zrpcpb.KeyringResponse{}, nil
}

// TestSlowAdminCallsAreNotCutByAttemptTimeout: RemovePeer and the keyring
// calls, which an agent may rightly take longer than AttemptTimeout to
// answer, are waited for on the agent that took them, not sent to the
// next one.
func TestSlowAdminCallsAreNotCutByAttemptTimeout(t *testing.T) {
	first, next := &slowAdmin{}, &slowAdmin{}
	serve := func(s *slowAdmin) string {
		return grpctest.Serve(t, func(g *grpc.Server) {
			zrpcpb.RegisterStatusServer(g, s)
			zrpcpb.RegisterKeyringServer(g, s)
		})
	}
	c := newAttemptClient(t, serve(first), serve(next))
	if rev, err := c.RemovePeer(testContext(t), "n3"); err != nil || rev != 9 {
		t.Errorf("RemovePeer answered after 3 AttemptTimeouts = revision %d, %v; want the first agent's answer", rev, err)
	}
	if _, err := c.KeyringInstall(testContext(t), "a2V5"); err != nil {
		t.Errorf("KeyringInstall answered after 3 AttemptTimeouts: %v", err)
	}
	if first.calls.Load() != 2 || next.calls.Load() != 0 {
		t.Errorf("the first agent took %d calls, the next %d; want 2 and 0", first.calls.Load(), next.calls.Load())
	}
}

// TestWatchOpensBesideAHungAgent: opening a watch whose first endpoint's
// agent takes streams and answers nothing on them returns; it does not
// wait on the agent for good.
func TestWatchOpensBesideAHungAgent(t *testing.T) {
	hang := func(ctx context.Context) error {
		<-ctx.Done()
		return ctx.Err()
	}
	hung := (&clienttest.Agent{
		OnWatchMany: func(s zrpcpb.Registry_WatchManyServer) error { return hang(s.Context()) },
		OnWatch:     func(_ *zrpcpb.WatchRequest, s zrpcpb.Registry_WatchServer) error { return hang(s.Context()) },
	}).Start(t)
	next := (&clienttest.Agent{}).Start(t)
	c := newAttemptClient(t, hung.Addr, next.Addr)
	err := finishes(t, "Watch", func() error {
		w, err := c.Watch(context.Background(), "user.rpc", 0)
		if err == nil {
			w.Close()
		}
		return err
	})
	if err != nil {
		t.Fatalf("Watch: %v", err)
	}
}

// TestCallerDeadlineOnAHungAgentMovesTheNextCall: a call whose deadline
// passes while the first endpoint's agent holds it, before
// AttemptTimeout, fails; the call after it goes to the next endpoint
// first, rather than to the agent that held the last one (a caller whose
// deadlines are all shorter than AttemptTimeout would otherwise never
// leave it).
func TestCallerDeadlineOnAHungAgentMovesTheNextCall(t *testing.T) {
	hung := unansweringAgent(t)
	next := (&clienttest.Agent{OnGet: func(context.Context, *zrpcpb.GetRequest) (*zrpcpb.GetResponse, error) {
		return &zrpcpb.GetResponse{Header: &zrpcpb.ResponseHeader{Revision: 5}}, nil
	}}).Start(t)
	c, err := New(Config{Endpoints: []string{hung.Addr, next.Addr}, AttemptTimeout: time.Minute, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), testAttemptTimeout)
	defer cancel()
	if _, _, err := c.Get(ctx, "user.rpc"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Get held by the hung agent past its deadline = %v, want DeadlineExceeded", err)
	}
	before := hung.Calls()
	if _, rev, err := c.Get(testContext(t), "user.rpc"); err != nil || rev != 5 {
		t.Fatalf("the Get after = revision %d, %v; want the next agent's answer", rev, err)
	}
	if n := hung.Calls() - before; n != 0 {
		t.Errorf("the Get after went to the hung agent %d times, want 0", n)
	}
}
