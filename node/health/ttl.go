package health

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/zrpcio/zrpc/api/apierr"
	pb "github.com/zrpcio/zrpc/api/zrpcpb"
)

// ttlTracker holds the TTL deadlines. It lives on the leader: renewals are
// forwarded there and cost no Raft write unless health changes. A new
// leader starts every deadline afresh (one full TTL of grace).
//
// A sweep's verdict and a renewal are atomic with respect to each other: a
// sweep writes an instance critical (or removes it) only if no renewal
// came between its judgement and its claim (the renewal generation is
// unchanged), and a renewal that comes while a claimed write is being
// committed waits for it and then makes the instance passing again.
type ttlTracker struct {
	mu        sync.Mutex
	deadlines map[instanceKey]ttlState
	// inFlight holds the instances a sweep has claimed; the channel is
	// closed once the sweep's writes are done.
	inFlight map[instanceKey]chan struct{}
	// judged, if set, runs between a sweep's judgement and its claim
	// (tests use it to renew at exactly that moment).
	judged func()
}

type instanceKey struct{ service, id string }

type ttlState struct {
	deadline time.Time
	modRev   uint64 // the registration the deadline belongs to
	gen      uint64 // renewals so far; a sweep's verdict names the one it judged
}

// verdict is a sweep's judgement of one instance: expire it, or remove it
// (critical past deregister_critical_after), as of renewal generation gen.
type verdict struct {
	inst *pb.Instance
	gen  uint64
}

func newTTLTracker() *ttlTracker {
	return &ttlTracker{deadlines: make(map[instanceKey]ttlState), inFlight: make(map[instanceKey]chan struct{})}
}

func (t *ttlTracker) reset() {
	t.mu.Lock()
	t.deadlines = make(map[instanceKey]ttlState)
	t.mu.Unlock()
}

// renew extends inst's TTL from now. If a sweep's write about inst is
// being committed, it returns a channel closed when that write is done;
// the caller waits for it before it looks at inst's health.
func (t *ttlTracker) renew(inst *pb.Instance, now time.Time) <-chan struct{} {
	t.mu.Lock()
	defer t.mu.Unlock()
	k := instanceKey{inst.Service, inst.Id}
	t.deadlines[k] = ttlState{deadline: now.Add(inst.Check.Ttl.AsDuration()), modRev: inst.ModRevision, gen: t.deadlines[k].gen + 1}
	return t.inFlight[k]
}

// expired returns whether inst's TTL has run out, and the renewal
// generation it judged. An instance not seen before, or changed and
// passing since (registered again, renewed), starts a fresh TTL.
func (t *ttlTracker) expired(inst *pb.Instance, now time.Time) (bool, uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	k := instanceKey{inst.Service, inst.Id}
	st, ok := t.deadlines[k]
	if !ok || (st.modRev != inst.ModRevision && inst.Health == pb.Health_PASSING) {
		t.deadlines[k] = ttlState{deadline: now.Add(inst.Check.Ttl.AsDuration()), modRev: inst.ModRevision, gen: st.gen}
		return false, st.gen
	}
	return now.After(st.deadline), st.gen
}

// generation returns inst's renewal generation.
func (t *ttlTracker) generation(inst *pb.Instance) uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.deadlines[instanceKey{inst.Service, inst.Id}].gen
}

// claim keeps the verdicts that no renewal has overtaken and marks their
// instances in flight until release(done) is called.
func (t *ttlTracker) claim(vs []verdict, done chan struct{}) []*pb.Instance {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []*pb.Instance
	for _, v := range vs {
		k := instanceKey{v.inst.Service, v.inst.Id}
		if t.deadlines[k].gen != v.gen {
			continue // renewed after the sweep judged it
		}
		t.inFlight[k] = done
		out = append(out, v.inst)
	}
	return out
}

// release ends the claims made with done and wakes the renewals waiting.
func (t *ttlTracker) release(done chan struct{}) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for k, ch := range t.inFlight {
		if ch == done {
			delete(t.inFlight, k)
		}
	}
	close(done)
}

// forget drops deadlines of instances that no longer exist.
func (t *ttlTracker) forget(exists func(instanceKey) bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for k := range t.deadlines {
		if !exists(k) {
			delete(t.deadlines, k)
		}
	}
}

// RenewTTL runs on the leader: it extends the instance's TTL and, if the
// instance is critical (also by a sweep committed during the renewal),
// makes it passing again. It returns the revision the instance's health is
// current at.
func (k *Keeper) RenewTTL(ctx context.Context, service, id string) (uint64, error) {
	inst := k.cfg.Replica.Instance(service, id)
	if inst == nil {
		return 0, fmt.Errorf("%w: instance %s/%s", apierr.ErrNotFound, service, id)
	}
	if inst.Check.GetTtl() == nil {
		return 0, apierr.Invalid("id", "instance %s/%s has no TTL check to renew", service, id)
	}
	if sweep := k.ttl.renew(inst, k.cfg.Now()); sweep != nil {
		select {
		case <-sweep:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
	// Health as of now: a sweep that claimed inst before the renewal has
	// committed its write by now.
	if inst = k.cfg.Replica.Instance(service, id); inst == nil {
		return 0, fmt.Errorf("%w: instance %s/%s (removed while critical)", apierr.ErrNotFound, service, id)
	}
	if inst.Health == pb.Health_PASSING {
		return k.cfg.Replica.Revision(), nil
	}
	return k.cfg.Writer.Propose(ctx, setHealth(pb.Health_PASSING, "TTL renewed", inst))
}

// RunTTLChecks runs on the leader, while it leads (ctx ends when
// leadership does): every interval it turns instances whose TTL ran out
// critical, and removes instances critical for longer than their
// deregister_critical_after, each sweep in at most two Raft entries.
func (k *Keeper) RunTTLChecks(ctx context.Context) {
	k.ttl.reset()
	t := time.NewTicker(k.cfg.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		k.sweep(ctx, k.cfg.Now())
	}
}

// sweep judges every TTL-checked instance as of now and writes the
// verdicts no renewal has overtaken.
func (k *Keeper) sweep(ctx context.Context, now time.Time) {
	insts := k.cfg.Replica.CheckedInstances()
	var expired, reap []verdict
	live := make(map[instanceKey]bool, len(insts))
	for _, inst := range insts {
		live[instanceKey{inst.Service, inst.Id}] = true
		if inst.Check.GetTtl() != nil && inst.Health != pb.Health_CRITICAL {
			if ok, gen := k.ttl.expired(inst, now); ok {
				expired = append(expired, verdict{inst, gen})
			}
		}
		if dca := inst.Check.GetDeregisterCriticalAfter(); dca != nil && inst.Health == pb.Health_CRITICAL &&
			now.Sub(time.Unix(0, inst.HealthSince)) > dca.AsDuration() {
			reap = append(reap, verdict{inst, k.ttl.generation(inst)})
		}
	}
	k.ttl.forget(func(k instanceKey) bool { return live[k] })
	if len(expired) == 0 && len(reap) == 0 {
		return
	}
	if k.ttl.judged != nil {
		k.ttl.judged()
	}
	done := make(chan struct{})
	defer k.ttl.release(done)
	k.expireTTLs(ctx, now, k.ttl.claim(expired, done))
	k.removeLongCritical(ctx, k.ttl.claim(reap, done))
}

// expireTTLs marks instances whose TTL ran out critical, in one entry.
func (k *Keeper) expireTTLs(ctx context.Context, now time.Time, expired []*pb.Instance) {
	if len(expired) == 0 {
		return
	}
	out := fmt.Sprintf("TTL expired: not renewed in time (checked at %s)", now.UTC().Format(time.RFC3339))
	if _, err := k.cfg.Writer.ApplyLocal(ctx, setHealth(pb.Health_CRITICAL, out, expired...)); err != nil {
		k.log.Warn("could not mark expired TTL instances critical", "count", len(expired), "err", err)
		return
	}
	k.log.Info("TTL expired; instances now critical", "count", len(expired), "first", expired[0].Service+"/"+expired[0].Id)
}

// removeLongCritical removes instances critical for longer than their
// deregister_critical_after.
func (k *Keeper) removeLongCritical(ctx context.Context, reap []*pb.Instance) {
	for _, inst := range reap {
		cmd := &pb.Command{Kind: &pb.Command_Deregister{Deregister: &pb.InstanceRef{Service: inst.Service, Id: inst.Id}}}
		if _, err := k.cfg.Writer.ApplyLocal(ctx, cmd); err != nil {
			k.log.Warn("could not remove long-critical instance", "instance", inst.Service+"/"+inst.Id, "err", err)
			continue
		}
		k.log.Info("removed instance critical past deregister_critical_after", "instance", inst.Service+"/"+inst.Id)
	}
}
