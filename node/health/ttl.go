package health

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/zrpcio/zrpc/api/apierr"
	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/internal/stall"
)

// ttlTracker holds the deadlines of the checked instances. It lives on the
// leader: renewals are forwarded there and cost no Raft write unless
// health changes. A new leader starts every deadline afresh: one full TTL
// of grace, and one full deregister_critical_after for an instance that
// was critical when it took over. Both are counted on the leader's own
// clock from when it first saw the instance so: health_since is stamped
// by the clock of whichever agent led then, and another machine's clock
// running ahead (a misconfigured NTP, a VM restored from a snapshot) must
// not remove at once every instance a previous leader saw turn critical.
// As Consul's agents restart that count when they restart, and etcd's
// leader renews every lease when it takes over, an instance critical
// across a change of leader may stay up to one deregister_critical_after
// longer; never shorter.
//
// Each checked instance has at most one deadline: when its TTL runs out
// (a TTL instance that is not critical), or when it has been critical for
// its deregister_critical_after. The deadlines sit in a min-heap, so a
// tick looks only at the instances that are due, and a renewal or a
// registry change moves one entry. The tracker learns of registry changes
// from the replica's instance watch (observe), never by rescanning it.
//
// A tick's verdict and a renewal are atomic with respect to each other: a
// tick writes an instance critical (or removes it) only if no renewal came
// between its judgement and its claim (the instance's generation is
// unchanged), and a renewal that comes while a claimed write is being
// committed waits for it and then makes the instance passing again.
type ttlTracker struct {
	mu      sync.Mutex
	entries map[instanceKey]*ttlEntry
	due     dueHeap
	// gens numbers deadline changes; an entry's gen is the number of its
	// last one, so a verdict on an older deadline is recognised.
	gens uint64
	// inFlight holds the instances a tick has claimed; the channel is
	// closed once the tick's writes are done.
	inFlight map[instanceKey]chan struct{}
	// earlier has a value when the earliest deadline moved earlier than
	// the one the tick loop waits for.
	earlier chan struct{}
	// started is when each TTL instance's TTL last started (its
	// registration, first sight or last renewal), kept while it is
	// critical too: an agent alive again makes all its instances passing,
	// and a TTL that ran out meanwhile must not start over then.
	started map[instanceKey]time.Time
	// critical is when this leader first saw each instance critical in
	// its current critical spell (the spell's health_since), for
	// deregister_critical_after.
	critical map[instanceKey]criticalSpell
	// examined counts the entries ticks have judged.
	examined uint64
	// judged, if set, runs between a tick's judgement and its claim
	// (tests use it to renew at exactly that moment).
	judged func()
}

type instanceKey struct{ service, id string }

// criticalSpell is one stretch of an instance being critical: since is its
// health_since (the clock of the leader that wrote it), seen when this
// leader first saw it (its own clock).
type criticalSpell struct {
	since int64
	seen  time.Time
}

// ttlEntry is one instance's deadline.
type ttlEntry struct {
	key      instanceKey
	deadline time.Time
	// reap: the deadline is that of deregister_critical_after (the
	// instance is critical), not that of its TTL.
	reap   bool
	modRev uint64 // the instance's version the deadline belongs to
	gen    uint64
	index  int // in the heap
}

// dueHeap orders entries by deadline.
type dueHeap = timeHeap[*ttlEntry]

func (e *ttlEntry) dueAt() time.Time { return e.deadline }
func (e *ttlEntry) setIndex(i int)   { e.index = i }

// verdict is a tick's judgement of one instance: expire it, or remove it
// (critical past deregister_critical_after), as of generation gen.
type verdict struct {
	inst *pb.Instance
	gen  uint64
}

func newTTLTracker() *ttlTracker {
	return &ttlTracker{
		entries:  make(map[instanceKey]*ttlEntry),
		started:  make(map[instanceKey]time.Time),
		critical: make(map[instanceKey]criticalSpell),
		inFlight: make(map[instanceKey]chan struct{}),
		earlier:  make(chan struct{}, 1),
	}
}

// reset forgets every deadline (a new term of leadership).
func (t *ttlTracker) reset() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.entries = make(map[instanceKey]*ttlEntry)
	t.started = make(map[instanceKey]time.Time)
	t.critical = make(map[instanceKey]criticalSpell)
	t.due = nil
}

// set gives k the deadline d, as of inst's version modRev, and a new
// generation.
func (t *ttlTracker) set(k instanceKey, d time.Time, reap bool, modRev uint64) {
	t.gens++
	e := t.entries[k]
	if e == nil {
		e = &ttlEntry{key: k}
		t.entries[k] = e
		e.deadline, e.reap, e.modRev, e.gen = d, reap, modRev, t.gens
		heap.Push(&t.due, e)
	} else {
		e.deadline, e.reap, e.modRev, e.gen = d, reap, modRev, t.gens
		heap.Fix(&t.due, e.index)
	}
	if e.index == 0 {
		select {
		case t.earlier <- struct{}{}:
		default:
		}
	}
}

// drop forgets k's deadline.
func (t *ttlTracker) drop(k instanceKey) {
	if e := t.entries[k]; e != nil {
		heap.Remove(&t.due, e.index)
		delete(t.entries, k)
	}
	delete(t.critical, k)
}

// reapDeadline is when critical inst may be removed for its
// deregister_critical_after: that long after this leader first saw this
// spell of it being critical (now, the first time it is asked about it;
// within milliseconds of health_since for a spell that began under this
// leader, whose clock stamped it).
func (t *ttlTracker) reapDeadline(k instanceKey, inst *pb.Instance, now time.Time) time.Time {
	spell, ok := t.critical[k]
	if !ok || spell.since != inst.HealthSince {
		spell = criticalSpell{since: inst.HealthSince, seen: now}
		t.critical[k] = spell
	}
	return spell.seen.Add(inst.Check.GetDeregisterCriticalAfter().AsDuration())
}

// observe takes in a version of an instance from the registry (its
// listing when leadership starts, or a change). An instance not seen
// before, or changed and passing since (registered again, renewed),
// starts a fresh TTL; a critical one with deregister_critical_after is
// due for removal that long after it turned critical; any other has no
// deadline.
func (t *ttlTracker) observe(inst *pb.Instance, now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.observeLocked(inst, now)
}

func (t *ttlTracker) observeLocked(inst *pb.Instance, now time.Time) {
	k := instanceKey{inst.Service, inst.Id}
	e := t.entries[k]
	if e != nil && inst.ModRevision < e.modRev {
		return // older than the version the deadline belongs to
	}
	switch chk := inst.Check; {
	case chk.GetTtl() != nil && inst.Health != pb.Health_CRITICAL:
		delete(t.critical, k) // a critical spell, if any, has ended
		if e != nil && !e.reap && (e.modRev == inst.ModRevision || inst.Health != pb.Health_PASSING) {
			return // the same registration: its deadline stands
		}
		start, known := t.started[k]
		if inst.HealthOutput != AgentAliveAgain || !known {
			// Registered, or passing again by a renewal (which started
			// it already), or first seen by this leader: a full TTL.
			start = now
			t.started[k] = now
		}
		t.set(k, start.Add(chk.Ttl.AsDuration()), false, inst.ModRevision)
	case chk.GetDeregisterCriticalAfter() != nil && inst.Health == pb.Health_CRITICAL:
		d := t.reapDeadline(k, inst, now)
		if e != nil && e.reap && e.deadline.Equal(d) {
			return
		}
		t.set(k, d, true, inst.ModRevision)
	default:
		t.drop(k)
	}
}

// removed takes in an instance's removal at revision rev.
func (t *ttlTracker) removed(inst *pb.Instance, rev uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	k := instanceKey{inst.Service, inst.Id}
	if e := t.entries[k]; e != nil && e.modRev <= rev {
		t.drop(k)
	}
	if t.entries[k] == nil {
		delete(t.started, k)
		delete(t.critical, k)
	}
}

// renew extends inst's TTL from now. If a tick's write about inst is
// being committed, it returns a channel closed when that write is done;
// the caller waits for it before it looks at inst's health.
func (t *ttlTracker) renew(inst *pb.Instance, now time.Time) <-chan struct{} {
	t.mu.Lock()
	defer t.mu.Unlock()
	k := instanceKey{inst.Service, inst.Id}
	t.set(k, now.Add(inst.Check.Ttl.AsDuration()), false, inst.ModRevision)
	t.started[k] = now
	return t.inFlight[k]
}

// postpone moves every deadline, and the times they count from, d later.
// Every deadline moves alike, so the heap's order stands.
func (t *ttlTracker) postpone(d time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, e := range t.entries {
		e.deadline = e.deadline.Add(d)
	}
	for k, start := range t.started {
		t.started[k] = start.Add(d)
	}
	for k, spell := range t.critical {
		spell.seen = spell.seen.Add(d)
		t.critical[k] = spell
	}
}

// next returns the earliest deadline, if there is one.
func (t *ttlTracker) next() (time.Time, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.due) == 0 {
		return time.Time{}, false
	}
	return t.due[0].deadline, true
}

// judge looks at the instances whose deadline is before now, and only at
// them, as the replica has them now: it returns those whose TTL ran out
// and those critical past deregister_critical_after, and gives each of
// them a new deadline retry later, in case the write fails. The others get
// the deadline their current version calls for.
func (t *ttlTracker) judge(now time.Time, replica Replica, retry time.Duration) (expired, reap []verdict) {
	t.mu.Lock()
	defer t.mu.Unlock()
	var due []*ttlEntry
	for len(t.due) > 0 && t.due[0].deadline.Before(now) {
		due = append(due, heap.Pop(&t.due).(*ttlEntry))
	}
	t.examined += uint64(len(due))
	for _, e := range due {
		// Back in the heap before any set or drop below looks it up.
		heap.Push(&t.due, e)
		inst := replica.Instance(e.key.service, e.key.id)
		switch {
		case inst == nil:
			// Removed, and the watch has not said so (or never will:
			// a listing leaves out what is gone).
			t.drop(e.key)
			delete(t.started, e.key)
		case e.reap && t.reapable(e.key, inst, now):
			reap = append(reap, verdict{inst, e.gen})
			t.retryAt(e, now.Add(retry))
		case !e.reap && inst.Check.GetTtl() != nil && inst.Health != pb.Health_CRITICAL &&
			(inst.ModRevision == e.modRev || inst.Health != pb.Health_PASSING):
			expired = append(expired, verdict{inst, e.gen})
			t.retryAt(e, now.Add(retry))
		default:
			// Changed since the deadline was set, and the change has not
			// been observed yet: as observe would.
			t.observeLocked(inst, now)
			if t.entries[e.key] == e && e.deadline.Before(now) {
				t.retryAt(e, now.Add(retry))
			}
		}
	}
	return expired, reap
}

// retryAt moves e's deadline to d, keeping its generation.
func (t *ttlTracker) retryAt(e *ttlEntry, d time.Time) {
	e.deadline = d
	heap.Fix(&t.due, e.index)
}

// reapable reports whether inst has been critical for longer than its
// deregister_critical_after as of now, as this leader counts it
// (reapDeadline).
func (t *ttlTracker) reapable(k instanceKey, inst *pb.Instance, now time.Time) bool {
	return inst.Check.GetDeregisterCriticalAfter() != nil && inst.Health == pb.Health_CRITICAL && now.After(t.reapDeadline(k, inst, now))
}

// claim keeps the verdicts that no renewal has overtaken and marks their
// instances in flight until release(done) is called.
func (t *ttlTracker) claim(vs []verdict, done chan struct{}) []*pb.Instance {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []*pb.Instance
	for _, v := range vs {
		k := instanceKey{v.inst.Service, v.inst.Id}
		if e := t.entries[k]; e == nil || e.gen != v.gen {
			continue // renewed (or changed) after the tick judged it
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

// RenewTTL runs on the leader: it extends the instance's TTL and, if the
// instance is critical (also by a tick committed during the renewal),
// makes it passing again. It returns the revision the instance's health is
// current at. A renewal of a passing instance writes nothing, so it is
// answered only once this agent has confirmed that it still leads
// (Config.ConfirmLeader); so is a renewal of an instance the replica
// lacks, which is answered "not found" only once the replica has applied
// everything committed before the confirmation began.
func (k *Keeper) RenewTTL(ctx context.Context, service, id string) (uint64, error) {
	if k.cfg.LeaderReady != nil && !k.cfg.LeaderReady() {
		return 0, fmt.Errorf("%w: this agent has just become leader and is still applying what its predecessor committed; retry", apierr.ErrNoLeader)
	}
	inst, err := k.renewable(ctx, service, id)
	if err != nil {
		return 0, err
	}
	if sweep := k.ttl.renew(inst, k.cfg.Now()); sweep != nil {
		select {
		case <-sweep:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
	// Health as of now: a tick that claimed inst before the renewal has
	// committed its write by now. The write is about the version read
	// (its mod_revision): one that changed before the write commits (the
	// leader found its agent failed, or it was registered again, perhaps
	// with another check) is read and judged again.
	for attempt := 1; ; attempt++ {
		if inst, err = k.renewable(ctx, service, id); err != nil {
			return 0, err
		}
		if inst.Health == pb.Health_PASSING {
			// Nothing to write: only this agent's deadline moved, which
			// counts only while it leads.
			if _, err := k.confirmLeader(ctx, service, id); err != nil {
				return 0, err
			}
			return k.cfg.Replica.Revision(), nil
		}
		if attempt > maxRenewWrites {
			return 0, fmt.Errorf("%w: renewal of %s/%s: the instance changed before each of %d writes making it passing could commit; retry",
				apierr.ErrNoLeader, service, id, maxRenewWrites)
		}
		rev, err := k.cfg.Writer.Propose(ctx, judgedHealth(pb.Health_PASSING, "TTL renewed", inst))
		if err != nil {
			return 0, err
		}
		if err := k.waitApplied(ctx, rev); err != nil {
			return 0, fmt.Errorf("%w: renewal of %s/%s committed at revision %d, but this agent's replica has not applied it (it has applied %d), so whether it made the instance passing is unknown; retry: %w",
				apierr.ErrNoLeader, service, id, rev, k.cfg.Replica.Revision(), err)
		}
		if cur := k.cfg.Replica.Instance(service, id); cur != nil && cur.ModRevision == rev && cur.Health == pb.Health_PASSING {
			return rev, nil
		}
	}
}

// maxRenewWrites bounds the writes one renewal tries: each is tried
// again only when the instance changed between its reading and its
// commit, which takes another writer racing it every time.
const maxRenewWrites = 3

// renewable returns service/id as the replica has it, with its TTL check.
// Before it answers that there is no such instance, it confirms that this
// agent still leads and waits until the replica has applied the read
// index of that confirmation (Config.ConfirmLeader): a leader deposed, or
// one whose replica lags what it committed, would otherwise deny a
// registration acknowledged elsewhere.
func (k *Keeper) renewable(ctx context.Context, service, id string) (*pb.Instance, error) {
	inst := k.cfg.Replica.Instance(service, id)
	if inst == nil && k.confirms != nil {
		if err := k.catchUpAsLeader(ctx, service, id); err != nil {
			return nil, err
		}
		inst = k.cfg.Replica.Instance(service, id)
	}
	if inst == nil {
		return nil, fmt.Errorf("%w: instance %s/%s is not registered (deregistered, or removed while critical past its deregister_critical_after); register it again",
			apierr.ErrNotFound, service, id)
	}
	if inst.Check.GetTtl() == nil {
		return nil, apierr.Invalid("id", "instance %s/%s has no TTL check to renew (registered with %s)", service, id, checkKind(inst.Check))
	}
	return inst, nil
}

// checkKind names the check chk asks for, for errors.
func checkKind(chk *pb.Check) string {
	switch {
	case chk.GetGrpc():
		return "a gRPC check"
	case chk == nil:
		return "no check"
	}
	return "another check"
}

// catchUpAsLeader returns nil once this agent has confirmed, after it was
// called, that it still leads, and its replica has applied what was
// committed when that confirmation began.
func (k *Keeper) catchUpAsLeader(ctx context.Context, service, id string) error {
	index, err := k.confirmLeader(ctx, service, id)
	if err != nil {
		return err
	}
	if err := k.waitApplied(ctx, index); err != nil {
		return fmt.Errorf("%w: renewal of %s/%s: this leader's replica has not applied its read index %d (it has applied %d), so it cannot tell whether the instance is registered; retry: %w",
			apierr.ErrNoLeader, service, id, index, k.cfg.Replica.Revision(), err)
	}
	return nil
}

// waitApplied waits until the replica has applied revision rev, up to
// confirmWait or until ctx ends: an agent cut off after its write was
// forwarded to another leader may not apply it for a long time.
func (k *Keeper) waitApplied(ctx context.Context, rev uint64) error {
	ctx, cancel := context.WithTimeout(ctx, confirmWait)
	defer cancel()
	return k.cfg.Replica.WaitRevision(ctx, rev)
}

// confirmLeader returns the read index of a confirmation, after the
// renewal of service/id arrived, that this agent still leads
// (Config.ConfirmLeader; 0 and nil when it is not set). A leader deposed
// that does not know it yet gets an error the renewal's forwarding
// retries, on the agent that leads now.
func (k *Keeper) confirmLeader(ctx context.Context, service, id string) (uint64, error) {
	if k.confirms == nil {
		return 0, nil
	}
	index, err := k.confirms.wait(ctx)
	switch {
	case err == nil:
		return index, nil
	case ctx.Err() != nil:
		return 0, fmt.Errorf("renewal of %s/%s: confirming that this agent still leads: %w", service, id, ctx.Err())
	}
	return 0, fmt.Errorf("%w: renewal of %s/%s not confirmed: this agent could not confirm that it still leads (%v); retry, through the leader",
		apierr.ErrNoLeader, service, id, err)
}

// RunTTLChecks runs on the leader, while it leads (ctx ends when
// leadership does): it turns instances whose TTL ran out critical, and
// removes instances critical for longer than their
// deregister_critical_after, each tick in at most two kinds of Raft entry.
// One timer waits for the earliest deadline, and ticks come at most once
// an interval, so that expiries close together share one entry; between
// deadlines it does nothing at all. It learns of registrations, changes
// and removals from the replica's instance watch.
func (k *Keeper) RunTTLChecks(ctx context.Context) {
	k.ttl.reset()
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
		k.ttl.reset() // a follower keeps no deadlines
	}()
	wg.Add(1)
	go func() {
		defer wg.Done()
		k.followInstances(ctx, k.observeTTL)
	}()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	var last time.Time
	lost := stall.NewSince(k.cfg.Lost) // a new leader starts every deadline afresh anyway
	for {
		k.armTTLTimer(timer, last)
		select {
		case <-ctx.Done():
			return
		case <-k.ttl.earlier:
			continue
		case <-timer.C:
		}
		last = k.cfg.Now()
		k.catchUp(lost)
		k.sweep(ctx, last)
	}
}

// catchUp moves every deadline by the time this agent lost since lost was
// last asked: while the leader was stopped, paused or starved, renewals
// could reach it but not be read, and an instance must not expire because
// its renewal waited in a socket.
func (k *Keeper) catchUp(lost *stall.Since) {
	if d := lost.Take(); d > 0 {
		k.ttl.postpone(d)
		k.log.Warn("TTL deadlines moved later by the time this agent did not run, for the renewals sent meanwhile", "by", d.Round(time.Millisecond))
	}
}

// armTTLTimer sets timer for just after the earliest deadline, but no
// sooner than an interval after the last tick; with no deadline, for an
// hour (the loop wakes earlier when a deadline is set).
func (k *Keeper) armTTLTimer(timer *time.Timer, last time.Time) {
	wait := time.Hour
	if d, ok := k.ttl.next(); ok {
		now := k.cfg.Now()
		wait = max(d.Sub(now)+time.Millisecond, last.Add(k.cfg.Interval).Sub(now), 0)
	}
	timer.Reset(wait)
}

// observeTTL takes in one answer of the instance watch. A snapshot's
// instances are taken in like changes; the deadlines of instances it no
// longer lists are dropped when they come due.
func (k *Keeper) observeTTL(resp *pb.WatchResponse) {
	now := k.cfg.Now()
	for _, ev := range resp.Events {
		if ev.Type == pb.Event_DELETE {
			k.ttl.removed(ev.Instance, ev.Revision)
		} else {
			k.ttl.observe(ev.Instance, now)
		}
	}
}

// sweep judges the instances due as of now and writes the verdicts no
// renewal has overtaken. A renewal of an instance being written waits for
// that write only: the expiries' one entry, or the instance's removal,
// not the removals of the tick's other instances (thousands, after a zone
// has been down for their deregister_critical_after).
func (k *Keeper) sweep(ctx context.Context, now time.Time) {
	expired, reap := k.ttl.judge(now, k.cfg.Replica, k.cfg.Interval)
	if len(expired) == 0 && len(reap) == 0 {
		return
	}
	if k.ttl.judged != nil {
		k.ttl.judged()
	}
	k.writeClaimed(expired, func(insts []*pb.Instance) { k.expireTTLs(ctx, now, insts) })
	for _, v := range reap {
		if ctx.Err() != nil {
			return // leadership ended: the next leader judges them
		}
		k.writeClaimed([]verdict{v}, func(insts []*pb.Instance) { k.removeLongCritical(ctx, insts) })
	}
}

// writeClaimed claims the verdicts vs that no renewal has overtaken,
// hands their instances to write, and releases them once it returns.
func (k *Keeper) writeClaimed(vs []verdict, write func([]*pb.Instance)) {
	done := make(chan struct{})
	defer k.ttl.release(done)
	if insts := k.ttl.claim(vs, done); len(insts) > 0 {
		write(insts)
	}
}

// expireTTLs marks instances whose TTL ran out critical, in one entry.
func (k *Keeper) expireTTLs(ctx context.Context, now time.Time, expired []*pb.Instance) {
	if len(expired) == 0 {
		return
	}
	out := fmt.Sprintf("TTL expired: not renewed in time (checked at %s)", now.UTC().Format(time.RFC3339))
	if _, err := k.cfg.Writer.ApplyLocal(ctx, judgedHealth(pb.Health_CRITICAL, out, expired...)); err != nil {
		k.log.Warn("could not mark expired TTL instances critical", "count", len(expired), "err", err)
		return
	}
	k.ttlExpired.Add(uint64(len(expired)))
	k.log.Info("TTL expired; instances now critical", "count", len(expired), "first", expired[0].Service+"/"+expired[0].Id)
}

// removeLongCritical removes instances critical for longer than their
// deregister_critical_after.
func (k *Keeper) removeLongCritical(ctx context.Context, reap []*pb.Instance) {
	for _, inst := range reap {
		// Only the version judged: registered again meanwhile, it stays.
		ref := &pb.InstanceRef{Service: inst.Service, Id: inst.Id, ModRevision: inst.ModRevision}
		if _, err := k.cfg.Writer.ApplyLocal(ctx, &pb.Command{Kind: &pb.Command_Deregister{Deregister: ref}}); err != nil {
			if errors.Is(err, apierr.ErrFailedPrecondition) || errors.Is(err, apierr.ErrNotFound) {
				k.log.Info("long-critical instance changed or went before its removal; left as it is", "instance", inst.Service+"/"+inst.Id, "detail", err)
				continue
			}
			k.log.Warn("could not remove long-critical instance", "instance", inst.Service+"/"+inst.Id, "err", err)
			continue
		}
		k.criticalRemoved.Add(1)
		k.log.Info("removed instance critical past deregister_critical_after", "instance", inst.Service+"/"+inst.Id)
	}
}
