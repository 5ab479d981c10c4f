package client

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/client/clienttest"
	"github.com/zrpcio/zrpc/testcluster"
)

// TestWatchResumesAfterTooSlowAndConverges: a WatchStream whose caller
// stops reading while about 22 MB of changes are written is ended as too
// slow: by the client, whose queue of a watch on a WatchMany stream is
// bounded (watchQueueBytes), or, on a Watch stream, by the agent (its
// backlog bound is 16 MiB). It resumes by itself and converges to the
// registry's state.
func TestWatchResumesAfterTooSlowAndConverges(t *testing.T) {
	const n = 400 // clienttest.LargeInstance: about 54 KB each
	cl := testcluster.New(t, 1, testcluster.WithInstanceMetadataLimit(clienttest.LargeInstanceLimit))
	var opens atomic.Int32 // Watch streams and creates on WatchMany streams
	countOpens := func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		if method == zrpcpb.Registry_Watch_FullMethodName {
			opens.Add(1)
		}
		stream, err := streamer(ctx, desc, cc, method, opts...)
		if err != nil || method != zrpcpb.Registry_WatchMany_FullMethodName {
			return stream, err
		}
		return createCounter{ClientStream: stream, creates: &opens}, nil
	}
	c, err := New(Config{
		Endpoints:   []string{cl.GRPCAddr(0)},
		DialTimeout: time.Second,
		Logger:      testLogger(t),
		// A fixed 64 KiB stream window: on a Watch stream, the agent's
		// sends stall as soon as the caller stops reading.
		dialOptions: []grpc.DialOption{grpc.WithInitialWindowSize(64 << 10), grpc.WithInitialConnWindowSize(64 << 20),
			grpc.WithChainStreamInterceptor(countOpens)},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	w, err := c.Watch(ctx, "big.rpc", 0)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if _, err := w.Recv(); err != nil { // the empty snapshot
		t.Fatal(err)
	}
	if err := clienttest.RegisterLarge(ctx, cl.Registry(0), "big.rpc", n); err != nil {
		t.Fatal(err)
	}
	want, rev, err := c.Get(ctx, "big.rpc")
	if err != nil {
		t.Fatal(err)
	}

	state := map[string]uint64{}
	for w.Revision() < rev {
		resp, err := w.Recv()
		if err != nil {
			t.Fatalf("Recv at revision %d: %v", w.Revision(), err)
		}
		if resp.Snapshot {
			clear(state)
		}
		for _, ev := range resp.Events {
			if ev.Type == zrpcpb.Event_DELETE {
				delete(state, ev.Instance.Id)
			} else {
				state[ev.Instance.Id] = ev.Instance.ModRevision
			}
		}
	}
	if len(state) != len(want) {
		t.Fatalf("watch state holds %d instances, the registry %d", len(state), len(want))
	}
	for _, in := range want {
		if state[in.Id] != in.ModRevision {
			t.Fatalf("watch state has %s at revision %d, the registry at %d", in.Id, state[in.Id], in.ModRevision)
		}
	}
	if opens.Load() < 2 {
		t.Fatalf("the watch was opened %d times; want it ended as too slow and resumed", opens.Load())
	}
}

// createCounter counts the watches created on a WatchMany stream.
type createCounter struct {
	grpc.ClientStream
	creates *atomic.Int32
}

func (s createCounter) SendMsg(m any) error {
	if req, ok := m.(*zrpcpb.WatchManyRequest); ok && req.GetCreate() != nil {
		s.creates.Add(1)
	}
	return s.ClientStream.SendMsg(m)
}
