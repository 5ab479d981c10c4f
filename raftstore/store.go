package raftstore

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/raft"

	"github.com/zrpcio/zrpc/api/apierr"
	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/internal/instcodec"
	"github.com/zrpcio/zrpc/internal/monotime"
)

// LeaderFunc runs while this store is the leader; ctx ends when leadership is
// lost or the store closes. It runs after the new leader has applied every
// entry committed before it took over.
type LeaderFunc func(ctx context.Context)

// Store is one agent's Raft node and registry replica.
type Store struct {
	cfg        Config
	log        *slog.Logger
	fsm        *FSM
	raft       *raft.Raft
	logs       *logStore
	snaps      raft.SnapshotStore // raft's snapshots (WriteSnapshot reads the latest)
	transport  *transport
	pusher     *commitPusher // tells followers the leader's commits at once
	notify     chan bool
	contact    contact     // whether it is in contact with a leader (contact.go)
	heartbeats heartbeats  // the voters this leader cannot heartbeat (heartbeats.go)
	probes     voterProbes // a non-voter without a leader asking the voters (probe.go)
	// fsmVersion caches Config.ClusterFSMVersion until fsmVersionNext
	// (unix ns): ClusterAt (fsmversion.go).
	fsmVersion, fsmVersionNext atomic.Int64
	// addrs is the transport's address provider; nil without
	// Config.ServerAddr.
	addrs *serverAddrs

	hadState bool // raft state existed when Open ran
	// replayTo is the last log index stored when Open ran: DEFAULT reads
	// wait until the replica has applied it, so a restarted agent does not
	// answer from a replica that has not replayed its log yet.
	replayTo uint64
	replayed atomic.Bool

	// After a stall (Config.Lost), DEFAULT reads on a follower wait for
	// the leader's read index (catchUpAfterStall): readIndexFrom fetches
	// it, stallCleared is the total lost up to the last catch-up, stallMu
	// lets one read at a time catch up.
	readIndexFrom atomic.Pointer[func(ctx context.Context) (uint64, error)]
	stallCleared  atomic.Int64
	stallMu       sync.Mutex
	// silenceCleared is when the silence caught up last ended
	// (catchUpAfterSilence; a monotonic instant).
	silenceCleared atomic.Int64

	mu          sync.Mutex
	leaderFuncs []LeaderFunc
	leaderReady bool // this leader has applied everything committed before it
	// barrier proposes the new leader's barrier; nil means raft's. Tests
	// replace it to hold a barrier.
	barrier func(timeout time.Duration) raft.Future

	// trackApplied's state (applied.go): kicks, the end of its busy
	// period (unix nanoseconds), its poll while idle (tests shorten or
	// lengthen it before Open) and how often it looked.
	appliedKick      chan struct{}
	appliedBusyUntil atomic.Int64
	appliedIdle      time.Duration
	appliedLooks     atomic.Int64

	// failed is closed once a failed fsync of the log, or a write the log
	// refused, stopped the Raft node (logSyncFailed, logWriteFailed;
	// StoppedBy says why).
	failed     chan struct{}
	failedOnce sync.Once
	// writeFailed is why the log refused a write (logWriteFailed).
	writeFailed atomic.Pointer[error]

	// The leader epoch (leadermoves.go): a context that ends at the next
	// leader change.
	epochMu  sync.Mutex
	epoch    context.Context
	endEpoch context.CancelFunc

	stop     chan struct{}
	wg       sync.WaitGroup
	closeErr error
	closed   sync.Once
}

// New returns a Store; it does no I/O.
func New(cfg Config) *Store {
	cfg.fill()
	s := &Store{
		cfg:         cfg,
		log:         cfg.Logger.With("component", "raftstore"),
		fsm:         newFSM(cfg.WatchRing, cfg.WatchRingBytes),
		notify:      make(chan bool, 16),
		appliedKick: make(chan struct{}, 1),
		appliedIdle: appliedIdlePoll,
		stop:        make(chan struct{}),
		failed:      make(chan struct{}),
	}
	s.fsm.waiting = s.kickApplied
	s.epoch, s.endEpoch = context.WithCancel(context.Background())
	return s
}

// OnLeader registers f to run each time this store becomes leader. Call it
// before Open.
func (s *Store) OnLeader(f LeaderFunc) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.leaderFuncs = append(s.leaderFuncs, f)
}

// FSM returns the local replica.
func (s *Store) FSM() *FSM { return s.fsm }

// Open opens the log, snapshots and transport, starts Raft and bootstraps
// when asked to and there is no existing state.
func (s *Store) Open() (err error) {
	cfg := s.cfg
	if cfg.NodeID == "" {
		return fmt.Errorf("%w: raft node id is empty", ErrInvalidArgument)
	}
	if err := migrateLegacyLog(cfg.Dir, cfg.NodeID, s.log); err != nil {
		return err
	}
	walDir := filepath.Join(cfg.Dir, walDirName)
	if err := os.Mkdir(walDir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("open raft log: %w", err)
	}
	s.logs, err = openLog(logOptions{Dir: walDir, NoSync: cfg.NoSync, Member: cfg.NodeID, Logger: s.cfg.Logger, fs: cfg.logFS, syncFirst: cfg.logSyncFirst})
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			s.logs.Close()
		}
	}()
	removeUnfinishedSnapshots(filepath.Join(cfg.Dir, "snapshots"), s.log)
	var snaps raft.SnapshotStore
	snaps, err = raft.NewFileSnapshotStoreWithLogger(cfg.Dir, cfg.RetainSnapshots, NewHCLog(s.cfg.Logger, "snapshot"))
	if err != nil {
		return fmt.Errorf("open snapshot store in %s: %w", cfg.Dir, err)
	}
	if _, err := os.Stat(filepath.Join(cfg.Dir, migratedLogFile)); err == nil {
		snaps = newRetiringSnapshots(snaps, cfg.Dir, s.log)
	}
	s.snaps = snaps
	if s.transport, err = s.newTransport(); err != nil {
		return err
	}
	s.pusher = newCommitPusher(s.transport.sendUnobserved, s.leaderTerm, s.log)
	s.transport.onAppend = s.pusher.observe
	s.transport.commitCap = s.logs.ahead.durableIndex
	s.logs.ahead.onFail = s.logSyncFailed
	fsm := pushingFSM{FSM: s.fsm, pusher: s.pusher, log: s.logs.ahead} // raft's view of the FSM
	defer func() {
		if err != nil {
			s.transport.Close()
			s.pusher.Close()
		}
	}()

	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.NodeID)
	rc.HeartbeatTimeout = cfg.HeartbeatTimeout
	rc.ElectionTimeout = cfg.ElectionTimeout
	rc.LeaderLeaseTimeout = cfg.LeaderLeaseTimeout
	rc.CommitTimeout = cfg.CommitTimeout
	rc.SnapshotThreshold = cfg.SnapshotThreshold
	rc.SnapshotInterval = cfg.SnapshotInterval
	rc.TrailingLogs = cfg.TrailingLogs
	rc.BatchApplyCh = true
	rc.MaxAppendEntries = 256
	rc.NotifyCh = s.notify
	raftLog := NewHCLog(s.cfg.Logger, "raft").(*hclogAdapter)
	rc.Logger = raftLog
	if err := raft.ValidateConfig(rc); err != nil {
		return fmt.Errorf("%w: raft config: %v", ErrInvalidArgument, err)
	}

	existing, err := raft.HasExistingState(s.logs, s.logs, snaps)
	if err != nil {
		return fmt.Errorf("read raft state in %s: %w", cfg.Dir, err)
	}
	s.hadState = existing
	if existing && cfg.VoteHold > 0 {
		s.transport.votes.heldUntil.Store(monotime.Of(time.Now().Add(cfg.VoteHold)))
	}
	if s.replayTo, err = s.logs.LastIndex(); err != nil {
		return fmt.Errorf("read raft state in %s: %w", cfg.Dir, err)
	}
	var logs raft.LogStore = s.logs
	if cfg.WrapLogStore != nil {
		logs = monotonicLog{cfg.WrapLogStore(logs)}
	}
	logs = &stopOnWriteError{LogStore: logs, failed: s.logWriteFailed}
	// raft reads back each entry it sends a follower (and a follower the
	// entry before the ones it appends): from memory, not from the WAL's
	// files with a pread and a decode each (6 % of a 3-agent cluster's
	// CPU under load). Entries are cached once stored, and the cache is
	// emptied when raft deletes log entries.
	if logs, err = raft.NewLogCache(logCacheEntries, logs); err != nil {
		return fmt.Errorf("open raft log cache: %w", err)
	}
	if s.raft, err = raft.NewRaft(rc, fsm, logs, s.logs, snaps, s.transport); err != nil {
		return fmt.Errorf("start raft: %w", err)
	}
	if s.addrs != nil {
		s.addrs.raft.Store(s.raft)
	}
	s.logs.ahead.setLeader(func() bool { return s.raft.State() == raft.Leader })
	raftLog.noise.setResolve(s.serverIDAt)
	if !existing && cfg.Bootstrap {
		self := Server{ID: cfg.NodeID, Address: string(s.transport.LocalAddr()), Suffrage: Voter}
		if err := s.BootstrapCluster([]Server{self}); err != nil {
			s.raft.Shutdown()
			return err
		}
	}
	s.watchPeersBack(raftLog)
	s.watchHeartbeats()
	s.watchLeaderMoves()
	s.watchContact()
	s.wg.Add(2)
	go s.watchLeadership()
	go s.trackApplied()
	return nil
}

func (s *Store) newTransport() (*transport, error) {
	cfg := s.cfg
	votes := newVoteGate(s.logs, s.snaps, NewHCLog(s.cfg.Logger, "raft"))
	votes.stable, votes.lastIndex, votes.applied = s.logs, s.logs.LastIndex, s.fsm.Revision
	if err := votes.loadFloor(); err != nil {
		return nil, fmt.Errorf("read raft state in %s: %w", cfg.Dir, err)
	}
	netLog := NewHCLog(s.cfg.Logger, "raft-net")
	tc := &raft.NetworkTransportConfig{
		MaxPool: 4, Timeout: 5 * time.Second, Logger: netLog,
		Stream: cfg.StreamLayer,
		// No pipelined replication: with raft's default of two RPCs in
		// flight its pipeline channels are unbuffered, and a follower's
		// rejected AppendEntries can deadlock the leader's replication to
		// it (heartbeats go on, entries never come, Shutdown hangs); seen
		// in the robustness suite. One RPC in flight turns it off.
		MaxRPCsInFlight: 1,
	}
	if cfg.ServerAddr != nil {
		s.addrs = &serverAddrs{lookup: cfg.ServerAddr}
		tc.ServerAddressProvider = s.addrs
	}
	if tc.Stream == nil {
		var adv net.Addr
		if cfg.AdvertiseAddr != "" {
			a, err := net.ResolveTCPAddr("tcp", cfg.AdvertiseAddr)
			if err != nil {
				return nil, fmt.Errorf("%w: raft advertise address %q: %v", ErrInvalidArgument, cfg.AdvertiseAddr, err)
			}
			adv = a
		}
		l, err := net.Listen("tcp", cfg.BindAddr)
		if err != nil {
			return nil, fmt.Errorf("listen for raft on %s: %w", cfg.BindAddr, err)
		}
		if adv == nil {
			adv = l.Addr()
			if a := l.Addr().(*net.TCPAddr); a.IP.IsUnspecified() {
				l.Close()
				return nil, fmt.Errorf("%w: raft binds %s: set an advertise address peers can reach", ErrInvalidArgument, cfg.BindAddr)
			}
		}
		tc.Stream = NewTCPStreamLayer(l, adv)
	}
	tc.Stream = guardInbound(tc.Stream, netLog, &hello{cluster: s.fsm.ClusterID, speaks: cfg.PeerHello})
	return newObservingTransport(raft.NewNetworkTransportWithConfig(tc), votes, s.cfg.StaleReadBound), nil
}

// NewTCPStreamLayer is Raft's stream layer over plain TCP: it accepts on
// ln, dials peers directly and tells them advertise. A Store without a
// stream layer of its own makes one; node wraps one in TLS.
func NewTCPStreamLayer(ln net.Listener, advertise net.Addr) raft.StreamLayer {
	return &tcpStreamLayer{Listener: ln, advertise: advertise}
}

// tcpStreamLayer is raft's StreamLayer over plain TCP.
type tcpStreamLayer struct {
	net.Listener
	advertise net.Addr
}

func (t *tcpStreamLayer) Addr() net.Addr { return t.advertise }

func (t *tcpStreamLayer) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	return net.DialTimeout("tcp", string(addr), timeout)
}

// leaderTerm returns raft's current term and whether this store leads.
func (s *Store) leaderTerm() (uint64, bool) {
	return s.raft.CurrentTerm(), s.raft.State() == raft.Leader
}

// HadState reports whether Raft state (log or snapshots) existed when the
// store was opened: such a store must never bootstrap.
func (s *Store) HadState() bool { return s.hadState }

// BootstrapCluster starts a new cluster with servers as its voters. Every
// server bootstrapping with the same list is safe; a store that has state
// returns nil without changing anything.
func (s *Store) BootstrapCluster(servers []Server) error {
	var cfg raft.Configuration
	for _, srv := range servers {
		sf := raft.Voter
		if srv.Suffrage == Nonvoter {
			sf = raft.Nonvoter
		}
		cfg.Servers = append(cfg.Servers, raft.Server{ID: raft.ServerID(srv.ID), Address: raft.ServerAddress(srv.Address), Suffrage: sf})
	}
	err := s.raft.BootstrapCluster(cfg).Error()
	if errors.Is(err, raft.ErrCantBootstrap) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("bootstrap raft: %w", err)
	}
	s.log.Info("bootstrapped a new cluster", "voters", len(servers))
	return nil
}

// RaftAddr is the address peers use to reach this store's Raft transport.
func (s *Store) RaftAddr() string { return string(s.transport.LocalAddr()) }

// watchLeadership runs the leader functions while this node leads.
func (s *Store) watchLeadership() {
	defer s.wg.Done()
	var (
		cancel  context.CancelFunc = func() {}
		leaders sync.WaitGroup
	)
	stopLeading := func() {
		// Close the read gate before anything else: the leader functions
		// may take a while to return, and meanwhile this node may already
		// lead again without having run its new barrier. Cancelling under
		// the lock makes lead's check-and-set see the cancellation.
		s.mu.Lock()
		s.leaderReady = false
		cancel()
		s.mu.Unlock()
		leaders.Wait()
	}
	defer stopLeading()
	for {
		select {
		case <-s.stop:
			return
		case isLeader := <-s.notify:
			stopLeading()
			if !isLeader {
				s.log.Info("lost leadership")
				continue
			}
			ctx, c := context.WithCancel(context.Background())
			cancel = c
			leaders.Add(1)
			go func() {
				defer leaders.Done()
				s.lead(ctx, &leaders)
			}()
		}
	}
}

// lead waits until the new leader has applied everything committed before it
// (a barrier), then starts the leader functions.
func (s *Store) lead(ctx context.Context, wg *sync.WaitGroup) {
	s.log.Info("became leader", "node", s.cfg.NodeID)
	barrier := s.barrier
	if barrier == nil {
		barrier = s.raft.Barrier
	}
	for {
		err := s.wait(ctx, barrier(s.cfg.ApplyTimeout))
		if err == nil {
			break
		}
		s.log.Warn("leader barrier failed; retrying", "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
	s.mu.Lock()
	if ctx.Err() != nil { // leadership ended while the barrier ran
		s.mu.Unlock()
		return
	}
	s.leaderReady = true
	funcs := append([]LeaderFunc(nil), s.leaderFuncs...)
	s.mu.Unlock()
	for _, f := range funcs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f(ctx)
		}()
	}
}

// Apply proposes cmd and waits until this replica has applied it. It returns
// the entry's revision. ErrNotLeader means the caller must forward; an error
// from the state machine (ErrNotFound, ...) comes back as is.
func (s *Store) Apply(ctx context.Context, cmd *pb.Command) (uint64, error) {
	if cmd.Time == 0 {
		cmd.Time = s.now().UnixNano()
	}
	cmd.ClockStep = s.ClusterAt(clockStepVersion)
	s.DropUnsupported(cmd)
	b, err := instcodec.EncodeCommand(cmd)
	if err != nil {
		return 0, fmt.Errorf("encode command: %w", err)
	}
	timeout := s.cfg.ApplyTimeout
	if dl, ok := ctx.Deadline(); ok {
		timeout = time.Until(dl)
		if timeout <= 0 {
			return 0, context.DeadlineExceeded
		}
	}
	select {
	case <-s.stop:
		return 0, ErrShuttingDown
	default:
	}
	f := s.raft.Apply(b, timeout)
	if err := s.wait(ctx, f); err != nil {
		return 0, RaftError(err)
	}
	switch resp := f.Response().(type) {
	case Duplicate:
		return resp.Revision, resp.Err
	case error:
		return f.Index(), resp
	}
	return f.Index(), nil
}

// wait waits for f unless ctx ends or the store closes first. Raft can accept an entry
// into its (buffered) apply channel while it shuts down and then never
// resolve the future; without this a caller would wait forever.
func (s *Store) wait(ctx context.Context, f raft.Future) error {
	done := make(chan error, 1)
	go func() { done <- f.Error() }()
	select {
	case err := <-done:
		if errors.Is(err, raft.ErrRaftShutdown) || errors.Is(err, raft.ErrLeadershipLost) {
			switch { // not shutting down: stopped by the failed fsync or write
			case s.logs.ahead.failure() != nil:
				return errLogNotDurable
			case s.writeFailed.Load() != nil:
				return errLogWriteFailed
			}
		}
		return err
	case <-ctx.Done():
		return fmt.Errorf("%w (the write may still be applied)", ctx.Err())
	case <-s.stop:
		select {
		case err := <-done:
			return err
		case <-time.After(time.Second):
			return ErrShuttingDown
		}
	}
}

// RaftError maps raft's errors to the API's.
func RaftError(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipTransferInProgress):
		return fmt.Errorf("%w: %v", ErrNotLeader, err)
	case errors.Is(err, raft.ErrLeadershipLost):
		return fmt.Errorf("%w: leadership lost while committing; the write may or may not have been applied", ErrNoLeader)
	case errors.Is(err, raft.ErrRaftShutdown):
		return ErrShuttingDown
	case errors.Is(err, raft.ErrEnqueueTimeout):
		return fmt.Errorf("%w: timed out waiting for raft to accept the write", ErrNoLeader)
	case strings.Contains(err.Error(), syscall.ENOSPC.Error()):
		// raft quotes the log store's error (lowSpaceFS): the append was
		// rolled back and the leader steps down.
		return fmt.Errorf("%w: the leader could not store the write in its Raft log, so it was not applied: %v; "+
			"free space in that agent's data dir (the cluster goes on once another agent leads)", apierr.ErrDiskFull, err)
	}
	return err
}

// defaultReadWait bounds how long a DEFAULT read waits for this replica
// to replay its log after a restart and to apply the leader's commit index
// before it is refused.
const defaultReadWait = time.Second

// logCacheEntries is how many of the newest Raft log entries the store
// keeps in memory for raft to read back (LogCache): four of raft's
// largest AppendEntries batches, so that a follower a few batches behind
// is still served from memory.
const logCacheEntries = 1024

// CheckRead is CheckReadContext without a caller's context: its waits are
// bounded by the store's own limits.
func (s *Store) CheckRead(c pb.Consistency) error {
	return s.CheckReadContext(context.Background(), c)
}

// CheckReadContext reports whether this replica may serve a read of
// consistency c. STALE reads always may, even from a replica that has not
// replayed its log after a restart. DEFAULT reads wait (up to
// defaultReadWait or until ctx ends) until the replica has applied the log
// it had on disk when the store opened; on a follower they also wait until
// it has applied the commit index the leader last sent it, which must have
// arrived within StaleReadBound. For CONSISTENT it must be the leader (else
// ErrNotLeader: forward), confirms its leadership with a quorum and waits
// until it has applied its commit index of the read's start.
func (s *Store) CheckReadContext(ctx context.Context, c pb.Consistency) error {
	switch c {
	case pb.Consistency_STALE:
		return nil
	case pb.Consistency_DEFAULT:
		ctx, cancel := context.WithTimeout(ctx, defaultReadWait)
		defer cancel()
		if err := s.waitReplayed(ctx); err != nil {
			return err
		}
		term := s.raft.CurrentTerm()
		if s.raft.State() == raft.Leader {
			err := s.leaderHeard(ctx, term)
			if !errors.Is(err, errLostLeadership) {
				return err
			}
			// Deposed meanwhile: read as a follower.
		}
		if err := s.catchUpAfterStall(ctx); err != nil {
			return err
		}
		if err := s.catchUpAfterSilence(ctx); err != nil {
			return err
		}
		return s.waitLeaderCommit(ctx)
	case pb.Consistency_CONSISTENT:
		// Followers may show a write before the leader's FSM applies it
		// (commitpush.go): the read waits for what was committed when it
		// began.
		commit, err := s.ReadIndex(ctx)
		if err != nil {
			return err
		}
		return s.waitApplied(ctx, commit)
	}
	return fmt.Errorf("%w: consistency %v", ErrInvalidArgument, c)
}

// waitApplied waits, up to defaultReadWait or until ctx ends, until the
// leader's FSM has applied its commit index commit.
func (s *Store) waitApplied(ctx context.Context, commit uint64) error {
	ctx, cancel := context.WithTimeout(ctx, defaultReadWait)
	defer cancel()
	if err := s.fsm.WaitRevision(ctx, commit); err != nil {
		return fmt.Errorf("%w: the leader is still applying what it committed (applied %d of commit index %d); retry: %w",
			ErrNoLeader, s.fsm.Revision(), commit, err)
	}
	return nil
}

// waitReplayed waits, until ctx ends, until the replica has applied
// everything the log held when the store opened.
func (s *Store) waitReplayed(ctx context.Context) error {
	if s.replayed.Load() {
		return nil
	}
	// Entries past the leader's log were never committed: a leader
	// truncates them, and they are not waited for.
	target := s.replayTo
	if last, err := s.logs.LastIndex(); err == nil && last < target {
		target = last
	}
	if err := s.fsm.WaitRevision(ctx, target); err != nil {
		return fmt.Errorf("%w: this agent is still replaying its Raft log after a restart (applied %d of %d); read with consistency=stale to use its replica anyway",
			ErrStaleRead, s.fsm.Revision(), target)
	}
	s.replayed.Store(true)
	return nil
}

// LearnCommitted raises to index the commit index this store's vote gate
// knows of (a peer's CommitSeen): a candidate whose log ends before it is
// refused the vote (votegate.go).
func (s *Store) LearnCommitted(index uint64) { s.transport.votes.learn(index) }

// ReleaseVotes ends the hold on votes a restarted store began with
// (Config.VoteHold).
func (s *Store) ReleaseVotes() { s.transport.votes.heldUntil.Store(0) }

// CommitSeen is the highest index this store knows committed: what it has
// applied, a higher commit index a leader sent it since it started, or
// one its peers told it of. A restarted peer asks for it (votegate.go).
func (s *Store) CommitSeen() uint64 {
	return max(s.fsm.Revision(), s.transport.votes.commitIndex())
}

// waitLeaderCommit waits, until ctx ends, until this follower has applied
// the commit index the leader last sent it. Heartbeats alone do not do:
// they carry no commit index, and after a partition heals they resume
// while replication to this agent may still be backing off, so the
// replica can be far behind a leader it hears from.
func (s *Store) waitLeaderCommit(ctx context.Context) error {
	if addr, _ := s.raft.LeaderWithID(); addr == "" {
		return fmt.Errorf("%w: this agent knows no leader; read with consistency=stale to use its replica anyway", ErrStaleRead)
	}
	commit, at := s.transport.LeaderCommit()
	if at.IsZero() {
		return fmt.Errorf("%w: no leader has replicated its log to this agent since it started; read with consistency=stale to use its replica anyway", ErrStaleRead)
	}
	if age := time.Since(at); age > s.cfg.StaleReadBound {
		return fmt.Errorf("%w: the leader last replicated its log to this agent %s ago (bound %s); read with consistency=stale to use its replica anyway",
			ErrStaleRead, age.Round(time.Millisecond), s.cfg.StaleReadBound)
	}
	if err := s.fsm.WaitRevision(ctx, commit); err != nil {
		behind := commit - min(commit, s.fsm.Revision())
		return fmt.Errorf("%w: replica %d entries behind the leader's commit index %d; retry, or read with consistency=consistent",
			ErrStaleRead, behind, commit)
	}
	return nil
}

// IsLeader reports whether this store is the Raft leader.
func (s *Store) IsLeader() bool { return s.raft.State() == raft.Leader }

// Leader returns the leader's Raft address and server ID, empty if unknown.
func (s *Store) Leader() (addr, id string) {
	a, i := s.raft.LeaderWithID()
	return string(a), string(i)
}

// WaitLeader blocks until some leader is known or ctx ends.
func (s *Store) WaitLeader(ctx context.Context) error {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		if a, _ := s.raft.LeaderWithID(); a != "" {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: no leader elected: %v", ErrNoLeader, ctx.Err())
		case <-t.C:
		}
	}
}

// Failed is closed once the store has stopped its Raft node after a
// failure (StoppedBy says which): the agent should stop too, and be
// restarted.
func (s *Store) Failed() <-chan struct{} { return s.failed }

// logSyncFailed stops the Raft node after a background fsync of the
// leader's log failed (syncahead.go): raft has counted entries this agent
// holds in no durable copy, and no later fsync can vouch for them.
func (s *Store) logSyncFailed(err error) {
	s.log.Error("fsync of the Raft log failed: this agent stops its Raft node and applies nothing more; check its disk, then restart it (it reads back what the disk holds, the cluster has the rest)",
		"err", err)
	s.stopRaftNode()
}

// stopRaftNode closes Failed and shuts the Raft node down, the agent
// running on without it until it exits.
func (s *Store) stopRaftNode() {
	s.failedOnce.Do(func() { close(s.failed) })
	go func() {
		// Error waits for the shutdown and closes the transport: peers get
		// refused at once, not a timeout per call.
		_ = s.raft.Shutdown().Error()
	}()
}

// errLogWriteFailed answers the writes in flight when the log refused a
// write and the Raft node stopped.
var errLogWriteFailed = fmt.Errorf("%w: this agent's Raft log refused a write, so it stopped its Raft node; "+
	"the write may or may not have been applied (the other agents may commit it): retry it; restart this agent once its disk is checked", ErrNoLeader)

// logWriteFailed stops the Raft node once the log failed an append right
// after raft truncated its tail (stopOnWriteError): raft's idea of the
// log is then no longer the disk's. As after a failed fsync, the agent
// stops its Raft node and is restarted (the process exits: Failed); the
// restart reads back what the disk holds, and the cluster has the rest.
func (s *Store) logWriteFailed(err error) {
	select {
	case <-s.stop: // closing: the log is going away
		return
	default:
	}
	if !s.writeFailed.CompareAndSwap(nil, &err) {
		return
	}
	s.log.Error("the Raft log refused a write: this agent stops its Raft node and applies nothing more; check its disk, then restart it (it reads back what the disk holds, the cluster has the rest)",
		"err", err)
	s.stopRaftNode()
}

// Close stops Raft and closes the log. It is safe to call more than once.
func (s *Store) Close() error {
	s.closed.Do(func() {
		close(s.stop)
		if s.raft != nil {
			if err := s.raft.Shutdown().Error(); err != nil {
				s.closeErr = fmt.Errorf("shut down raft: %w", err)
			}
		}
		s.wg.Wait()
		if s.transport != nil {
			s.transport.Close()
		}
		if s.pusher != nil {
			s.pusher.Close()
		}
		if s.logs != nil {
			if err := s.logs.Close(); err != nil && s.closeErr == nil {
				s.closeErr = fmt.Errorf("close raft log: %w", err)
			}
		}
	})
	return s.closeErr
}

// LeaderReady reports whether this agent leads and has applied everything
// committed before it did (its barrier): until then its replica may lack
// writes already acknowledged.
func (s *Store) LeaderReady() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.leaderReady
}

// now is the wall clock stamped on commands (Config.Now).
func (s *Store) now() time.Time {
	if s.cfg.Now != nil {
		return s.cfg.Now()
	}
	return time.Now()
}
