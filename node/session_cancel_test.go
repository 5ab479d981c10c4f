package node

import (
	"context"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/zrpcio/zrpc/api/apierr"
	pb "github.com/zrpcio/zrpc/api/zrpcpb"
)

// cancelledStream is a Session stream whose client goes away right after
// its last message: Recv hands out msgs, cancelling the stream's context
// together with the last one, then fails.
type cancelledStream struct {
	grpc.ServerStream
	ctx    context.Context
	cancel context.CancelFunc
	mu     sync.Mutex
	msgs   []*pb.SessionRequest
}

func (s *cancelledStream) Context() context.Context { return s.ctx }

func (s *cancelledStream) Send(*pb.SessionResponse) error { return s.ctx.Err() }

func (s *cancelledStream) Recv() (*pb.SessionRequest, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.msgs) == 0 {
		<-s.ctx.Done()
		return nil, io.EOF
	}
	m := s.msgs[0]
	s.msgs = s.msgs[1:]
	if len(s.msgs) == 0 {
		s.cancel()
	}
	return m, nil
}

// TestSessionHandlerEndsWhenItsClientGoesAwayMidRequest: a request that
// arrives together with the client going away (a keepalive sent just
// before Close) never leaves the session's handler waiting: it returns and
// the session is destroyed.
func TestSessionHandlerEndsWhenItsClientGoesAwayMidRequest(t *testing.T) {
	n := startNode(t, testConfig(t))
	srv := n.newRegistry()
	for i := range 30 {
		ctx, cancel := context.WithCancel(context.Background())
		s := &cancelledStream{ctx: ctx, cancel: cancel, msgs: []*pb.SessionRequest{
			{Seq: 1, Kind: &pb.SessionRequest_Open{Open: &pb.SessionOpen{Owner: "test"}}},
			{Seq: 2, Kind: &pb.SessionRequest_Keepalive{Keepalive: &pb.SessionKeepAlive{}}},
		}}
		done := make(chan struct{})
		go func() {
			defer close(done)
			srv.Session(s)
		}()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatalf("attempt %d: the session handler still runs 5 s after its client went away", i)
		}
	}
	waitFor(t, 10*time.Second, "every session destroyed", func() bool { return len(n.Store().FSM().Sessions()) == 0 })
}

// TestSessionStreamEndsWhenTheAgentShutsDown: an agent that begins to
// close ends its Session streams at once with SHUTTING_DOWN (Unavailable),
// so that their processes register again elsewhere or once it is back,
// instead of holding its shutdown until the gRPC server's grace period
// runs out and cuts them ("transport is closing").
func TestSessionStreamEndsWhenTheAgentShutsDown(t *testing.T) {
	n := startNode(t, testConfig(t))
	_, reg := dial(t, n.GRPCAddr())
	stream, err := reg.Session(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&pb.SessionRequest{Seq: 1, Kind: &pb.SessionRequest_Open{Open: &pb.SessionOpen{Owner: "test"}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatalf("open: %v", err)
	}
	go n.Close()
	_, err = stream.Recv()
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), apierr.ErrShuttingDown.Error()) {
		t.Fatalf("the stream ended with %v, want Unavailable saying %q", err, apierr.ErrShuttingDown)
	}
}
