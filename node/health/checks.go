package health

import (
	"container/heap"
	"context"
	"crypto/tls"
	"fmt"
	"hash/fnv"
	"math"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
)

// Bounds on the gRPC check runs in progress at once on one agent, each a
// goroutine and one call in flight; a check has at most one run in
// progress, and a run lasts at most maxCheckTimeout.
//
// A server that accepts the call and never answers (a deadlocked service;
// or, from anyone allowed to register, an address that drops packets)
// holds a run for its whole timeout. A check whose last run took its
// whole timeout is slow: slow checks run at most slowCheckRuns at once,
// and one due while that many run waits a slot. Checks that answered last
// time run at most ordinaryCheckRuns at once: a slot's checks all come
// due together (500 at 5,000 checks every 10 s), and run all at once they
// cost the agent about a third more CPU than a few at a time. However
// many hung servers an agent checks, a healthy instance's check waits for
// a run only while more than ordinaryCheckRuns servers have just begun to
// hang (before their first timeout), and then for maxCheckTimeout at
// most. At most slowCheckRuns + ordinaryCheckRuns runs are in progress.
const (
	slowCheckRuns     = 256
	ordinaryCheckRuns = 128
)

// maxCheckTimeout bounds every run of a gRPC check, whatever its timeout
// (the agent accepts one up to the check's interval, up to an hour), so
// that a server that accepts the call and never answers holds a run for
// this long at most. Consul's default check timeout.
const maxCheckTimeout = 10 * time.Second

// checkWindow is the flow-control window a check's connection grants the
// checked server, per stream and per connection: gRPC's initial one, for
// answers of a few bytes.
const checkWindow = 64 << 10

// RunChecks runs the gRPC health checks of the instances this agent owns
// that asked for one, until ctx ends; it returns once every check has
// stopped. It learns of such instances from the replica's instance watch,
// so it does nothing while the registry does not change. The checks wait
// in a heap by next run; one timer waits for the earliest, and those due
// run each on a goroutine of its own, a bounded number at once (see
// ordinaryCheckRuns and slowCheckRuns). After its first run, each
// instance's checks run at its own place in its interval, the start of
// one of its 1 s slots (checkOffset), so checks with the same interval
// spread over its slots, and the checks of one slot run together.
func (k *Keeper) RunChecks(ctx context.Context) {
	ctx, cancel := context.WithCancel(ctx)
	s := newCheckSchedule()
	k.schedule.Store(s)
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
		s.closeAll()
		k.schedule.CompareAndSwap(s, nil)
	}()
	wg.Add(1)
	go func() {
		defer wg.Done()
		k.followInstances(ctx, func(resp *pb.WatchResponse) { k.followChecks(ctx, s, resp) })
	}()
	s.dispatch(ctx, &wg, func(c *scheduledCheck) {
		if h, output, ok := k.runCheck(c); ok {
			k.recordCheck(s, c, h, output)
		}
	})
}

// followChecks makes the schedule agree with one answer of the instance
// watch.
func (k *Keeper) followChecks(ctx context.Context, s *checkSchedule, resp *pb.WatchResponse) {
	for _, ev := range resp.Events {
		if ev.Type != pb.Event_DELETE {
			k.keepCheck(ctx, s, ev.Instance)
		} else {
			s.remove(keyOf(ev.Instance), ev.Revision)
		}
	}
	if resp.Snapshot {
		// A listing, not changes: the checks of instances it no longer
		// has stop here, and so do those of instances registered again
		// meanwhile without a gRPC check, or through another agent (a
		// listing has only instances with a check, so it does not say).
		for _, key := range s.keys() {
			if cur := k.cfg.Replica.Instance(key.service, key.id); cur == nil || !k.checksHere(cur) {
				s.remove(key, math.MaxUint64)
			}
		}
	}
}

func keyOf(inst *pb.Instance) instanceKey { return instanceKey{inst.Service, inst.Id} }

// checksHere reports whether this agent runs inst's gRPC check: it owns
// inst, which asks for one.
func (k *Keeper) checksHere(inst *pb.Instance) bool {
	return inst.Node == k.cfg.Agent && inst.Check.GetGrpc()
}

// keepCheck makes the schedule agree with inst, a version of an instance:
// a check when this agent owns it and it asks for a gRPC check, with its
// current check and address.
func (k *Keeper) keepCheck(ctx context.Context, s *checkSchedule, inst *pb.Instance) {
	want := k.checksHere(inst)
	switch s.compare(inst) {
	case checkNewer:
		return
	case checkSame:
		if want {
			return
		}
	case checkStale:
		if want {
			s.runNow(keyOf(inst))
			return
		}
	}
	s.remove(keyOf(inst), inst.ModRevision)
	if want {
		s.add(ctx, inst, time.Now())
	}
}

// scheduledCheck is the gRPC check of one instance.
type scheduledCheck struct {
	key    instanceKey
	inst   *pb.Instance // the version whose check and address it runs
	modRev uint64       // the instance's last version seen
	// next is when it runs next, with a monotonic reading (a step of the
	// wall clock does not move it).
	next   time.Time
	index  int // in the heap; -1 while it runs or once removed
	ctx    context.Context
	cancel context.CancelFunc
	// running is closed when the goroutine running it is done; nil when
	// it is not running.
	running chan struct{}
	removed bool
	// conn is dialled on the first run; only the goroutine running the
	// check touches it, and it is closed once the check is removed and
	// not running.
	conn   *grpc.ClientConn
	health healthpb.HealthClient
	// slow: its last run took its whole timeout. Written only by the
	// goroutine running the check, read under checkSchedule.mu while it
	// does not run.
	slow bool
	// stalled: its last run timed out while this agent did not run, so
	// it runs again at once (once: a run after one that stalled records
	// its result whatever happened). Written and read as slow is.
	stalled bool
	// slowRun, ordinaryRun: the run in progress counts in
	// checkSchedule.slowRuns, or ordinaryRuns. Guarded by checkSchedule.mu.
	slowRun, ordinaryRun bool
	// result is the health the last run found (unspecified before the
	// first), and wrote when a run last wrote the instance's health,
	// wroteOutput the output it wrote; unwritten counts the runs in a
	// row whose result could not be written; again asks for a run as
	// soon as the one in progress ends. Guarded by checkSchedule.mu.
	result      pb.Health
	wrote       time.Time
	wroteOutput string
	unwritten   int
	again       bool
}

// checkSchedule holds the gRPC checks this agent runs.
type checkSchedule struct {
	mu     sync.Mutex
	checks map[instanceKey]*scheduledCheck
	due    checkHeap
	// earlier has a value when the earliest run may have moved earlier
	// than the dispatcher's timer.
	earlier chan struct{}
	// slowRuns counts the runs in progress of slow checks, at most
	// slowCheckRuns; ordinaryRuns those of the others, at most
	// ordinaryCheckRuns.
	slowRuns, ordinaryRuns int
}

// checkHeap orders checks by next run.
type checkHeap = timeHeap[*scheduledCheck]

func (c *scheduledCheck) dueAt() time.Time { return c.next }
func (c *scheduledCheck) setIndex(i int)   { c.index = i }

func newCheckSchedule() *checkSchedule {
	return &checkSchedule{checks: make(map[instanceKey]*scheduledCheck), earlier: make(chan struct{}, 1)}
}

// How a version of an instance compares with the one being checked.
const (
	checkChanged = iota // not checked, or its check or address changed
	checkSame           // the same check and address
	checkNewer          // the version checked is newer than this one
	// checkStale: the same check and address, and a health the last run
	// contradicts, written by someone else: passing after the run found
	// the server down (the agent's own health came back: "agent alive
	// again" marks all its instances passing), or awaiting the first
	// check after any run (registered again). The check runs again at
	// once instead of at its next place, up to an interval later, while
	// clients route to a server that is down or avoid one that is up.
	checkStale
)

func (s *checkSchedule) compare(inst *pb.Instance) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.checks[keyOf(inst)]
	switch {
	case c == nil:
		return checkChanged
	case inst.ModRevision < c.modRev:
		return checkNewer
	case sameCheck(inst, c.inst):
		c.modRev = inst.ModRevision
		if contradicts(inst, c.result) {
			return checkStale
		}
		return checkSame
	}
	return checkChanged
}

// sameCheck reports whether versions a and b of an instance have the same
// check of the same address: a run of one's check tells of the other.
func sameCheck(a, b *pb.Instance) bool {
	return proto.Equal(a.Check, b.Check) && a.Address == b.Address
}

// contradicts reports whether inst's stored health is one that the last
// check run's result (unspecified before the first) says is out of date.
func contradicts(inst *pb.Instance, result pb.Health) bool {
	switch result {
	case pb.Health_HEALTH_UNSPECIFIED:
		return false
	case pb.Health_CRITICAL:
		// Passing, or registered again (whatever the last run found:
		// a process restarted at the same address may be serving now).
		return inst.Health == pb.Health_PASSING || awaitingFirstCheck(inst)
	}
	return awaitingFirstCheck(inst)
}

// awaitingFirstCheck reports whether inst is as an agent registers a
// gRPC-checked instance: critical until its check has run.
func awaitingFirstCheck(inst *pb.Instance) bool {
	return inst.Health == pb.Health_CRITICAL && inst.HealthOutput == AwaitingFirstCheck
}

// runNow moves the check of key to now, or, while it runs, to when that
// run ends.
func (s *checkSchedule) runNow(key instanceKey) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.checks[key]
	switch {
	case c == nil:
		return
	case c.index < 0:
		c.again = true
		return
	}
	c.next = time.Now()
	heap.Fix(&s.due, c.index)
	s.wakeIfFirst(c)
}

// add schedules inst's first check at once: the instance is critical
// until it has run (the runs after spread over the interval).
func (s *checkSchedule) add(parent context.Context, inst *pb.Instance, now time.Time) {
	ctx, cancel := context.WithCancel(parent)
	c := &scheduledCheck{key: keyOf(inst), inst: inst, modRev: inst.ModRevision, ctx: ctx, cancel: cancel}
	c.next = now
	s.mu.Lock()
	defer s.mu.Unlock()
	s.checks[c.key] = c
	s.push(c)
}

// push puts c in the heap and wakes the dispatcher if it is now the
// earliest; s.mu is held.
func (s *checkSchedule) push(c *scheduledCheck) {
	heap.Push(&s.due, c)
	s.wakeIfFirst(c)
}

// wakeIfFirst wakes the dispatcher if c is now the earliest check; s.mu
// is held.
func (s *checkSchedule) wakeIfFirst(c *scheduledCheck) {
	if c.index == 0 {
		s.wake()
	}
}

// wake tells the dispatcher to look at the heap again, without blocking.
func (s *checkSchedule) wake() {
	select {
	case s.earlier <- struct{}{}:
	default:
	}
}

// remove stops the check of key, unless the version checked is newer than
// rev, and waits for a run in progress to end.
func (s *checkSchedule) remove(key instanceKey, rev uint64) {
	s.mu.Lock()
	c := s.checks[key]
	if c == nil || c.modRev > rev {
		s.mu.Unlock()
		return
	}
	delete(s.checks, key)
	c.cancel()
	c.removed = true
	running := c.running
	if c.index >= 0 {
		heap.Remove(&s.due, c.index)
	}
	s.mu.Unlock()
	if running != nil {
		<-running // the worker closes its connection
		return
	}
	c.closeConn()
}

func (c *scheduledCheck) closeConn() {
	if c.conn != nil {
		c.conn.Close()
		c.conn = nil
	}
}

// keys returns the instances checked.
func (s *checkSchedule) keys() []instanceKey {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]instanceKey, 0, len(s.checks))
	for k := range s.checks {
		out = append(out, k)
	}
	return out
}

// dispatch runs checks as they come due, each on a goroutine of its own
// counted in wg, until ctx ends; popDue holds back those past the bounds
// on runs in progress.
func (s *checkSchedule) dispatch(ctx context.Context, wg *sync.WaitGroup, run func(*scheduledCheck)) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		c, wait := s.popDue(time.Now())
		if c == nil {
			timer.Reset(wait)
			select {
			case <-ctx.Done():
				return
			case <-s.earlier:
			case <-timer.C:
			}
			continue
		}
		if ctx.Err() != nil {
			s.finished(c, time.Now())
			return
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			run(c)
			s.finished(c, time.Now())
		}()
	}
}

// popDue takes the earliest check out of the heap if it is due, marked
// running; otherwise it returns how long until one is (an hour when there
// is none). A slow check due while slowCheckRuns run is deferred by a
// slot, behind the checks due meanwhile.
func (s *checkSchedule) popDue(now time.Time) (*scheduledCheck, time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for len(s.due) > 0 {
		c := s.due[0]
		if wait := c.next.Sub(now); wait > 0 {
			return nil, wait
		}
		if c.slow && s.slowRuns >= slowCheckRuns {
			c.next = now.Add(checkSlot)
			heap.Fix(&s.due, 0)
			continue
		}
		if !c.slow && s.ordinaryRuns >= ordinaryCheckRuns {
			return nil, time.Hour // until a run ends (finished signals earlier)
		}
		heap.Pop(&s.due)
		if c.slow {
			c.slowRun = true
			s.slowRuns++
		} else {
			c.ordinaryRun = true
			s.ordinaryRuns++
		}
		c.running = make(chan struct{})
		return c, 0
	}
	return nil, time.Hour
}

// finished records that a run of c ended at now: c waits for its next
// place, or, removed meanwhile, closes its connection.
func (s *checkSchedule) finished(c *scheduledCheck, now time.Time) {
	s.mu.Lock()
	if c.slowRun {
		c.slowRun = false
		s.slowRuns--
	}
	if c.ordinaryRun {
		c.ordinaryRun = false
		if s.ordinaryRuns == ordinaryCheckRuns {
			s.wake() // the dispatcher may wait for a run to end
		}
		s.ordinaryRuns--
	}
	removed := c.removed
	if !removed {
		interval := c.inst.Check.Interval.AsDuration()
		c.next = nextPlace(now, interval, checkOffset(c.key, interval))
		switch {
		case c.again || c.stalled:
			c.next, c.again = now, false
		case c.unwritten > 0:
			// Its result is not in the registry: run again soon, not an
			// interval later, with a backoff while writes keep failing.
			c.next = minTime(c.next, now.Add(min(checkSlot<<min(c.unwritten-1, 6), interval)))
		}
		s.push(c)
	}
	running := c.running
	c.running = nil
	s.mu.Unlock()
	if removed {
		c.closeConn()
	}
	close(running)
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// closeAll closes the connections of every check; nothing runs any more.
func (s *checkSchedule) closeAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.checks {
		c.cancel()
		c.closeConn()
	}
}

// checkSlot is the granularity of the places of checks in their
// interval: the checks whose places fall in one slot run together, so a
// mostly idle agent wakes once a second for its checks instead of once
// per check. Waking the Go runtime (and both ends of a connection) from
// idle for each check cost about 3.5 times the CPU: 22-24 % against
// 6-7 % of a core for 5,000 checks every 10 s with 100 ms slots, and
// 1,000 checks with the rest of 100,000 instances idle 2.1 % with 1 s
// slots against 3.2 % with 100 ms (docs/benchmarks.md). A check whose
// interval is shorter runs at the start of each interval.
const checkSlot = time.Second

// checkOffset is where in its interval an instance's checks run: the
// start of a slot hashed from its service and id, so that the checks of
// many instances spread over the interval's slots instead of running
// together, and keep their places when the agent restarts.
func checkOffset(key instanceKey, interval time.Duration) time.Duration {
	if interval <= 0 {
		return 0
	}
	slot := min(checkSlot, interval)
	h := fnv.New64a()
	h.Write([]byte(key.service))
	h.Write([]byte{0})
	h.Write([]byte(key.id))
	return time.Duration(h.Sum64()%uint64(interval/slot)) * slot
}

// nextPlace is the first time after now that is offset into an interval
// (intervals counted from the Unix epoch, on the wall clock). It keeps
// now's monotonic reading, if any: it is now and a duration, so a step of
// the wall clock after now moves it by nothing (Truncate drops the
// monotonic reading, and a time without one is compared by its wall
// reading: a step back of D would hold the check D longer, a step
// forward would run every check at once).
func nextPlace(now time.Time, interval, offset time.Duration) time.Time {
	if interval <= 0 {
		return now
	}
	t := now.Truncate(interval).Add(offset)
	for !t.After(now) {
		t = t.Add(interval)
	}
	return now.Add(t.Sub(now))
}

// runCheck calls grpc.health.v1 on c's instance once and returns what it
// found; ok is false when the check was removed meanwhile, or when the
// run found nothing: it timed out while this agent did not run (stopped,
// its VM paused, starved of CPU), when the server's answer may have
// waited unread in the socket, and it runs again at once. Only the
// goroutine running c calls it.
func (k *Keeper) runCheck(c *scheduledCheck) (h pb.Health, output string, ok bool) {
	inst, chk := c.inst, c.inst.Check
	addr := chk.GrpcAddress
	if addr == "" {
		addr = inst.Address
	}
	if c.health == nil {
		creds, err := k.checkCredentials(inst)
		if err != nil {
			return pb.Health_CRITICAL, err.Error(), c.ctx.Err() == nil
		}
		conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds),
			// A static window: with gRPC's dynamic one, every answer
			// read would make the agent ping the checked server (gRPC
			// measuring the link), doubling a check's packets.
			grpc.WithInitialWindowSize(checkWindow), grpc.WithInitialConnWindowSize(checkWindow))
		if err != nil {
			return pb.Health_CRITICAL, fmt.Sprintf("bad check address %s: %v", addr, err), c.ctx.Err() == nil
		}
		c.conn, c.health = conn, healthpb.NewHealthClient(conn)
	}
	timeout := checkTimeout(chk)
	lost := k.lost()
	cctx, cancel := context.WithTimeout(c.ctx, timeout)
	resp, err := c.health.Check(cctx, &healthpb.HealthCheckRequest{Service: chk.GrpcService})
	// Out of time, by the agent's clock or (told the deadline) by the
	// server's, which may end the call first.
	timedOut := status.Code(err) == codes.DeadlineExceeded
	cancel()
	c.stalled = timedOut && !c.stalled && k.lost() > lost
	c.slow = timedOut && !c.stalled
	if c.ctx.Err() != nil || c.stalled {
		return 0, "", false
	}
	switch {
	case err != nil:
		st := status.Convert(err) // "Unavailable: connection refused", not "rpc error: code = ..."
		return pb.Health_CRITICAL, fmt.Sprintf("gRPC health check of %s failed: %s: %s", addr, st.Code(), st.Message()), true
	case resp.Status != healthpb.HealthCheckResponse_SERVING:
		return pb.Health_CRITICAL, fmt.Sprintf("gRPC health check of %s: %s", addr, resp.Status), true
	}
	return pb.Health_PASSING, "gRPC health check: SERVING", true
}

// checkTimeout bounds one run of chk: its timeout up to maxCheckTimeout,
// else DefaultCheckTimeout or its interval when that is shorter (the
// agent refuses a timeout longer than the interval).
func checkTimeout(chk *pb.Check) time.Duration {
	if chk.Timeout != nil {
		return min(chk.Timeout.AsDuration(), maxCheckTimeout)
	}
	if iv := chk.Interval.AsDuration(); iv > 0 {
		return min(DefaultCheckTimeout, iv)
	}
	return DefaultCheckTimeout
}

// MaxOutput bounds a health output, in bytes: what the agents' API
// accepts of one (a registration's, a forwarded SetHealth's).
const MaxOutput = 4096

// clipOutput cuts output to MaxOutput bytes at a character boundary,
// saying so: a check's output quotes the checked server's error message,
// which may be as long as it likes (a stack trace), and a longer output
// would be refused where the result is forwarded to the leader, leaving
// the instance's health as it was.
func clipOutput(output string) string {
	if len(output) <= MaxOutput {
		return output
	}
	const mark = " [cut to 4 KiB]"
	cut := MaxOutput - len(mark)
	for cut > 0 && !utf8.RuneStart(output[cut]) {
		cut--
	}
	return output[:cut] + mark
}

// RegistryCutMark ends a health output the registry stored cut, having
// no room for it whole under max_registry_bytes (raftstore.CutOutputMark,
// which this package does not import).
const RegistryCutMark = " [cut: max_registry_bytes]"

// cutOf reports whether stored is output as the registry stored it: the
// same, or cut (RegistryCutMark). A check then counts the output as its
// own: a full registry cuts it every time, and writing it again at every
// run would cost a Raft write per instance per interval.
func cutOf(stored, output string) bool {
	if stored == output {
		return true
	}
	kept, cut := strings.CutSuffix(stored, RegistryCutMark)
	return cut && len(kept) < len(output) && strings.HasPrefix(output, kept)
}

// outputRefresh is how often a check may write a new output without a
// change of health. A change of health is written at once, and so is a
// check's output replacing one it did not write: its first (replacing
// "awaiting first gRPC health check"), and those replacing the leader's
// for the instance's agent (AgentFailed, AgentAliveAgain, raftstore's
// "removed with its agent NAME: ..."); a server whose
// failure reads differently on every check (a port, a time) costs a Raft
// write and a watch event per instance per interval otherwise. Consul's check_update_interval is the
// same idea, with the same default.
const outputRefresh = 5 * time.Minute

// recordCheck notes the result of a run of c and writes it to the
// registry when it changes the instance's health, or its output (at most
// once per outputRefresh).
func (k *Keeper) recordCheck(s *checkSchedule, c *scheduledCheck, h pb.Health, output string) {
	output = clipOutput(output)
	now := time.Now()
	s.mu.Lock()
	c.result = h
	refresh := c.wrote.IsZero() || now.Sub(c.wrote) >= outputRefresh
	wroteOutput := c.wroteOutput
	s.mu.Unlock()
	inst := c.inst
	cur := k.cfg.Replica.Instance(inst.Service, inst.Id)
	// An output this check did not write is replaced at once: a
	// registration again awaits its first check, whose output is written
	// at once as a new check's is; the leader wrote the instance's
	// agent failed, alive again, or reaped. The check, running, says
	// better why the instance has its health, and an operator must not
	// read a cause that no longer holds for up to outputRefresh.
	refresh = refresh || cur != nil && !cutOf(cur.HealthOutput, wroteOutput)
	// Registered again since the run read it, with another check or
	// address, or through another agent: the result is not about that
	// version, whose own check (from here or its agent) judges it.
	stale := cur != nil && (!k.checksHere(cur) || !sameCheck(cur, inst))
	if cur == nil || stale || cur.Health == h && (cur.HealthOutput == output || !refresh) {
		s.mu.Lock()
		c.unwritten = 0
		s.mu.Unlock()
		return
	}
	if _, err := k.cfg.Writer.Propose(c.ctx, judgedHealth(h, output, cur)); err != nil {
		if c.ctx.Err() != nil {
			return
		}
		s.mu.Lock()
		c.unwritten++
		s.mu.Unlock()
		if pass, held := k.recordWarn.Seen("check results"); pass {
			k.log.Warn("could not record health check result", "instance", inst.Service+"/"+inst.Id, "health", h, "err", err,
				"others_not_recorded", held)
		}
		return
	}
	s.mu.Lock()
	c.wrote, c.wroteOutput, c.unwritten = now, output, 0
	s.mu.Unlock()
	if cur.Health != h {
		k.log.Info("instance health changed", "instance", inst.Service+"/"+inst.Id, "health", h, "output", output)
	} else {
		k.log.Debug("instance health output changed", "instance", inst.Service+"/"+inst.Id, "health", h, "output", output)
	}
}

// checkCredentials returns how to dial inst's health endpoint: plaintext,
// or for a grpc_tls check mutual TLS with this agent's certificate,
// verifying the instance's for its service's name (what service
// certificates carry).
func (k *Keeper) checkCredentials(inst *pb.Instance) (credentials.TransportCredentials, error) {
	if !inst.Check.GetGrpcTls() {
		return insecure.NewCredentials(), nil
	}
	var cfg *tls.Config
	if k.cfg.CheckTLS != nil {
		cfg = k.cfg.CheckTLS(inst.Service)
	}
	if cfg == nil {
		return nil, fmt.Errorf("gRPC health check over TLS: agent %s has no certificate to check a TLS service with (set tls_ca, tls_cert and tls_key)", k.cfg.Agent)
	}
	return credentials.NewTLS(cfg), nil
}
