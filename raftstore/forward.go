package raftstore

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/zrpcio/zrpc/api/apierr"
	pb "github.com/zrpcio/zrpc/api/zrpcpb"
)

// Leader forwarding: what must run on the leader (writes, consistent
// reads, TTL renewals) runs locally when this store leads, and otherwise
// through the leader's gRPC API, whose address the registry's node table
// holds. While there is no leader, or the leader moves, a call is retried
// with a short backoff until LeaderWait has passed; then it fails with
// ErrNoLeader (Unavailable).

// Dialer returns a connection to the gRPC API of the agent at addr. The
// connection belongs to the dialer: the forwarder never closes it.
type Dialer func(ctx context.Context, addr string) (grpc.ClientConnInterface, error)

// ForwardConfig configures a Forwarder.
type ForwardConfig struct {
	// LeaderWait bounds how long a call waits for a leader to answer.
	LeaderWait time.Duration
	// Dial connects to a peer's gRPC API (with the agent's credentials).
	Dial Dialer
	// LocalApply, when set, replaces Store.Apply for the commands this
	// store applies as the leader (the agent stamps registrations with its
	// registry limits and counts them).
	LocalApply func(ctx context.Context, cmd *pb.Command) (uint64, error)
	// Done, when closed, makes waiting calls fail with ErrShuttingDown.
	Done <-chan struct{}
	// Reach, when set, tells which voters this agent can reach (its
	// gossip's view): a call that finds too few of them for a leader
	// stops waiting after quorumLostWait, and the error says which are
	// unreachable. Voters counted out only on gossip meta that may lag
	// (Reach.Lagging) do not stop it early: they may be electing a leader.
	Reach ReachFunc
}

// quorumLostWait is how long a call waits for a leader when fewer voters
// are reachable than a leader needs (the agents may be coming back), before
// it fails saying so, instead of waiting the whole LeaderWait.
const quorumLostWait = time.Second

// answerMargin is how long before the caller's deadline a call stops
// waiting for a leader, so that the caller gets ErrNoLeader rather than
// its own deadline: a tenth of the time left, at most 250 ms.
func answerMargin(left time.Duration) time.Duration {
	return min(left/10, 250*time.Millisecond)
}

// answerBy is when a call that began at start stops waiting for the
// leader so that its caller hears why in time: answerMargin before ctx's
// deadline (at the earliest start); false when ctx has no deadline.
func answerBy(ctx context.Context, start time.Time) (time.Time, bool) {
	d, ok := ctx.Deadline()
	if !ok {
		return time.Time{}, false
	}
	left := max(d.Sub(start), 0)
	return start.Add(left - answerMargin(left)), true
}

// Forwarder runs calls on the leader. It is safe for concurrent use; its
// only goroutines are batches of forwarded writes in flight
// (forwardbatch.go), each ending with its call.
type Forwarder struct {
	store *Store
	cfg   ForwardConfig

	mu       sync.Mutex
	batchers map[grpc.ClientConnInterface]*forwardBatcher // by leader connection
	// sent, when set, is called with the commands of every forwarding
	// call (tests count them).
	sent func(cmds int)
	// failures counts and logs the calls that failed (forwardmetrics.go).
	failures *forwardFailures
}

// NewForwarder returns a Forwarder for s.
func NewForwarder(s *Store, cfg ForwardConfig) *Forwarder {
	if cfg.LocalApply == nil {
		cfg.LocalApply = s.Apply
	}
	return &Forwarder{store: s, cfg: cfg, batchers: make(map[grpc.ClientConnInterface]*forwardBatcher), failures: newForwardFailures()}
}

// batcher returns the batcher of the writes forwarded over conn.
func (f *Forwarder) batcher(conn grpc.ClientConnInterface) *forwardBatcher {
	f.mu.Lock()
	defer f.mu.Unlock()
	b := f.batchers[conn]
	if b == nil {
		b = &forwardBatcher{conn: conn, sent: f.sent, current: func() (context.Context, bool) {
			epoch := f.store.leaderEpoch() // before the leader is read
			c, _, err := f.leaderConn(context.Background())
			return epoch, err == nil && c == conn && !f.store.IsLeader()
		}}
		f.batchers[conn] = b
	}
	return b
}

// leaderConn returns a connection to the current leader's gRPC API and
// the leader as "<id> at <address>", or ErrNoLeader when the leader or its
// address is not known yet.
func (f *Forwarder) leaderConn(ctx context.Context) (grpc.ClientConnInterface, string, error) {
	_, id := f.store.Leader()
	if id == "" {
		return nil, "", ErrNoLeader
	}
	node := f.store.FSM().Node(id)
	if node == nil || node.GrpcAddress == "" {
		return nil, "", fmt.Errorf("%w: gRPC address of leader %s not known yet", ErrNoLeader, id)
	}
	c, err := f.cfg.Dial(ctx, node.GrpcAddress)
	if err != nil {
		return nil, "", fmt.Errorf("dial leader %s: %w", id, err)
	}
	return c, id + " at " + node.GrpcAddress, nil
}

// OnLeader runs local when this store leads, remote with a connection to
// the leader otherwise. It retries while there is no leader or the leader
// moves, until LeaderWait has passed or ctx's deadline is near (see
// answerMargin), then returns ErrNoLeader; when Reach says too few voters
// are reachable for a leader, it returns ErrNoLeader saying which after
// quorumLostWait; when this agent, in contact with a leader once, is cut
// off from it now (contact.go: no leader has replicated to it for
// StaleReadBound) and knows no leader, the first attempt that fails
// returns ErrNoLeader saying so: a client that can reach another agent
// should not wait here. remote runs in a context derived from ctx that also
// ends when the leader this store sees changes (leadermoves.go): the call
// is then asked again of the new leader, so remote must be safe to repeat;
// it ends answerMargin before ctx's deadline too, as ErrNoLeader.
// remote's gRPC errors are mapped back to the API's sentinels.
//
// OnLeader is for reads: a write runs through Write (or Apply), whose
// failure says when the write was certainly not applied.
func (f *Forwarder) OnLeader(ctx context.Context, local func() error, remote func(context.Context, grpc.ClientConnInterface) error) error {
	_, err := f.onLeader(ctx, local, remote)
	return err
}

// Write runs a write on the leader as OnLeader runs a call (local when
// this store leads, remote with a connection to the leader otherwise, the
// same waits and retries), and marks its failure apierr.NotApplied when
// the failure is certain: Write ran neither local nor remote (it knew no
// leader, or was cut off from it, for the whole wait) and fails with
// ErrNoLeader. Once local or remote has run, the write may have been
// applied (a proposal may commit after its leader stopped answering, a
// forwarded request may have reached the leader before its connection
// broke), and its failure is left unmarked. remote must be safe to
// repeat, as for OnLeader. Apply, TTL renewals, snapshot restores and the
// agent's other writes on the leader run through it.
func (f *Forwarder) Write(ctx context.Context, local func() error, remote func(context.Context, grpc.ClientConnInterface) error) error {
	sent, err := f.onLeader(ctx, local, remote)
	if err != nil && !sent && errors.Is(err, ErrNoLeader) {
		// Proposed nowhere, sent nowhere: the caller may send it again
		// as it is, or count it failed for certain.
		err = apierr.NotApplied(err)
	}
	return err
}

// onLeader is OnLeader, also telling whether it ran local or remote at all
// (sent): when it did not, the call went nowhere. A failure that is
// forwarding's (attemptFailure) is counted and logged (noteFailure).
func (f *Forwarder) onLeader(ctx context.Context, local func() error, remote func(context.Context, grpc.ClientConnInterface) error) (sent bool, err error) {
	var (
		reason ForwardFailure // why the last attempt failed, when failed
		failed bool
		leader string // the leader the last attempt asked
	)
	defer func() {
		if err != nil && failed && !errors.Is(err, context.Canceled) && !errors.Is(err, ErrShuttingDown) {
			f.noteFailure(reason, leader, err)
		}
	}()
	start := time.Now()
	wait := f.cfg.LeaderWait
	if by, ok := answerBy(ctx, start); ok && by.Sub(start) < wait {
		wait = by.Sub(start)
	}
	deadline := start.Add(wait)
	var last error
	for attempt := 0; ; attempt++ {
		var err error
		asked := "" // the leader this attempt asked, as "<id> at <address>"
		ranLocal := f.store.IsLeader()
		if ranLocal {
			sent = true
			err = local()
		} else {
			epoch := f.store.leaderEpoch() // before the leader is read
			if conn, leader, cerr := f.leaderConn(ctx); cerr != nil {
				err = cerr
			} else {
				sent, asked = true, leader
				err = callLeader(ctx, epoch, start, func(ctx context.Context) error { return apierr.FromStatus(remote(ctx, conn)) })
			}
		}
		reason, failed = attemptFailure(err, ranLocal, asked != "")
		leader = asked
		if !RetryOnLeader(err) {
			return sent, err
		}
		last = err
		if asked != "" {
			last = fmt.Errorf("leader %s: %w", asked, err)
		}
		// The leader Raft knows did not answer (rather than answer that
		// it no longer leads, or lose leadership meanwhile).
		silent := asked != "" && !errors.Is(err, ErrNotLeader) && !errors.Is(err, errLeaderMoved)
		now := time.Now()
		q, known := f.quorum()
		// Cut off for StaleReadBound already: waiting longer here is
		// unlikely to find a leader, and the caller may reach one
		// through another agent.
		why := f.store.contactLost()
		if why != "" {
			reason, failed = ForwardNoLeader, true
			return sent, cutOffError(why, q, known)
		}
		if known && q.SurelyLost() && now.Sub(start) >= min(quorumLostWait, wait) {
			reason, failed = ForwardNoLeader, true
			return sent, quorumLostError(q)
		}
		if !now.Before(deadline) {
			what, voters := "no leader answered", "is a majority of voters up?"
			switch {
			case known && q.Lost():
				voters = q.String() + ";"
			case silent:
				// Raft knows the leader; its gRPC API is what failed.
				what, voters = "the leader did not answer", "is that agent's gRPC API up and reachable from this agent?"
			case known:
				// Gossip counts enough voters for a leader, yet none
				// answered: say why that can be, not only the count.
				voters = q.String() + ", by gossip's count: enough for a leader, so an election may be under way, " +
					"or a voter went down too recently for gossip to have noticed (it takes seconds);"
			}
			return sent, fmt.Errorf("%w: %s within %s (last error: %v); %s check `zrpcctl raft peers`",
				ErrNoLeader, what, wait.Round(time.Millisecond), last, voters)
		}
		select {
		case <-ctx.Done():
			return sent, fmt.Errorf("waiting for a leader: %w (last error: %v)", ctx.Err(), last)
		case <-f.cfg.Done:
			return sent, ErrShuttingDown
		case <-f.store.stop:
			return sent, ErrShuttingDown
		case <-time.After(min(backoff(attempt), deadline.Sub(now))):
		}
	}
}

// CutOff returns the error a write through this agent fails with at
// once while it is cut off from the leader and knows none (the store's
// contact, contact.go), marked apierr.NotApplied; nil when it is not.
// Work that would end in a write, but first decides on this agent's own
// view of the cluster (a blob put places its shards on the agents its
// gossip counts alive, which on the minority side of a partition is the
// minority), asks it first: the caller then goes to another agent
// rather than acting on that view.
func (f *Forwarder) CutOff() error {
	why := f.store.contactLost()
	if why == "" {
		return nil
	}
	q, known := f.quorum()
	return apierr.NotApplied(cutOffError(why, q, known))
}

// cutOffError is the ErrNoLeader of a call on a store cut off from the
// leader (why), q the voters it reaches by gossip's count (known: it
// has one): the count when gossip already says too few voters are
// reachable, the store's own reason otherwise (gossip may not have
// noticed yet: isolation takes about a second, gossip's failure detection
// several).
func cutOffError(why string, q Quorum, known bool) error {
	if known && q.Lost() {
		return quorumLostError(q)
	}
	count := ""
	if known {
		// Not a contradiction of why: gossip takes seconds to declare an
		// agent failed (`zrpcctl status` asks the voters at once), and
		// may reach agents Raft cannot.
		count = ", which takes seconds to notice a failure and still counts " + q.String()
	}
	return fmt.Errorf("%w: this agent is cut off from the leader: %s; another agent may reach it (a client given several agents goes on to the next); restart the agents this one cannot reach or mend the network to them (`zrpcctl members` shows what this agent's gossip sees%s)",
		ErrNoLeader, why, count)
}

// quorumLostError is the ErrNoLeader of a call on a store that reaches
// too few voters, by gossip's count q, for a leader.
func quorumLostError(q Quorum) error {
	return fmt.Errorf("%w: %s; restart the unreachable agents or mend the network to them (`zrpcctl members` shows what this agent's gossip sees); if a majority is gone for good, see `zrpcd agent recover --help`",
		ErrNoLeader, q)
}

// callLeader runs call, a call of the leader's API made by a call to
// OnLeader that began at start, in its epoch (callInEpoch), and ends it
// answerMargin before ctx's deadline: a leader that takes the call and
// does not answer by then fails it with ErrNoLeader, which the caller
// hears before its own deadline.
func callLeader(ctx, epoch context.Context, start time.Time, call func(context.Context) error) error {
	by, bounded := answerBy(ctx, start)
	if !bounded {
		return callInEpoch(ctx, epoch, call)
	}
	cctx, cancel := context.WithDeadline(ctx, by)
	defer cancel()
	err := callInEpoch(cctx, epoch, call)
	if deadlineExceeded(err) && ctx.Err() == nil && !time.Now().Before(by) {
		return leaderSilent{fmt.Errorf("%w: the leader did not answer before the caller's deadline (%v)", ErrNoLeader, err)}
	}
	return err
}

// callInEpoch runs call in a context that ends with ctx or with epoch,
// and returns errLeaderMoved (wrapping call's error) for a call cancelled
// once the epoch had ended, and so by it. Other errors are call's: a
// relay that had sent part of its answer when it was cut (Snapshot.Save)
// says Aborted, which is not asked again.
func callInEpoch(ctx, epoch context.Context, call func(context.Context) error) error {
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(epoch, cancel)
	defer stop()
	err := call(cctx)
	cancelled := status.Code(err) == codes.Canceled || errors.Is(err, context.Canceled)
	if cancelled && ctx.Err() == nil && epoch.Err() != nil {
		return fmt.Errorf("%w (%v)", errLeaderMoved, err)
	}
	return err
}

// Apply commits cmd through the leader and returns its revision: with
// LocalApply on the leader, through the leader's Internal API elsewhere,
// together with the other writes forwarded at the same time
// (forwardbatch.go). A forwarded attempt is bounded by what is left of
// LeaderWait (at least a second), and ends answerMargin before the
// caller's deadline (if any): a leader that went silent without closing
// its connection fails the write with ErrNoLeader then, not when the
// caller's deadline or keepalive ends it. A forwarded write
// is answered once this replica has applied it too (waiting up to a
// second, woken by the FSM's apply), so that the caller reads its own
// write from this agent. The leader pushes its commit index to followers
// as soon as it has applied (commitpush.go), so the wait is about one
// round trip. It runs through Write, so a failure it is certain of is
// marked apierr.NotApplied.
func (f *Forwarder) Apply(ctx context.Context, cmd *pb.Command) (uint64, error) {
	var rev uint64
	start := time.Now()
	deadline := start.Add(f.cfg.LeaderWait)
	by, bounded := answerBy(ctx, start)
	err := f.Write(ctx,
		func() (err error) {
			rev, err = f.cfg.LocalApply(ctx, cmd)
			return err
		},
		func(actx context.Context, c grpc.ClientConnInterface) error {
			// The last attempt gets at least a second, whatever is left,
			// but ends in time for the caller to hear why.
			now := time.Now()
			attempt := later(deadline, now.Add(time.Second))
			if bounded && by.Before(attempt) {
				attempt = by
			}
			r, err := f.batcher(c).apply(actx, cmd, attempt)
			if err == nil {
				rev = r
			} else if deadlineExceeded(err) && !time.Now().Before(attempt) {
				err = leaderSilent{fmt.Errorf("%w: the leader did not answer within %s (leader_wait is %s)",
					ErrNoLeader, attempt.Sub(now).Round(time.Millisecond), f.cfg.LeaderWait)}
			}
			return err
		})
	if err == nil && !f.store.IsLeader() && f.store.FSM().Revision() < rev {
		wctx, cancel := context.WithTimeout(ctx, time.Second)
		f.store.FSM().WaitRevision(wctx, rev)
		cancel()
	}
	return rev, err
}

// ReadIndex returns the leader's read index (Store.ReadIndex): this
// store's when it leads, the leader's through its Internal.ReadIndex
// otherwise.
func (f *Forwarder) ReadIndex(ctx context.Context) (uint64, error) {
	var index uint64
	err := f.OnLeader(ctx,
		func() (err error) {
			index, err = f.store.ReadIndex(ctx)
			return err
		},
		func(ctx context.Context, c grpc.ClientConnInterface) error {
			resp, err := pb.NewInternalClient(c).ReadIndex(ctx, &pb.ReadIndexRequest{})
			if err == nil {
				index = resp.Index
			}
			return err
		})
	return index, err
}

// quorum is which voters this agent can reach; false without Reach or a
// Raft configuration.
func (f *Forwarder) quorum() (Quorum, bool) {
	if f.cfg.Reach == nil {
		return Quorum{}, false
	}
	q, err := f.store.Quorum(f.cfg.Reach)
	return q, err == nil && q.Voters > 0
}

func backoff(attempt int) time.Duration {
	d := 10 * time.Millisecond << min(attempt, 5)
	return min(d, 200*time.Millisecond)
}

// RetryOnLeader reports whether err means "ask the (new) leader again":
// there is none, it moved, or its gRPC endpoint is unreachable.
func RetryOnLeader(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, ErrNotLeader) || errors.Is(err, ErrNoLeader) {
		return true
	}
	// The leader's gRPC endpoint is unreachable (it may have just died).
	st, ok := status.FromError(err)
	return ok && st.Code() == codes.Unavailable && !errors.Is(err, ErrShuttingDown) && !errors.Is(err, ErrStaleRead)
}

// deadlineExceeded reports whether err is a deadline's, a gRPC call's or
// a context's.
func deadlineExceeded(err error) bool {
	return status.Code(err) == codes.DeadlineExceeded || errors.Is(err, context.DeadlineExceeded)
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
