package client

import (
	"context"
	"errors"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/zrpcio/zrpc/client/clienttest"
)

// endAfterOpenAnswer is a stream interceptor that, once the first answer
// of a stream has arrived, ends ctx (cancel) and waits for the stream to
// see it: the caller's context ending just as the agent answered open.
func endAfterOpenAnswer(cancel context.CancelFunc) grpc.StreamClientInterceptor {
	return func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string,
		streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		cs, err := streamer(ctx, desc, cc, method, opts...)
		if err != nil {
			return nil, err
		}
		return &endingStream{ClientStream: cs, ctx: ctx, cancel: cancel}, nil
	}
}

type endingStream struct {
	grpc.ClientStream
	ctx    context.Context
	cancel context.CancelFunc
	done   bool
}

func (s *endingStream) RecvMsg(m any) error {
	err := s.ClientStream.RecvMsg(m)
	if err == nil && !s.done {
		s.done = true
		s.cancel()
		select {
		case <-s.ctx.Done():
		case <-time.After(10 * time.Second):
		}
	}
	return err
}

// TestSessionOpenFailsWhenItsContextEndsAsTheAgentAnswers: a session whose
// opening context ended as the agent answered open is not handed out
// dead (its stream ended with the context): Session fails with the
// context's error.
func TestSessionOpenFailsWhenItsContextEndsAsTheAgentAnswers(t *testing.T) {
	a := &sessionAgent{batch: 1, end: make(chan struct{})}
	agent := (&clienttest.Agent{OnSession: a.serve}).Start(t)
	ctx, cancel := context.WithCancel(testContext(t))
	defer cancel()
	c, err := New(Config{Endpoints: []string{agent.Addr}, Logger: testLogger(t),
		dialOptions: []grpc.DialOption{grpc.WithChainStreamInterceptor(endAfterOpenAnswer(cancel))}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	s, err := c.Session(ctx, "test pid 1")
	if err == nil {
		s.Close()
		t.Fatalf("Session = session %s (ended: %v), want the error of its context, which ended as it opened", s.ID(), s.Err())
	}
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Session = %v, want context.Canceled", err)
	}
}
