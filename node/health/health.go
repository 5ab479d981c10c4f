// Package health keeps the health of the instances registered with one
// zrpc agent, in the three ways an instance can ask for:
//
//   - TTL: on the leader, deadlines kept in memory in a min-heap; a timer
//     set for the earliest writes instances whose TTL ran out critical, and
//     removes instances critical for longer than their
//     deregister_critical_after (RunTTLChecks, RenewTTL);
//   - gRPC check: the owning agent calls grpc.health.v1 on each of its
//     instances that asked for it, each at its own offset within the
//     interval, and writes a change of result (RunChecks);
//   - session: the sessions whose streams this agent serves (ServeSession);
//     a scan destroys sessions this agent owns but no longer serves, and
//     ends the served sessions the cluster removed (RunSessionScan).
//
// health learns of registrations, changes and removals from the replica's
// instance watch, so an agent whose registry does not change does no work
// for it between deadlines. It reads the agent's registry replica and writes through Raft only
// through the small interfaces in Config; it is not the gRPC API (the
// Session stream handler and RenewTTL's forwarding live in the agent's API
// server) and it does not start its loops itself: the agent runs them with
// its own lifecycle.
package health

import (
	"context"
	"crypto/tls"
	"log/slog"
	"sync/atomic"
	"time"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/internal/warnrate"
)

// AgentAliveAgain is the health output of the instances of an agent that
// was failed and is alive again: all of them are written passing, and
// their checks then put right those that are not (a gRPC check runs
// again at once; a TTL that ran out meanwhile expires at once).
const AgentAliveAgain = "agent alive again"

// AgentFailed is the health output the leader gives the instances of an
// agent it finds failed (no gossip contact): they are critical until the
// agent is alive again, or a check of theirs says why they are.
const AgentFailed = "agent failed: no gossip contact"

// AwaitingFirstCheck is the health output of an instance with a gRPC
// check until its first check has run: it is critical until then.
const AwaitingFirstCheck = "awaiting first gRPC health check"

// DefaultCheckTimeout bounds one gRPC health check whose instance sets no
// timeout (its interval, when shorter).
const DefaultCheckTimeout = 2 * time.Second

// defaultSessionScan is how often RunSessionScan looks.
const defaultSessionScan = 500 * time.Millisecond

// Replica is what health reads of this agent's registry replica
// (raftstore's FSM). Its methods are called from health's loops and from
// RenewTTL's caller, concurrently.
type Replica interface {
	Revision() uint64
	Instance(service, id string) *pb.Instance
	// CheckedInstances are the instances that have a TTL or gRPC check.
	CheckedInstances() []*pb.Instance
	Sessions() []*pb.Session
	// WaitRevision blocks until the replica has applied revision rev, or
	// returns ctx's error when ctx ends first.
	WaitRevision(ctx context.Context, rev uint64) error
	// WatchInstances follows the registry's instances after revision
	// from: every service, in revision order.
	WatchInstances(from uint64) InstanceWatch
}

// InstanceWatch yields the registry's instance changes, as raftstore's
// Watcher does.
type InstanceWatch interface {
	// Next blocks until there are changes after the last ones it returned
	// and returns them, or a snapshot (a complete listing, possibly in
	// several parts) when the watch fell behind what the registry keeps.
	// It returns ctx's error when ctx ends.
	Next(ctx context.Context) (*pb.WatchResponse, error)
	// Close ends the watch: the registry stops waking it.
	Close()
}

// Writer commits registry commands.
type Writer interface {
	// Propose commits cmd through the leader, wherever it is, and returns
	// its revision.
	Propose(ctx context.Context, cmd *pb.Command) (uint64, error)
	// ApplyLocal commits cmd on this agent, which must be the leader
	// (TTL sweeps run there and must not write once leadership is lost).
	ApplyLocal(ctx context.Context, cmd *pb.Command) (uint64, error)
}

// Config is what a Keeper needs of its agent.
type Config struct {
	// Agent is this agent's name: the owner of the instances it checks and
	// the sessions it serves.
	Agent   string
	Replica Replica
	Writer  Writer
	// ReadReady returns nil when the replica may answer a default read
	// (it has replayed its log and hears from a leader); orphan sessions
	// are judged only then.
	ReadReady func() error
	// Silenced reports whether the agent is halting as a crash would: it
	// then writes nothing for the sessions it served.
	Silenced func() bool
	// Interval is the shortest time between two TTL ticks
	// (health_interval): expiries closer together share one Raft entry.
	Interval time.Duration
	// SessionScan is how often orphan and removed sessions are looked for
	// (default 500 ms).
	SessionScan time.Duration
	// CheckTLS returns the TLS config to dial the health endpoint of an
	// instance of service whose check is grpc_tls: this agent's
	// certificate offered, the instance's verified for service. Nil (or a
	// nil answer) means the agent has no TLS, and such instances are
	// critical. Called from checker goroutines; it must not block.
	CheckTLS func(service string) *tls.Config
	// Now is the clock of TTL deadlines (default time.Now).
	Now func() time.Time
	// Lost, when set, returns the time this agent has not run since it
	// started (stopped, paused, starved: internal/stall): the leader moves
	// its TTL deadlines by what it lost, since the renewals sent meanwhile
	// wait unread in its sockets, and a gRPC check that timed out while
	// the agent lost time runs again instead of writing the instance
	// critical, since the server's answer may have waited unread too.
	Lost func() time.Duration
	// LeaderReady, when set, reports whether this agent, the leader, has
	// applied everything committed before it led: until then its replica
	// may lack a registration already acknowledged, and a renewal answers
	// "no leader yet" (retried) rather than "not found".
	LeaderReady func() bool
	// ConfirmLeader, when set, returns the leader's read index (what was
	// committed when the call began) once this agent has confirmed, after
	// the call began, that it still leads: a quorum of voters accepted
	// requests it sent since (raftstore's Store.ReadIndex). A renewal of
	// a passing instance writes nothing to Raft, so it is answered only
	// after such a confirmation: a leader deposed that does not know it
	// yet (cut off, its lease not yet run out) would otherwise answer
	// "renewed" while the real leader, never told, writes the instance
	// critical at its deadline. A renewal of an instance the replica
	// lacks is answered "not found" only after such a confirmation and
	// once the replica has applied the read index: a deposed leader, or
	// one whose replica lags its commit, would otherwise deny a
	// registration acknowledged elsewhere, and its client register again
	// or give up. Renewals that arrive while one confirmation runs share
	// the next one. It must honour ctx.
	ConfirmLeader func(ctx context.Context) (uint64, error)
	Logger        *slog.Logger
}

// Keeper keeps instances' health on one agent (see the package comment).
type Keeper struct {
	cfg      Config
	log      *slog.Logger
	ttl      *ttlTracker
	sessions *liveSessions
	// confirms batches the renewals' confirmations of leadership (nil
	// without Config.ConfirmLeader).
	confirms *leaderConfirmations
	// recordWarn lets one warning through per recordWarnEvery about
	// check results that could not be written: cut off from the leader,
	// every check of every instance fails to write.
	recordWarn *warnrate.Limiter
	// destroyWait is how long DestroySessions tries (sessionDestroyWait;
	// tests shorten it).
	destroyWait time.Duration
	// schedule is RunChecks' schedule while it runs, for Stats.
	schedule atomic.Pointer[checkSchedule]
	// ttlExpired and criticalRemoved count the instances this agent, leading,
	// wrote critical for an expired TTL and removed critical past their
	// deregister_critical_after.
	ttlExpired, criticalRemoved atomic.Uint64
}

// Stats is what an operator watches of an agent's health keeping.
type Stats struct {
	// ChecksRunning and SlowChecksRunning are the gRPC check runs in
	// progress, ordinary and of checks whose last run timed out.
	ChecksRunning, SlowChecksRunning int
	// ChecksUnwritten counts the checks whose last result could not be
	// written (no leader to take it, or it refused it).
	ChecksUnwritten int
	// TTLExpired and CriticalRemoved count the instances this agent, leading,
	// wrote critical for an expired TTL, and removed critical past their
	// deregister_critical_after.
	TTLExpired, CriticalRemoved uint64
}

// Stats returns the agent's health keeping as it is now.
func (k *Keeper) Stats() Stats {
	st := Stats{TTLExpired: k.ttlExpired.Load(), CriticalRemoved: k.criticalRemoved.Load()}
	if s := k.schedule.Load(); s != nil {
		s.mu.Lock()
		st.ChecksRunning, st.SlowChecksRunning = s.ordinaryRuns, s.slowRuns
		for _, c := range s.checks {
			if c.unwritten > 0 {
				st.ChecksUnwritten++
			}
		}
		s.mu.Unlock()
	}
	return st
}

// recordWarnEvery is how often a failure to write check results is
// warned of, with the count of those held back.
const recordWarnEvery = 30 * time.Second

// New returns a Keeper whose loops have not started.
func New(cfg Config) *Keeper {
	if cfg.SessionScan <= 0 {
		cfg.SessionScan = defaultSessionScan
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.ReadReady == nil {
		cfg.ReadReady = func() error { return nil }
	}
	if cfg.Silenced == nil {
		cfg.Silenced = func() bool { return false }
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	k := &Keeper{cfg: cfg, log: log, ttl: newTTLTracker(), sessions: newLiveSessions(),
		recordWarn: warnrate.New(recordWarnEvery, 1, time.Now), destroyWait: sessionDestroyWait}
	if cfg.ConfirmLeader != nil {
		k.confirms = &leaderConfirmations{confirm: cfg.ConfirmLeader}
	}
	return k
}

// lost is the time this agent has not run since it started (Config.Lost;
// none when it is not set).
func (k *Keeper) lost() time.Duration {
	if k.cfg.Lost == nil {
		return 0
	}
	return k.cfg.Lost()
}

// followInstances hands apply the replica's checked instances (as a
// snapshot), then every answer of an instance watch started just before
// that listing, until ctx ends. A watch that fails is started again the
// same way.
func (k *Keeper) followInstances(ctx context.Context, apply func(*pb.WatchResponse)) {
	for ctx.Err() == nil {
		if err := k.followOnce(ctx, apply); err != nil && ctx.Err() == nil {
			k.log.Warn("registry watch of health failed; starting again", "err", err)
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		}
	}
}

// followOnce is one watch of followInstances: it returns when ctx ends or
// the watch fails, and closes the watch either way.
func (k *Keeper) followOnce(ctx context.Context, apply func(*pb.WatchResponse)) error {
	watch := k.cfg.Replica.WatchInstances(k.cfg.Replica.Revision())
	defer watch.Close()
	apply(k.checkedListing())
	for {
		resp, err := watch.Next(ctx)
		if err != nil {
			return err
		}
		apply(resp)
	}
}

// checkedListing is the replica's checked instances as a snapshot answer
// of an instance watch.
func (k *Keeper) checkedListing() *pb.WatchResponse {
	insts := k.cfg.Replica.CheckedInstances()
	resp := &pb.WatchResponse{Snapshot: true, Events: make([]*pb.Event, len(insts))}
	for i, inst := range insts {
		resp.Events[i] = &pb.Event{Type: pb.Event_PUT, Instance: inst, Revision: inst.ModRevision}
	}
	return resp
}

// judgedHealth is the command giving insts health h and output if each is
// still the version judged (its mod_revision): an instance registered
// again or changed meanwhile keeps the health it has.
func judgedHealth(h pb.Health, output string, insts ...*pb.Instance) *pb.Command {
	c := &pb.SetHealth{Health: h, Output: output, Instances: make([]*pb.InstanceRef, len(insts))}
	for i, inst := range insts {
		c.Instances[i] = &pb.InstanceRef{Service: inst.Service, Id: inst.Id, ModRevision: inst.ModRevision}
	}
	return &pb.Command{Kind: &pb.Command_SetHealth{SetHealth: c}}
}
