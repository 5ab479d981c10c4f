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

	"github.com/zrpcio/zrpc/api/apierr"
	"github.com/zrpcio/zrpc/api/zrpcpb"
)

// loseAnswerOfPut makes the agent at addr never answer a Put the client
// sent whole: the connection breaks while the client waits for the answer.
func loseAnswerOfPut(addr string) grpc.DialOption {
	return grpc.WithChainStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string,
		streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		if method != zrpcpb.Blobs_Put_FullMethodName || cc.Target() != addr {
			return streamer(ctx, desc, cc, method, opts...)
		}
		ctx, cancel := context.WithCancel(ctx)
		cs, err := streamer(ctx, desc, cc, method, opts...)
		if err != nil {
			cancel()
			return nil, err
		}
		return &unansweredStream{ClientStream: cs, cancel: cancel}, nil
	})
}

type unansweredStream struct {
	grpc.ClientStream
	cancel context.CancelFunc
}

func (s *unansweredStream) RecvMsg(any) error {
	s.cancel()
	return errLinkCut
}

// A put through an agent that was sent the whole blob and gave no answer
// may have been stored: it fails with ErrOutcomeUnknown, pointing at
// `blob stat`, whether or not another agent could be tried and whether or
// not the source could be read again.
func TestPutThroughAnAgentThatGaveNoAnswerToTheWholeBlobIsOfUnknownOutcome(t *testing.T) {
	f := newFakeBlobs(t, 3)
	data := randomBytes(t, 3*putChunk+123)
	for _, tc := range []struct {
		name      string
		endpoints []string
		src       func() io.Reader
	}{
		{"one agent", []string{f.agents[0].addr}, func() io.Reader { return bytes.NewReader(data) }},
		{"two agents, a file", []string{f.agents[0].addr, f.agents[1].addr}, func() io.Reader { return bytes.NewReader(data) }},
		{"two agents, a pipe", []string{f.agents[0].addr, f.agents[1].addr}, func() io.Reader { return io.MultiReader(bytes.NewReader(data)) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := New(Config{Endpoints: tc.endpoints, DialTimeout: time.Second, Logger: testLogger(t),
				dialOptions: []grpc.DialOption{loseAnswerOfPut(f.agents[0].addr)}})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { c.Close() })
			_, err = c.PutBlob(testContext(t), "unanswered", tc.src(), PutOptions{ThroughAgent: true})
			if !errors.Is(err, apierr.ErrOutcomeUnknown) || !strings.Contains(err.Error(), "blob stat") {
				t.Fatalf("PutBlob: %v; want ErrOutcomeUnknown pointing at `blob stat`", err)
			}
		})
	}
}
