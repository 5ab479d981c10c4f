package node

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/zrpcio/zrpc/api/apierr"
	pb "github.com/zrpcio/zrpc/api/zrpcpb"
)

func TestWatchOverGRPCSnapshotThenEventsThenResume(t *testing.T) {
	n := startNode(t, testConfig(t))
	_, c := dial(t, n.GRPCAddr())
	ctx := ctxT(t)
	if _, err := c.Register(ctx, &pb.RegisterRequest{Instance: inst("w.rpc", "a", "127.0.0.1:9001")}); err != nil {
		t.Fatal(err)
	}
	stream, err := c.Watch(ctx, &pb.WatchRequest{Service: "w.rpc"})
	if err != nil {
		t.Fatal(err)
	}
	first, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if !first.Snapshot || len(first.Events) != 1 || first.Events[0].Instance.Id != "a" || first.Header.ServedBy != "n1" {
		t.Fatalf("first watch response = %v, want a snapshot with a", first)
	}
	// Changes to another service are not delivered; ours are, in order.
	c.Register(ctx, &pb.RegisterRequest{Instance: inst("other.rpc", "x", "127.0.0.1:9009")})
	r, _ := c.Register(ctx, &pb.RegisterRequest{Instance: inst("w.rpc", "b", "127.0.0.1:9002")})
	d, _ := c.Deregister(ctx, &pb.DeregisterRequest{Service: "w.rpc", Id: "a"})
	var got []*pb.Event
	for len(got) < 2 {
		resp, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, resp.Events...)
	}
	if got[0].Type != pb.Event_PUT || got[0].Instance.Id != "b" || got[0].Revision != r.Header.Revision ||
		got[1].Type != pb.Event_DELETE || got[1].Instance.Id != "a" || got[1].Revision != d.Header.Revision {
		t.Fatalf("events = %v, want PUT b @%d, DELETE a @%d", got, r.Header.Revision, d.Header.Revision)
	}

	// Resuming from the snapshot's revision replays exactly those events.
	resumed, err := c.Watch(ctx, &pb.WatchRequest{Service: "w.rpc", FromRevision: first.Header.Revision})
	if err != nil {
		t.Fatal(err)
	}
	var again []*pb.Event
	for len(again) < 2 {
		resp, err := resumed.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if resp.Snapshot {
			t.Fatalf("resume from a retained revision sent a snapshot")
		}
		again = append(again, resp.Events...)
	}
	for i := range got {
		if again[i].Revision != got[i].Revision || again[i].Type != got[i].Type {
			t.Fatalf("resumed event %d = %v, want %v", i, again[i], got[i])
		}
	}
}

// TestSlowWatchersEndedTooSlowWhileWritesGoOn: watch streams that never read
// while writes go on do not hold the writes up; each is ended with
// ErrWatchTooSlow naming the revision up to which it was sent everything.
func TestSlowWatchersEndedTooSlowWhileWritesGoOn(t *testing.T) {
	const (
		watchers = 200
		writes   = 400
	)
	n := startNode(t, testConfig(t), WithWatchBacklog(64, 1<<20))
	_, c := dial(t, n.GRPCAddr())
	// The watchers' connection gives each stream a 64 KiB window (no BDP
	// growth) and the connection room for all of them, so a stream that is
	// not read stalls alone.
	slowConn, err := grpc.NewClient(n.GRPCAddr(),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<20))
	if err != nil {
		t.Fatal(err)
	}
	defer slowConn.Close()
	// The writes compete for CPU with sending them to every watcher until
	// the watchers are cut: give them time on a loaded machine.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var streams []pb.Registry_WatchClient
	for range watchers {
		s, err := pb.NewRegistryClient(slowConn).Watch(ctx, &pb.WatchRequest{Service: "slow.rpc"})
		if err != nil {
			t.Fatal(err)
		}
		streams = append(streams, s)
	}

	meta := map[string]string{"pad": strings.Repeat("x", 1000)}
	var last uint64
	for i := range writes {
		in := inst("slow.rpc", fmt.Sprintf("i%d", i%20), fmt.Sprintf("127.0.0.1:%d", 9000+i%20))
		in.Metadata = meta
		r, err := c.Register(ctx, &pb.RegisterRequest{Instance: in})
		if err != nil {
			t.Fatalf("write %d of %d: %v", i+1, writes, err)
		}
		last = r.Header.Revision
	}

	for i, s := range streams {
		var got uint64
		var err error
		for {
			var resp *pb.WatchResponse
			if resp, err = s.Recv(); err != nil {
				break
			}
			got = max(got, resp.Header.Revision)
		}
		st := status.Convert(err)
		if !errors.Is(apierr.FromStatus(err), apierr.ErrWatchTooSlow) || st.Code() != codes.Aborted {
			t.Fatalf("watcher %d ended with %v, want Aborted ErrWatchTooSlow", i, err)
		}
		var resume *pb.WatchResume
		for _, d := range st.Details() {
			if r, ok := d.(*pb.WatchResume); ok {
				resume = r
			}
		}
		if resume == nil || resume.Revision != got || got >= last ||
			!strings.Contains(st.Message(), fmt.Sprintf("resume from revision %d", got)) {
			t.Fatalf("watcher %d: received up to revision %d of %d, ended with %q (resume detail %v); want it to name revision %d",
				i, got, last, st.Message(), resume, got)
		}
	}
	metrics := httpGet(t, n, "/metrics")
	for _, want := range []string{
		fmt.Sprintf("zrpc_registry_watchers_too_slow_total %d\n", watchers),
		"zrpc_registry_watch_queued_bytes 0\n", // every ended stream gave its queue back
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}
