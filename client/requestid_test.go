package client

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/zrpcio/zrpc/api/apierr"
	"github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/testcluster"
)

// answerLoser is a client interceptor that lets the first call of one
// method reach its agent and then drops the answer, as a connection reset
// after the agent applied the write would: the client sees Unavailable.
type answerLoser struct {
	method string

	mu    sync.Mutex
	lost  any      // the answer that was dropped
	reqs  []string // request_id of every attempt of method
	fired bool
}

func (l *answerLoser) intercept(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	err := invoker(ctx, method, req, reply, cc, opts...)
	if method != l.method {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if r, ok := req.(interface{ GetRequestId() string }); ok {
		l.reqs = append(l.reqs, r.GetRequestId())
	}
	if l.fired || err != nil {
		return err
	}
	l.fired, l.lost = true, reply
	return status.Error(codes.Unavailable, "connection reset: answer lost")
}

func (l *answerLoser) attempts() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.reqs...)
}

// lossyClient is a client of agents 0 and 1 of cl, sending token (none
// when empty), whose first call of method loses its answer after the
// agent applied it.
func lossyClient(t *testing.T, cl *testcluster.Cluster, method, token string) (*Client, *answerLoser) {
	t.Helper()
	loser := &answerLoser{method: method}
	c, err := New(Config{
		Endpoints:   []string{cl.GRPCAddr(0), cl.GRPCAddr(1)},
		DialTimeout: time.Second,
		Logger:      testLogger(t),
		Token:       token,
		dialOptions: []grpc.DialOption{grpc.WithChainUnaryInterceptor(loser.intercept)},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, loser
}

// TestDeregisterRetryAfterLostAnswerAppliesOnce: the first attempt of a
// Deregister removes the instance but its answer is lost; the client retries
// on the other agent with the same request id and gets the first attempt's
// answer, not NotFound.
func TestDeregisterRetryAfterLostAnswerAppliesOnce(t *testing.T) {
	cl := testcluster.New(t, 2)
	c, loser := lossyClient(t, cl, "/zrpc.v1.Registry/Deregister", "")
	ctx := testContext(t)

	if _, _, err := c.Register(ctx, &zrpcpb.Instance{Service: "user.rpc", Id: "u1", Address: "127.0.0.1:9001"}); err != nil {
		t.Fatalf("Register: %v", err)
	}
	rev, err := c.Deregister(ctx, "user.rpc", "u1")
	if err != nil {
		t.Fatalf("Deregister after a lost answer: %v (want the first attempt's answer)", err)
	}
	reqs := loser.attempts()
	if len(reqs) != 2 || reqs[0] == "" || reqs[0] != reqs[1] {
		t.Fatalf("request ids of the attempts = %q, want two equal non-empty ids", reqs)
	}
	first := loser.lost.(*zrpcpb.DeregisterResponse)
	if rev != first.GetHeader().GetRevision() {
		t.Fatalf("retry answered revision %d, the lost first answer had %d", rev, first.GetHeader().GetRevision())
	}
	insts, _, err := c.Get(ctx, "user.rpc", WithConsistency(zrpcpb.Consistency_CONSISTENT))
	if err != nil || len(insts) != 0 {
		t.Fatalf("Get after Deregister = %v, %v; want no instances", insts, err)
	}
	// A new call is a new request: the instance is gone, so it is NotFound.
	if _, err := c.Deregister(ctx, "user.rpc", "u1"); !errors.Is(err, apierr.ErrNotFound) {
		t.Fatalf("second Deregister = %v, want not found", err)
	}
}
