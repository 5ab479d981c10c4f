package client

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/zrpcio/zrpc/api/apierr"
	"github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/client/clienttest"
)

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		wantErr bool
	}{
		{"one endpoint", Config{Endpoints: []string{"127.0.0.1:8400"}}, false},
		{"no endpoints", Config{}, true},
		{"no port", Config{Endpoints: []string{"localhost"}}, true},
		{"empty port", Config{Endpoints: []string{"localhost:"}}, true},
		{"port not a number", Config{Endpoints: []string{"localhost:grpc"}}, true},
		{"port 0", Config{Endpoints: []string{"127.0.0.1:0"}}, true},
		{"port out of range", Config{Endpoints: []string{"127.0.0.1:84000"}}, true},
		{"IPv6 endpoint", Config{Endpoints: []string{"[::1]:8400"}}, false},
		{"negative timeout", Config{Endpoints: []string{"a:1"}, DialTimeout: -1}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if (err != nil) != tt.wantErr {
				t.Fatalf("Validate() = %v, want error %v", err, tt.wantErr)
			}
			c, err := New(tt.cfg)
			if (err != nil) != tt.wantErr {
				t.Fatalf("New() error = %v, want error %v", err, tt.wantErr)
			}
			if c != nil {
				c.Close()
			}
		})
	}
}

// TestErrorsAcrossWire checks that an agent's apierr sentinel survives the
// wire with its message, and that such answers are final (no failover).
func TestErrorsAcrossWire(t *testing.T) {
	tests := []struct {
		name     string
		sentinel error
		call     func(context.Context, *Client) error
	}{
		{"deregister not found", apierr.ErrNotFound, func(ctx context.Context, c *Client) error {
			_, err := c.Deregister(ctx, "user.rpc", "x")
			return err
		}},
		{"get invalid", apierr.ErrInvalidArgument, func(ctx context.Context, c *Client) error {
			_, _, err := c.Get(ctx, "Bad Name")
			return err
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			serverErr := fmt.Errorf("%w: instance x", tt.sentinel)
			fail := &clienttest.Agent{
				OnDeregister: func(context.Context, *zrpcpb.DeregisterRequest) (*zrpcpb.DeregisterResponse, error) {
					return nil, apierr.ToStatus(serverErr)
				},
				OnGet: func(context.Context, *zrpcpb.GetRequest) (*zrpcpb.GetResponse, error) {
					return nil, apierr.ToStatus(serverErr)
				},
			}
			fail.Start(t)
			other := (&clienttest.Agent{}).Start(t)
			c := newTestClient(t, fail.Addr, other.Addr)

			err := tt.call(testContext(t), c)
			if !errors.Is(err, tt.sentinel) {
				t.Fatalf("err = %v, want errors.Is %v", err, tt.sentinel)
			}
			if err.Error() != serverErr.Error() {
				t.Errorf("message = %q, want %q", err.Error(), serverErr.Error())
			}
			if n := other.Calls(); n != 0 {
				t.Errorf("second agent got %d calls, want 0: app errors must not fail over", n)
			}
		})
	}
}

func TestFailover(t *testing.T) {
	unavailable := &clienttest.Agent{
		OnGet: func(context.Context, *zrpcpb.GetRequest) (*zrpcpb.GetResponse, error) {
			return nil, apierr.ToStatus(apierr.ErrShuttingDown)
		},
	}
	tests := []struct {
		name  string
		first func(t *testing.T) (addr string, calls func() int64)
	}{
		{"closed port", func(t *testing.T) (string, func() int64) {
			return clienttest.ClosedAddr(t), func() int64 { return 0 }
		}},
		{"agent answers unavailable", func(t *testing.T) (string, func() int64) {
			unavailable.Start(t)
			return unavailable.Addr, unavailable.Calls
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			firstAddr, firstCalls := tt.first(t)
			good := &clienttest.Agent{OnGet: func(_ context.Context, req *zrpcpb.GetRequest) (*zrpcpb.GetResponse, error) {
				return &zrpcpb.GetResponse{
					Header:    &zrpcpb.ResponseHeader{Revision: 42},
					Instances: []*zrpcpb.Instance{{Id: "user-1", Service: req.GetService()}},
				}, nil
			}}
			good.Start(t)
			c := newTestClient(t, firstAddr, good.Addr)
			ctx := testContext(t)

			insts, rev, err := c.Get(ctx, "user.rpc")
			if err != nil {
				t.Fatalf("Get: %v", err)
			}
			if rev != 42 || len(insts) != 1 || insts[0].GetId() != "user-1" {
				t.Fatalf("Get = %v at %d, want user-1 at 42", insts, rev)
			}
			// The client remembers the endpoint that answered.
			before := firstCalls()
			if _, _, err := c.Get(ctx, "user.rpc"); err != nil {
				t.Fatalf("second Get: %v", err)
			}
			if n := firstCalls(); n != before {
				t.Errorf("first endpoint called again (%d -> %d), want the remembered endpoint", before, n)
			}
			if n := good.Calls(); n != 2 {
				t.Errorf("good endpoint got %d calls, want 2", n)
			}
		})
	}
}

func TestAllEndpointsDown(t *testing.T) {
	c := newTestClient(t, clienttest.ClosedAddr(t), clienttest.ClosedAddr(t))
	_, err := c.Status(testContext(t))
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("err = %v, want code Unavailable", err)
	}
}

// TestAgentsThatAnswerAnErrorAreNotCalledSilent: when every agent answers
// with an error of the API (here: no leader), the error says what the
// last agent answered, not that no agent answered.
func TestAgentsThatAnswerAnErrorAreNotCalledSilent(t *testing.T) {
	noLeader := func(context.Context, *zrpcpb.StatusRequest) (*zrpcpb.StatusResponse, error) {
		return nil, apierr.ToStatus(fmt.Errorf("%w: 1 of 3 voters reachable", apierr.ErrNoLeader))
	}
	a := (&clienttest.Agent{OnStatus: noLeader}).Start(t)
	b := (&clienttest.Agent{OnStatus: noLeader}).Start(t)
	c := newTestClient(t, a.Addr, b.Addr)
	_, err := c.Status(testContext(t))
	want := "agent " + b.Addr + ": no cluster leader: 1 of 3 voters reachable"
	if !errors.Is(err, apierr.ErrNoLeader) || err.Error() != want {
		t.Fatalf("err = %v, want %q wrapping ErrNoLeader", err, want)
	}
	if a.Calls() != 1 || b.Calls() != 1 {
		t.Errorf("calls: %d and %d, want each agent asked once", a.Calls(), b.Calls())
	}
}

func TestCallHonoursContext(t *testing.T) {
	agent := &clienttest.Agent{OnGet: func(ctx context.Context, _ *zrpcpb.GetRequest) (*zrpcpb.GetResponse, error) {
		<-ctx.Done()
		return nil, ctx.Err()
	}}
	agent.Start(t)
	other := (&clienttest.Agent{}).Start(t)
	c := newTestClient(t, agent.Addr, other.Addr)
	ctx, cancel := context.WithCancel(testContext(t))
	go func() {
		waitFor(t, "call to reach the agent", func() bool { return agent.Calls() > 0 })
		cancel()
	}()
	_, _, err := c.Get(ctx, "user.rpc")
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if n := other.Calls(); n != 0 {
		t.Errorf("second agent got %d calls after ctx ended, want 0", n)
	}
}

func TestClientCloseIdempotent(t *testing.T) {
	agent := (&clienttest.Agent{}).Start(t)
	c, err := New(Config{Endpoints: []string{agent.Addr}})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("first Close: %v", err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := c.Status(context.Background()); !errors.Is(err, ErrClosed) {
		t.Fatalf("Status after Close = %v, want ErrClosed", err)
	}
	if _, err := c.Watch(context.Background(), "", 0); !errors.Is(err, ErrClosed) {
		t.Fatalf("Watch after Close = %v, want ErrClosed", err)
	}
}

func TestFromDetail(t *testing.T) {
	tests := []struct {
		code     codes.Code
		sentinel error
	}{
		{codes.NotFound, apierr.ErrNotFound},
		{codes.InvalidArgument, apierr.ErrInvalidArgument},
		{codes.FailedPrecondition, apierr.ErrSessionRequired},
		{codes.Unavailable, apierr.ErrNoLeader},
		{codes.Internal, nil},
	}
	for _, tt := range tests {
		t.Run(tt.code.String(), func(t *testing.T) {
			err := fromDetail(&zrpcpb.ErrorDetail{Code: int32(tt.code), Message: "boom"})
			if tt.sentinel != nil && !errors.Is(err, tt.sentinel) {
				t.Errorf("err = %v, want errors.Is %v", err, tt.sentinel)
			}
			if status.Code(err) != tt.code {
				t.Errorf("code = %v, want %v", status.Code(err), tt.code)
			}
			if got := status.Convert(err).Message(); got != "boom" {
				t.Errorf("message = %q, want boom", got)
			}
		})
	}
	if err := fromDetail(nil); err != nil {
		t.Errorf("fromDetail(nil) = %v, want nil", err)
	}
}

// TestFromDetailUsesTheReasonCode: a session error carries its reason code,
// so the sentinel survives even where the status code is shared (quota vs.
// too large, stale read vs. no leader).
func TestFromDetailUsesTheReasonCode(t *testing.T) {
	for _, sentinel := range []error{apierr.ErrQuotaExceeded, apierr.ErrStaleRead, apierr.ErrNotEnoughShards, apierr.ErrNotFound} {
		st := status.Convert(apierr.ToStatus(fmt.Errorf("%w: boom", sentinel)))
		err := fromDetail(&zrpcpb.ErrorDetail{Code: int32(st.Code()), Message: st.Message(), Reason: apierr.Code(sentinel)})
		if !errors.Is(err, sentinel) {
			t.Errorf("reason %s: err = %v, want errors.Is %v", apierr.Code(sentinel), err, sentinel)
		}
		if status.Code(err) != st.Code() || status.Convert(err).Message() != st.Message() {
			t.Errorf("reason %s: status %v %q, want %v %q", apierr.Code(sentinel), status.Code(err), status.Convert(err).Message(), st.Code(), st.Message())
		}
	}
	// An unknown reason falls back to the status code.
	if err := fromDetail(&zrpcpb.ErrorDetail{Code: int32(codes.NotFound), Message: "x", Reason: "NO_SUCH_REASON"}); !errors.Is(err, apierr.ErrNotFound) {
		t.Errorf("unknown reason: err = %v, want ErrNotFound by its code", err)
	}
}

// TestGetFollowsPagesAndStartsOverWhenExpired: Get reads every page, and
// reads them again from the first when the service changed between two.
func TestGetFollowsPagesAndStartsOverWhenExpired(t *testing.T) {
	var mu sync.Mutex
	var tokens []string
	agent := (&clienttest.Agent{OnGet: func(_ context.Context, req *zrpcpb.GetRequest) (*zrpcpb.GetResponse, error) {
		mu.Lock()
		defer mu.Unlock()
		tokens = append(tokens, req.PageToken)
		page := func(rev uint64, id, next string) *zrpcpb.GetResponse {
			return &zrpcpb.GetResponse{Header: &zrpcpb.ResponseHeader{Revision: rev}, Instances: []*zrpcpb.Instance{{Id: id}}, NextPageToken: next}
		}
		switch {
		case len(tokens) == 2: // the service changed after the first page
			return nil, apierr.ToStatus(fmt.Errorf("%w: changed", apierr.ErrPageExpired))
		case req.PageToken == "":
			return page(uint64(len(tokens)), "a", "t1"), nil
		case req.PageToken == "t1":
			return page(0, "b", "t2"), nil
		default:
			return page(0, "c", ""), nil
		}
	}}).Start(t)
	c := newTestClient(t, agent.Addr)
	insts, rev, err := c.Get(testContext(t), "user.rpc")
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, in := range insts {
		ids = append(ids, in.Id)
	}
	if got := strings.Join(ids, ","); got != "a,b,c" || fmt.Sprint(tokens) != "[ t1  t1 t2]" {
		t.Fatalf("Get = %s at %d after requests with tokens %q; want a,b,c after [\"\" t1 \"\" t1 t2]", got, rev, tokens)
	}
}
