package client

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/zrpcio/zrpc/api/apierr"
	"github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/client/clienttest"
)

// watchRecorder records the from_revision of every Watch call it serves.
type watchRecorder struct {
	mu   sync.Mutex
	from []uint64
}

func (r *watchRecorder) record(req *zrpcpb.WatchRequest) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.from = append(r.from, req.GetFromRevision())
	return len(r.from)
}

func (r *watchRecorder) calls() []uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]uint64(nil), r.from...)
}

// watchEvent is a response at rev with one event, of an instance of service.
func watchEvent(service string, rev uint64, snapshot bool) *zrpcpb.WatchResponse {
	return &zrpcpb.WatchResponse{
		Header:   &zrpcpb.ResponseHeader{Revision: rev},
		Snapshot: snapshot,
		Events: []*zrpcpb.Event{{
			Type: zrpcpb.Event_PUT, Revision: rev,
			Instance: &zrpcpb.Instance{Service: service, Id: fmt.Sprintf("%s-%d", service, rev)},
		}},
	}
}

// TestWatchResume kills the watch stream after three responses and checks
// that the client resumes from the last revision it delivered.
func TestWatchResume(t *testing.T) {
	first := []*zrpcpb.WatchResponse{watchEvent("user.rpc", 3, true), watchEvent("user.rpc", 5, false), watchEvent("user.rpc", 7, false)}
	tests := []struct {
		name string
		// kill breaks the first stream once its responses were delivered.
		kill func(first *clienttest.Agent, release chan struct{})
	}{
		{"stream ends unavailable", func(_ *clienttest.Agent, release chan struct{}) { close(release) }},
		{"agent stops", func(first *clienttest.Agent, _ chan struct{}) { first.Server.Stop() }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := &watchRecorder{}
			release := make(chan struct{})
			serve := func(req *zrpcpb.WatchRequest, stream zrpcpb.Registry_WatchServer) error {
				if rec.record(req) == 1 {
					for _, resp := range first {
						if err := stream.Send(resp); err != nil {
							return err
						}
					}
					select {
					case <-release:
						return status.Error(codes.Unavailable, "stream killed")
					case <-stream.Context().Done():
						return stream.Context().Err()
					}
				}
				if err := stream.Send(watchEvent("user.rpc", req.GetFromRevision()+2, false)); err != nil {
					return err
				}
				<-stream.Context().Done()
				return nil
			}
			a := (&clienttest.Agent{OnWatch: serve}).Start(t)
			b := (&clienttest.Agent{OnWatch: serve}).Start(t)
			c := newTestClient(t, a.Addr, b.Addr)

			w, err := c.Watch(testContext(t), "user.rpc", 0)
			if err != nil {
				t.Fatalf("Watch: %v", err)
			}
			defer w.Close()
			for _, want := range first {
				got, err := w.Recv()
				if err != nil {
					t.Fatalf("Recv: %v", err)
				}
				if got.GetHeader().GetRevision() != want.GetHeader().GetRevision() {
					t.Fatalf("revision = %d, want %d", got.GetHeader().GetRevision(), want.GetHeader().GetRevision())
				}
			}
			tt.kill(a, release)
			got, err := w.Recv()
			if err != nil {
				t.Fatalf("Recv after kill: %v", err)
			}
			if calls := rec.calls(); len(calls) != 2 || calls[0] != 0 || calls[1] != 7 {
				t.Fatalf("from_revision of Watch calls = %v, want [0 7]", calls)
			}
			if rev := got.GetHeader().GetRevision(); rev != 9 {
				t.Fatalf("revision after resume = %d, want 9", rev)
			}
		})
	}
}

func TestWatchStops(t *testing.T) {
	blocking := func(_ *zrpcpb.WatchRequest, stream zrpcpb.Registry_WatchServer) error {
		<-stream.Context().Done()
		return nil
	}
	tests := []struct {
		name    string
		onWatch func(*zrpcpb.WatchRequest, zrpcpb.Registry_WatchServer) error
		stop    func(cancel context.CancelFunc, w *WatchStream)
		want    error
	}{
		{"ctx cancelled", blocking, func(cancel context.CancelFunc, _ *WatchStream) { cancel() }, context.Canceled},
		{"closed", blocking, func(_ context.CancelFunc, w *WatchStream) { w.Close() }, ErrClosed},
		{"agent refuses", func(*zrpcpb.WatchRequest, zrpcpb.Registry_WatchServer) error {
			return apierr.ToStatus(apierr.Invalid("service", "bad name"))
		}, func(context.CancelFunc, *WatchStream) {}, apierr.ErrInvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			agent := (&clienttest.Agent{OnWatch: tt.onWatch}).Start(t)
			c := newTestClient(t, agent.Addr)
			ctx, cancel := context.WithCancel(testContext(t))
			defer cancel()
			w, err := c.Watch(ctx, "", 0)
			if err != nil {
				t.Fatalf("Watch: %v", err)
			}
			errc := make(chan error, 1)
			go func() {
				_, err := w.Recv()
				errc <- err
			}()
			tt.stop(cancel, w)
			select {
			case err := <-errc:
				if !errors.Is(err, tt.want) {
					t.Fatalf("Recv = %v, want %v", err, tt.want)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("Recv did not return")
			}
			if err := w.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
		})
	}
}

func TestBackoffDelay(t *testing.T) {
	for n := range 40 {
		d := backoffDelay(n)
		if d < watchBackoffMin/2 || d > watchBackoffMax {
			t.Fatalf("backoffDelay(%d) = %s, want within [%s, %s]", n, d, watchBackoffMin/2, watchBackoffMax)
		}
	}
	if d := backoffDelay(30); d < watchBackoffMax/2 {
		t.Fatalf("backoffDelay(30) = %s, want capped near %s", d, watchBackoffMax)
	}
}

// TestWatchAssemblesParts: a response sent in parts is delivered once,
// whole; parts of a response cut off by a broken stream are dropped and the
// watch resumes before that response.
func TestWatchAssemblesParts(t *testing.T) {
	part := func(rev uint64, id string, more bool) *zrpcpb.WatchResponse {
		return &zrpcpb.WatchResponse{
			Header: &zrpcpb.ResponseHeader{Revision: rev}, Snapshot: id == "a", More: more,
			Events: []*zrpcpb.Event{{Type: zrpcpb.Event_PUT, Revision: rev, Instance: &zrpcpb.Instance{Service: "user.rpc", Id: id}}},
		}
	}
	rec := &watchRecorder{}
	serve := func(req *zrpcpb.WatchRequest, stream zrpcpb.Registry_WatchServer) error {
		var sends []*zrpcpb.WatchResponse
		switch rec.record(req) {
		case 1: // a whole snapshot in three parts, then half of the next one
			sends = []*zrpcpb.WatchResponse{part(5, "a", true), part(5, "b", true), part(5, "c", false), part(8, "d", true)}
		default:
			sends = []*zrpcpb.WatchResponse{part(9, "d", true), part(9, "e", false)}
		}
		for _, r := range sends {
			if err := stream.Send(r); err != nil {
				return err
			}
		}
		if len(rec.calls()) == 1 {
			return status.Error(codes.Unavailable, "stream killed")
		}
		<-stream.Context().Done()
		return nil
	}
	agent := (&clienttest.Agent{OnWatch: serve}).Start(t)
	c := newTestClient(t, agent.Addr)
	w, err := c.Watch(testContext(t), "user.rpc", 0)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	for _, want := range []struct {
		rev uint64
		ids string
	}{{5, "a,b,c"}, {9, "d,e"}} {
		got, err := w.Recv()
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, ev := range got.Events {
			ids = append(ids, ev.Instance.Id)
		}
		if got.More || got.Snapshot != (want.rev == 5) || got.Header.Revision != want.rev || strings.Join(ids, ",") != want.ids {
			t.Fatalf("Recv = revision %d, more %v, ids %v; want revision %d with %s", got.Header.Revision, got.More, ids, want.rev, want.ids)
		}
	}
	if calls := rec.calls(); len(calls) != 2 || calls[1] != 5 {
		t.Fatalf("from_revision of Watch calls = %v, want [0 5]", calls)
	}
}

// TestWatchSnapshotSetsTheResumeRevision: a snapshot sets the revision a
// watch resumes from, even below the one it had (an agent answers a
// revision of another history, past all the cluster committed, with a
// snapshot of what it has); events only move it forward.
func TestWatchSnapshotSetsTheResumeRevision(t *testing.T) {
	w := &WatchStream{rev: 1000}
	steps := []struct {
		resp *zrpcpb.WatchResponse
		want uint64
	}{
		{&zrpcpb.WatchResponse{Snapshot: true, Header: &zrpcpb.ResponseHeader{Revision: 900}}, 900},
		{&zrpcpb.WatchResponse{Events: []*zrpcpb.Event{{Revision: 950}}, Header: &zrpcpb.ResponseHeader{Revision: 950}}, 950},
		{&zrpcpb.WatchResponse{Header: &zrpcpb.ResponseHeader{Revision: 800}}, 950},
	}
	for i, s := range steps {
		w.advance(s.resp)
		if w.rev != s.want {
			t.Fatalf("after response %d (%v) the watch resumes from %d, want %d", i, s.resp, w.rev, s.want)
		}
	}
}

// TestWatchBoundsParts: an agent that sends parts of one response (more
// set) without end has the watch resume on another agent once the parts
// pass the client's bound, instead of the client holding all it sends.
func TestWatchBoundsParts(t *testing.T) {
	big := strings.Repeat("x", 8<<10)
	endless := func(req *zrpcpb.WatchRequest, stream zrpcpb.Registry_WatchServer) error {
		for rev := uint64(1); ; rev++ {
			part := &zrpcpb.WatchResponse{Header: &zrpcpb.ResponseHeader{Revision: 5}, Snapshot: rev == 1, More: true,
				Events: []*zrpcpb.Event{{Revision: 5, Instance: &zrpcpb.Instance{Service: "user.rpc", Id: fmt.Sprint(rev), Address: big}}}}
			if err := stream.Send(part); err != nil {
				return err
			}
		}
	}
	rec := &watchRecorder{}
	good := func(req *zrpcpb.WatchRequest, stream zrpcpb.Registry_WatchServer) error {
		rec.record(req)
		if err := stream.Send(watchEvent("user.rpc", 9, true)); err != nil {
			return err
		}
		<-stream.Context().Done()
		return nil
	}
	a := (&clienttest.Agent{OnWatch: endless}).Start(t)
	b := (&clienttest.Agent{OnWatch: good}).Start(t)
	c := newTestClient(t, a.Addr, b.Addr)
	w, err := c.Watch(testContext(t), "user.rpc", 0)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	w.maxWhole = 1 << 20
	got, err := w.Recv()
	if err != nil {
		t.Fatalf("Recv: %v", err)
	}
	if got.GetHeader().GetRevision() != 9 || len(rec.calls()) != 1 {
		t.Fatalf("Recv = revision %d after %d watches of the second agent; want revision 9 from it", got.GetHeader().GetRevision(), len(rec.calls()))
	}
	if w.parts != nil || w.partsBytes != 0 {
		t.Fatalf("the watch still holds %d bytes of the first agent's parts", w.partsBytes)
	}
}

// TestWatchResumesWithItsCluster: a watch resumes with the id of the
// cluster its agents named (the first part of a response in parts names
// it), so that an agent of a cluster rebuilt since, whose revisions
// started over, answers with a snapshot instead of taking the revision
// as one of its own.
func TestWatchResumesWithItsCluster(t *testing.T) {
	var mu sync.Mutex
	var clusters []string
	serve := func(req *zrpcpb.WatchRequest, stream zrpcpb.Registry_WatchServer) error {
		mu.Lock()
		clusters = append(clusters, req.GetClusterId())
		n := len(clusters)
		mu.Unlock()
		if n > 1 {
			<-stream.Context().Done()
			return nil
		}
		first := watchEvent("user.rpc", 3, true)
		first.More, first.ClusterId = true, "c1"
		for _, r := range []*zrpcpb.WatchResponse{first, watchEvent("user.rpc", 3, false)} {
			if err := stream.Send(r); err != nil {
				return err
			}
		}
		return status.Error(codes.Unavailable, "stream killed")
	}
	agent := (&clienttest.Agent{OnWatch: serve}).Start(t)
	c := newTestClient(t, agent.Addr)
	w, err := c.Watch(testContext(t), "user.rpc", 0)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	got, err := w.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if got.GetClusterId() != "c1" {
		t.Fatalf("the snapshot names cluster %q, want c1", got.GetClusterId())
	}
	done := make(chan struct{})
	go func() { // resumes; returns when the watch is closed
		defer close(done)
		_, _ = w.Recv()
	}()
	defer func() { w.Close(); <-done }()
	waitFor(t, "the watch resumed", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(clusters) == 2
	})
	mu.Lock()
	defer mu.Unlock()
	if clusters[0] != "" || clusters[1] != "c1" {
		t.Fatalf("the watches sent cluster ids %q, want none and then c1", clusters)
	}
}
