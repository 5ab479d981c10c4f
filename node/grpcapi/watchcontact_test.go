package grpcapi

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/zrpcio/zrpc/api/apierr"
	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/internal/testwait"
)

// fakeContact is an agent's contact with the leader that a test loses and
// regains.
type fakeContact struct {
	mu     sync.Mutex
	lost   error
	ctx    context.Context
	cancel context.CancelCauseFunc
}

func newFakeContact() *fakeContact {
	f := &fakeContact{}
	f.ctx, f.cancel = context.WithCancelCause(context.Background())
	return f
}

func (f *fakeContact) get() (context.Context, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.lost != nil {
		return nil, f.lost
	}
	return f.ctx, nil
}

func (f *fakeContact) lose(why string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lost = fmt.Errorf("%w: %s", apierr.ErrStaleRead, why)
	f.cancel(f.lost)
}

func (f *fakeContact) regain() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lost = nil
	f.ctx, f.cancel = context.WithCancelCause(context.Background())
}

func (m *manyStream) createRequiring(id uint64, service string) {
	m.t.Helper()
	err := m.stream.Send(&pb.WatchManyRequest{Kind: &pb.WatchManyRequest_Create{Create: &pb.WatchCreate{
		WatchId: id, Watch: &pb.WatchRequest{Service: service, RequireLeader: true}}}})
	if err != nil {
		m.t.Fatal(err)
	}
}

// wantCutOff fails the test unless r ends watch id as cut off.
func wantCutOff(t *testing.T, r *pb.WatchManyResponse, id uint64, when string) {
	t.Helper()
	if r.WatchId != id || codes.Code(r.GetEnded().GetCode()) != codes.Unavailable || r.GetEnded().GetReason() != "STALE_READ" {
		t.Fatalf("%s: %s (%v), want watch %d ended Unavailable, STALE_READ", when, describe(r), r.GetEnded(), id)
	}
}

// On a WatchMany stream the watches that require a leader end alone when
// the agent loses contact, each with STALE_READ; the others go on. While
// it is cut off such a watch is refused; once contact returns one is
// served, and ends at the next loss, although the contact it was opened
// in is not the first one the stream saw.
func TestWatchManyEndsTheWatchesThatRequireALeaderWhenContactIsLost(t *testing.T) {
	contact := newFakeContact()
	w, reg, addr := startMany(t, RegistryConfig{LeaderContact: contact.get})
	w.Register(inst("a.rpc", "a1"))
	m := openMany(t, addr)
	m.createRequiring(1, "a.rpc")
	m.create(2, "a.rpc", 0)
	for range 2 {
		m.next() // the snapshots
	}

	contact.lose("cut off for the test")
	wantCutOff(t, m.next(), 1, "contact lost")
	testwait.For(t, 10*time.Second, "watch 1 closed on the agent", func() bool { return reg.Streams().Watches == 2 })
	w.Register(inst("a.rpc", "a2"))
	if got := describe(m.next()); got != "2:events[a.rpc/a2]" {
		t.Fatalf("after the loss: %s, want the watch that did not require a leader to go on", got)
	}
	m.createRequiring(3, "a.rpc")
	wantCutOff(t, m.next(), 3, "a watch opened while cut off")

	contact.regain()
	m.createRequiring(4, "a.rpc")
	if got := describe(m.next()); got != "4:snapshot[a.rpc/a1,a.rpc/a2]" {
		t.Fatalf("a watch opened after contact returned: %s, want its snapshot", got)
	}
	contact.lose("cut off again")
	wantCutOff(t, m.next(), 4, "contact lost again")
	w.Register(inst("a.rpc", "a3"))
	if got := describe(m.next()); got != "2:events[a.rpc/a3]" {
		t.Fatalf("after the second loss: %s, want watch 2's event only", got)
	}
}

// A Watch stream that requires a leader is refused while the agent is cut
// off and ends when it becomes so; one that does not goes on.
func TestWatchRequiringALeaderEndsWhenContactIsLost(t *testing.T) {
	contact := newFakeContact()
	w, _, addr := startMany(t, RegistryConfig{LeaderContact: contact.get})
	w.Register(inst("a.rpc", "a1"))
	client := pb.NewRegistryClient(dialTest(t, addr))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	required, err := client.Watch(ctx, &pb.WatchRequest{Service: "a.rpc", RequireLeader: true})
	if err != nil {
		t.Fatal(err)
	}
	plain, err := client.Watch(ctx, &pb.WatchRequest{Service: "a.rpc"})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []pb.Registry_WatchClient{required, plain} {
		if _, err := s.Recv(); err != nil {
			t.Fatal(err)
		}
	}
	contact.lose("cut off for the test")
	if _, err := required.Recv(); !errorIsStale(err) {
		t.Fatalf("the watch that requires a leader: %v, want it ended with STALE_READ", err)
	}
	w.Register(inst("a.rpc", "a2"))
	if resp, err := plain.Recv(); err != nil || len(resp.Events) != 1 || resp.Events[0].GetInstance().GetId() != "a2" {
		t.Fatalf("the watch that does not require a leader: %v, %v; want a2", resp, err)
	}
	refused, err := client.Watch(ctx, &pb.WatchRequest{Service: "a.rpc", RequireLeader: true})
	if err == nil {
		_, err = refused.Recv()
	}
	if !errorIsStale(err) {
		t.Fatalf("a watch opened while cut off: %v, want STALE_READ", err)
	}
}

func errorIsStale(err error) bool {
	return apierr.Code(apierr.FromStatus(err)) == "STALE_READ"
}

// A session that requires a leader is refused at once while the agent is
// cut off, before anything is proposed (this Registry has nothing to
// propose with).
func TestSessionRequiringALeaderIsRefusedWhileCutOff(t *testing.T) {
	contact := newFakeContact()
	contact.lose("cut off for the test")
	_, _, addr := startMany(t, RegistryConfig{LeaderContact: contact.get})
	client := pb.NewRegistryClient(dialTest(t, addr))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream, err := client.Session(ctx)
	if err != nil {
		t.Fatal(err)
	}
	open := &pb.SessionRequest{Seq: 1, Kind: &pb.SessionRequest_Open{Open: &pb.SessionOpen{Owner: "test", RequireLeader: true}}}
	if err := stream.Send(open); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); !errorIsStale(err) {
		t.Fatalf("a session that requires a leader, opened while cut off: %v, want STALE_READ", err)
	}
}
