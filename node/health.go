package node

import (
	"context"
	"fmt"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/proto"

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

// renewTTL runs on the leader: it extends the instance's TTL and, if the
// instance is critical (also by a sweep committed during the renewal),
// makes it passing again.
func (n *Node) renewTTL(ctx context.Context, service, id string) (uint64, error) {
	inst := n.store.FSM().Instance(service, id)
	if inst == nil {
		return 0, fmt.Errorf("%w: instance %s/%s", apierr.ErrNotFound, service, id)
	}
	if inst.Check.GetTtl() == nil {
		return 0, apierr.Invalid("id", "instance %s/%s has no TTL check to renew", service, id)
	}
	if sweep := n.ttl.renew(inst, time.Now()); sweep != nil {
		select {
		case <-sweep:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
	// Health as of now: a sweep that claimed inst before the renewal has
	// committed its write by now.
	if inst = n.store.FSM().Instance(service, id); inst == nil {
		return 0, fmt.Errorf("%w: instance %s/%s (removed while critical)", apierr.ErrNotFound, service, id)
	}
	if inst.Health == pb.Health_PASSING {
		return n.store.FSM().Revision(), nil
	}
	return n.propose(ctx, setHealth(pb.Health_PASSING, "TTL renewed", inst))
}

func setHealth(h pb.Health, output string, insts ...*pb.Instance) *pb.Command {
	c := &pb.SetHealth{Health: h, Output: output}
	for _, inst := range insts {
		c.Instances = append(c.Instances, &pb.InstanceRef{Service: inst.Service, Id: inst.Id})
	}
	return &pb.Command{Kind: &pb.Command_SetHealth{SetHealth: c}}
}

// announceSelf records the leader's own addresses in the node table, so
// followers can forward to it.
func (n *Node) announceSelf(ctx context.Context) {
	self := &pb.Node{
		Name: n.cfg.Name, GrpcAddress: n.GRPCAddr(), RaftAddress: n.store.RaftAddr(),
		Zone: n.cfg.Zone, Build: Build, Health: pb.Health_PASSING,
	}
	for ctx.Err() == nil {
		if cur := n.store.FSM().Node(n.cfg.Name); cur != nil && proto.Equal(cur, self) {
			return
		}
		if _, err := n.store.Apply(ctx, &pb.Command{Kind: &pb.Command_NodeUpsert{NodeUpsert: self}}); err == nil {
			return
		}
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// runTTLChecks runs on the leader: it turns instances whose TTL ran out
// critical, and removes instances critical for longer than their
// deregister_critical_after, each sweep in at most two Raft entries.
func (n *Node) runTTLChecks(ctx context.Context) {
	n.ttl.reset()
	t := time.NewTicker(n.cfg.HealthInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		n.sweepHealth(ctx, time.Now())
	}
}

func (n *Node) sweepHealth(ctx context.Context, now time.Time) {
	insts := n.store.FSM().CheckedInstances()
	var expired, reap []verdict
	live := make(map[instanceKey]bool, len(insts))
	for _, inst := range insts {
		live[instanceKey{inst.Service, inst.Id}] = true
		if inst.Check.GetTtl() != nil && inst.Health != pb.Health_CRITICAL {
			if ok, gen := n.ttl.expired(inst, now); ok {
				expired = append(expired, verdict{inst, gen})
			}
		}
		if dca := inst.Check.GetDeregisterCriticalAfter(); dca != nil && inst.Health == pb.Health_CRITICAL &&
			now.Sub(time.Unix(0, inst.HealthSince)) > dca.AsDuration() {
			reap = append(reap, verdict{inst, n.ttl.generation(inst)})
		}
	}
	n.ttl.forget(func(k instanceKey) bool { return live[k] })
	if len(expired) == 0 && len(reap) == 0 {
		return
	}
	if n.ttl.judged != nil {
		n.ttl.judged()
	}
	done := make(chan struct{})
	defer n.ttl.release(done)
	n.expireTTLs(ctx, now, n.ttl.claim(expired, done))
	n.removeLongCritical(ctx, n.ttl.claim(reap, done))
}

// expireTTLs marks instances whose TTL ran out critical, in one entry.
func (n *Node) expireTTLs(ctx context.Context, now time.Time, expired []*pb.Instance) {
	if len(expired) == 0 {
		return
	}
	out := fmt.Sprintf("TTL expired: not renewed in time (checked at %s)", now.UTC().Format(time.RFC3339))
	if _, err := n.store.Apply(ctx, setHealth(pb.Health_CRITICAL, out, expired...)); err != nil {
		n.log.Warn("could not mark expired TTL instances critical", "count", len(expired), "err", err)
		return
	}
	n.log.Info("TTL expired; instances now critical", "count", len(expired), "first", expired[0].Service+"/"+expired[0].Id)
}

// removeLongCritical removes instances critical for longer than their
// deregister_critical_after.
func (n *Node) removeLongCritical(ctx context.Context, reap []*pb.Instance) {
	for _, inst := range reap {
		cmd := &pb.Command{Kind: &pb.Command_Deregister{Deregister: &pb.InstanceRef{Service: inst.Service, Id: inst.Id}}}
		if _, err := n.store.Apply(ctx, cmd); err != nil {
			n.log.Warn("could not remove long-critical instance", "instance", inst.Service+"/"+inst.Id, "err", err)
			continue
		}
		n.log.Info("removed instance critical past deregister_critical_after", "instance", inst.Service+"/"+inst.Id)
	}
}

// runChecks keeps one gRPC health checker running per instance this agent
// owns that asked for a gRPC check.
func (n *Node) runChecks(ctx context.Context) {
	running := make(map[instanceKey]*checker)
	defer func() {
		for _, c := range running {
			c.stop()
		}
	}()
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	for {
		want := make(map[instanceKey]*pb.Instance)
		for _, inst := range n.store.FSM().CheckedInstances() {
			if inst.Node == n.cfg.Name && inst.Check.GetGrpc() {
				want[instanceKey{inst.Service, inst.Id}] = inst
			}
		}
		for k, c := range running {
			if inst, ok := want[k]; !ok || !proto.Equal(inst.Check, c.check) || inst.Address != c.address {
				c.stop()
				delete(running, k)
			}
		}
		for k, inst := range want {
			if _, ok := running[k]; !ok {
				running[k] = n.startChecker(ctx, inst)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// checker calls grpc.health.v1 on one instance every interval.
type checker struct {
	check   *pb.Check
	address string
	cancel  context.CancelFunc
	done    chan struct{}
}

func (c *checker) stop() {
	c.cancel()
	<-c.done
}

func (n *Node) startChecker(parent context.Context, inst *pb.Instance) *checker {
	ctx, cancel := context.WithCancel(parent)
	c := &checker{check: inst.Check, address: inst.Address, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(c.done)
		n.runChecker(ctx, inst)
	}()
	return c
}

func (n *Node) runChecker(ctx context.Context, inst *pb.Instance) {
	chk := inst.Check
	addr := chk.GrpcAddress
	if addr == "" {
		addr = inst.Address
	}
	timeout := defaultTimeout
	if chk.Timeout != nil {
		timeout = chk.Timeout.AsDuration()
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		n.reportHealth(ctx, inst, pb.Health_CRITICAL, fmt.Sprintf("bad check address %s: %v", addr, err))
		return
	}
	defer conn.Close()
	client := healthpb.NewHealthClient(conn)
	t := time.NewTicker(chk.Interval.AsDuration())
	defer t.Stop()
	for {
		cctx, cancel := context.WithTimeout(ctx, timeout)
		resp, err := client.Check(cctx, &healthpb.HealthCheckRequest{Service: chk.GrpcService})
		cancel()
		if ctx.Err() != nil {
			return
		}
		switch {
		case err != nil:
			n.reportHealth(ctx, inst, pb.Health_CRITICAL, fmt.Sprintf("gRPC health check of %s failed: %v", addr, err))
		case resp.Status != healthpb.HealthCheckResponse_SERVING:
			n.reportHealth(ctx, inst, pb.Health_CRITICAL, fmt.Sprintf("gRPC health check of %s: %s", addr, resp.Status))
		default:
			n.reportHealth(ctx, inst, pb.Health_PASSING, "gRPC health check: SERVING")
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// reportHealth writes a check result when it changes the instance's health.
func (n *Node) reportHealth(ctx context.Context, inst *pb.Instance, h pb.Health, output string) {
	cur := n.store.FSM().Instance(inst.Service, inst.Id)
	if cur == nil || cur.Health == h {
		return
	}
	if _, err := n.propose(ctx, setHealth(h, output, cur)); err != nil && ctx.Err() == nil {
		n.log.Warn("could not record health check result", "instance", inst.Service+"/"+inst.Id, "health", h, "err", err)
		return
	}
	n.log.Info("instance health changed", "instance", inst.Service+"/"+inst.Id, "health", h, "output", output)
}
