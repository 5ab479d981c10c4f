package health

import (
	"context"
	"errors"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/zrpcio/zrpc/api/apierr"
	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/internal/testlog"
)

// fakeRegistry is a registry replica and its Raft writes in one: every
// write is applied at once, as on a one-agent cluster, and recorded.
type fakeRegistry struct {
	mu       sync.Mutex
	rev      uint64
	insts    map[instanceKey]*pb.Instance
	sessions map[string]*pb.Session
	writes   []*pb.Command
	// events are every instance change, in order; changed is closed at
	// the next one.
	events  []*pb.Event
	changed chan struct{}
	// watches counts WatchInstances calls; failWatch makes the next Next
	// of a watch fail.
	watches   atomic.Int32
	failWatch atomic.Bool
	// openWatches counts watches started and not yet closed.
	openWatches atomic.Int32
	// clock, if set, stamps health changes (HealthSince).
	clock *fakeClock
	// full makes SetHealth store outputs cut, as a registry at
	// max_registry_bytes does.
	full bool
	// reads counts Instance calls (a check's run reads its instance).
	reads atomic.Int64
}

func newFakeRegistry() *fakeRegistry {
	return &fakeRegistry{insts: make(map[instanceKey]*pb.Instance), sessions: make(map[string]*pb.Session), changed: make(chan struct{})}
}

// publish records an instance change; f.mu is held.
func (f *fakeRegistry) publish(typ pb.Event_Type, inst *pb.Instance) {
	f.events = append(f.events, &pb.Event{Type: typ, Instance: inst, Revision: f.rev})
	close(f.changed)
	f.changed = make(chan struct{})
}

func (f *fakeRegistry) WatchInstances(from uint64) InstanceWatch {
	f.watches.Add(1)
	f.openWatches.Add(1)
	return &fakeWatch{f: f, rev: from}
}

// fakeWatch follows a fakeRegistry's events after rev.
type fakeWatch struct {
	f      *fakeRegistry
	rev    uint64
	closed atomic.Bool
}

func (w *fakeWatch) Close() {
	if w.closed.CompareAndSwap(false, true) {
		w.f.openWatches.Add(-1)
	}
}

func (w *fakeWatch) Next(ctx context.Context) (*pb.WatchResponse, error) {
	for {
		if w.f.failWatch.CompareAndSwap(true, false) {
			return nil, errors.New("watch failed")
		}
		w.f.mu.Lock()
		var evs []*pb.Event
		for _, e := range w.f.events {
			if e.Revision > w.rev {
				evs = append(evs, e)
			}
		}
		changed := w.f.changed
		w.f.mu.Unlock()
		if len(evs) > 0 {
			w.rev = evs[len(evs)-1].Revision
			return &pb.WatchResponse{Header: &pb.ResponseHeader{Revision: w.rev}, Events: evs}, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-changed:
		}
	}
}

func (f *fakeRegistry) Revision() uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.rev
}

// WaitRevision waits until f has applied rev: every revision but those
// of sessions publishes an instance event.
func (f *fakeRegistry) WaitRevision(ctx context.Context, rev uint64) error {
	for {
		f.mu.Lock()
		cur, changed := f.rev, f.changed
		f.mu.Unlock()
		if cur >= rev {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-changed:
		}
	}
}

func (f *fakeRegistry) Instance(service, id string) *pb.Instance {
	f.reads.Add(1)
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.insts[instanceKey{service, id}]
}

func (f *fakeRegistry) CheckedInstances() []*pb.Instance {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []*pb.Instance
	for _, inst := range f.insts {
		if inst.Check != nil {
			out = append(out, inst)
		}
	}
	sort.Slice(out, func(a, b int) bool { return out[a].Id < out[b].Id })
	return out
}

func (f *fakeRegistry) Sessions() []*pb.Session {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []*pb.Session
	for _, s := range f.sessions {
		out = append(out, s)
	}
	return out
}

// register stores inst (passing) at a new revision.
func (f *fakeRegistry) register(inst *pb.Instance) *pb.Instance {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rev++
	inst = proto.Clone(inst).(*pb.Instance)
	inst.ModRevision, inst.Health = f.rev, pb.Health_PASSING
	f.insts[instanceKey{inst.Service, inst.Id}] = inst
	f.publish(pb.Event_PUT, inst)
	return inst
}

// addSession stores a session at a new revision and returns the revision.
func (f *fakeRegistry) addSession(id, agent string) uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rev++
	f.sessions[id] = &pb.Session{Id: id, Node: agent}
	return f.rev
}

func (f *fakeRegistry) Propose(ctx context.Context, cmd *pb.Command) (uint64, error) {
	return f.apply(cmd)
}

func (f *fakeRegistry) ApplyLocal(ctx context.Context, cmd *pb.Command) (uint64, error) {
	return f.apply(cmd)
}

func (f *fakeRegistry) apply(cmd *pb.Command) (uint64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rev++
	f.writes = append(f.writes, cmd)
	switch k := cmd.Kind.(type) {
	case *pb.Command_SetHealth:
		for _, ref := range k.SetHealth.Instances {
			key := instanceKey{ref.Service, ref.Id}
			if cur := f.insts[key]; cur != nil && (ref.ModRevision == 0 || ref.ModRevision == cur.ModRevision) {
				next := proto.Clone(cur).(*pb.Instance)
				next.Health, next.HealthOutput, next.ModRevision = k.SetHealth.Health, k.SetHealth.Output, f.rev
				if f.full && len(next.HealthOutput) > 10 {
					next.HealthOutput = next.HealthOutput[:10] + RegistryCutMark
				}
				if f.clock != nil && cur.Health != next.Health {
					next.HealthSince = f.clock.Now().UnixNano()
				}
				f.insts[key] = next
				f.publish(pb.Event_PUT, next)
			}
		}
	case *pb.Command_Deregister:
		key := instanceKey{k.Deregister.Service, k.Deregister.Id}
		old := f.insts[key]
		if old == nil {
			return 0, apierr.ErrNotFound
		}
		if m := k.Deregister.ModRevision; m != 0 && m != old.ModRevision {
			return 0, apierr.ErrFailedPrecondition
		}
		delete(f.insts, key)
		f.publish(pb.Event_DELETE, old)
	case *pb.Command_SessionDestroy:
		for _, id := range k.SessionDestroy.Ids {
			delete(f.sessions, id)
		}
	}
	return f.rev, nil
}

// written returns the commands written so far and forgets them.
func (f *fakeRegistry) written() []*pb.Command {
	f.mu.Lock()
	defer f.mu.Unlock()
	w := f.writes
	f.writes = nil
	return w
}

func (f *fakeRegistry) health(service, id string) pb.Health {
	if inst := f.Instance(service, id); inst != nil {
		return inst.Health
	}
	return pb.Health_HEALTH_UNSPECIFIED
}

// fakeClock is a settable clock.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) set(t time.Time) {
	c.mu.Lock()
	c.now = t
	c.mu.Unlock()
}

// newTestKeeper is a Keeper of agent "a1" on reg, on clock.
func newTestKeeper(t *testing.T, reg *fakeRegistry, clock *fakeClock) *Keeper {
	return New(Config{
		Agent:    "a1",
		Replica:  reg,
		Writer:   reg,
		Interval: time.Hour,
		Now:      clock.Now,
		Logger:   testlog.New(t, "a1"),
	})
}
