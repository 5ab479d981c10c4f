package gossip

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
)

// Errors callers may branch on.
var (
	// ErrNotStarted: the method needs Start first.
	ErrNotStarted = errors.New("gossip not started")
	// ErrClosed: Close was called.
	ErrClosed = errors.New("gossip closed")
	// ErrLeft: Leave was called; memberlist cannot rejoin or re-advertise
	// after a leave, the agent has to restart.
	ErrLeft = errors.New("gossip left the cluster")
)

const (
	// eventBuffer is the capacity of the Events channel. The queue behind
	// it is unbounded, so this only smooths the hand-off.
	eventBuffer = 256
	// joinInitialBackoff is JoinRetry's first wait.
	joinInitialBackoff = 200 * time.Millisecond
	// updateTimeout bounds how long UpdateMeta waits for its broadcast.
	updateTimeout = 5 * time.Second
	// listedTimeout bounds how long Start waits for the broadcast that
	// records this agent when memberlist did not (ensureListed).
	listedTimeout = time.Second
)

// Gossip is this agent's membership in the cluster: a memberlist instance,
// its event stream and its member table. Its methods are safe for
// concurrent use.
type Gossip struct {
	cfg Config
	// run is this run's id, sent in the meta: peers tell a restart of the
	// agent by it (and drop a leave notice of the run before).
	run         string
	log         *slog.Logger
	mc          *memberlist.Config
	forgetAfter time.Duration
	// nameTakenWait is how long JoinRetry retries while an alive agent
	// has this agent's name (ErrNameTaken) before it gives up.
	nameTakenWait time.Duration
	rejoin        rejoinTimers

	metaMu      sync.Mutex
	metaEncoded []byte // this agent's meta as sent, read by NodeMeta
	clusterID   string // this agent's cluster id, as in metaEncoded
	recovered   string // the id its cluster had before its last recovery, as in metaEncoded

	delegate *delegate // member table and memberlist's callbacks
	clocks   *clocks   // members' clock offsets (clock.go)
	queue    *eventQueue
	out      chan Event
	notices  sync.WaitGroup // leave notices in flight; Close waits for them

	// updateMu serialises UpdateMeta and Leave: no meta update races the
	// goodbye.
	updateMu sync.Mutex
	left     atomic.Bool

	// keyMu serialises the keyring operations and guards mc.Keyring, which
	// Start sets (nil: gossip is not encrypted).
	keyMu sync.Mutex

	// lifeMu guards the fields below. Leave holds it for reading while it
	// runs, because memberlist panics on Leave after Shutdown.
	lifeMu    sync.RWMutex
	ml        *memberlist.Memberlist
	closed    bool
	localAddr string
	stop      chan struct{}
	pumpDone  chan struct{}
	// rejoinStop ends runRejoin, which closes rejoinDone; Close stops it
	// before shutting memberlist down.
	rejoinStop chan struct{}
	rejoinDone chan struct{}

	closeOnce sync.Once
	closeErr  error
	// closing is closed when Close begins: UpdateMeta stops waiting for
	// its broadcast, which memberlist will not send any more.
	closing chan struct{}
}

// New validates cfg and returns a Gossip that is not yet listening. It does
// no I/O.
func New(cfg Config) (*Gossip, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("invalid gossip config: %w", err)
	}
	cfg.Meta = cfg.metaWithName()
	run := newRunID()
	meta, err := cfg.Meta.encodeRun(run)
	if err != nil {
		return nil, err // Validate encoded it already
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	logger = logger.With("component", "gossip")
	g := &Gossip{
		cfg:         cfg,
		run:         run,
		log:         logger,
		metaEncoded: meta,
		clusterID:   cfg.Meta.ClusterID,
		recovered:   cfg.Meta.RecoveredFrom,
		queue:       newEventQueue(),
		out:         make(chan Event, eventBuffer),
		closing:     make(chan struct{}),
	}
	g.delegate = newDelegate(logger, cfg.Name, g.metaBytes, g.identity, g.queue)
	clock := cfg.Clock
	if clock == nil {
		clock = time.Now
	}
	g.clocks = newClocks(logger, clock)
	g.delegate.onGone = g.clocks.forget
	if cfg.nameConflictWait > 0 {
		g.delegate.conflictWait = cfg.nameConflictWait
	}
	g.mc = g.memberlistConfig()
	g.delegate.forward = g.forwardLeaveNotice
	g.forgetAfter = g.mc.GossipToTheDeadTime
	g.nameTakenWait = nameTakenWait
	g.rejoin = profileRejoin(cfg.Profile)
	return g, nil
}

// memberlistConfig fills the profile's timers with this agent's identity,
// addresses, delegates and logger. Start adds the keyring.
func (g *Gossip) memberlistConfig() *memberlist.Config {
	c := g.cfg
	mc := profileConfig(c.Profile)
	mc.Name = c.Name
	if c.BindAddr != "" {
		mc.BindAddr = c.BindAddr
	}
	mc.BindPort = c.BindPort
	mc.AdvertiseAddr = c.AdvertiseAddr
	mc.AdvertisePort = c.AdvertisePort
	if mc.AdvertisePort == 0 {
		mc.AdvertisePort = c.BindPort // memberlist fixes it up when BindPort is 0 too
	}
	mc.Delegate = g.delegate
	mc.Events = g.delegate
	mc.Merge = g.delegate
	mc.Alive = g.delegate
	mc.Conflict = g.delegate
	mc.Ping = g.clocks
	mc.Logger = newMemberlistLogger(g.log)
	mc.Transport = c.Transport
	return mc
}

// Start creates the memberlist, which starts listening, the event pump, and
// the rejoin loop: from then on gossip keeps trying to Join members it saw
// fail (and Config.Seeds while no other member is alive), one at a time
// with backoff, for as long as Config.StillMember says they belong to the
// cluster, so that both sides of a healed partition find each other again.
// The first event is this agent's own EventJoin. Start may be called once.
func (g *Gossip) Start() error {
	g.lifeMu.Lock()
	defer g.lifeMu.Unlock()
	switch {
	case g.closed:
		return ErrClosed
	case g.ml != nil:
		return errors.New("gossip already started")
	}
	if err := g.startKeyring(); err != nil {
		return err
	}
	if g.mc.Keyring != nil {
		// Only meta that only key holders can send may stop the agent.
		g.delegate.onNameTaken = g.cfg.OnNameTaken
	}
	transport, err := guardedTransportOf(g.mc, g.log)
	if err != nil {
		return err
	}
	g.mc.Transport = transport
	ml, err := memberlist.Create(g.mc)
	if err != nil {
		transport.Shutdown()
		return fmt.Errorf("create memberlist: %w", err)
	}
	if err := ensureListed(ml, g.cfg.Name); err != nil {
		ml.Shutdown() // and the transport
		return err
	}
	g.ml = ml
	if self, ok := g.delegate.get(g.cfg.Name); ok {
		g.localAddr = self.Addr // recorded by NotifyJoin during Create
	}
	g.stop, g.pumpDone = make(chan struct{}), make(chan struct{})
	go func() {
		defer close(g.pumpDone)
		g.queue.run(g.out, g.stop)
	}()
	g.rejoinStop, g.rejoinDone = make(chan struct{}), make(chan struct{})
	go func() {
		defer close(g.rejoinDone)
		g.runRejoin(g.rejoinStop)
	}()
	g.log.Info("gossip listening", "name", g.cfg.Name, "addr", g.localAddr, "profile", g.profile(), "encrypted", g.mc.Keyring != nil)
	return nil
}

// startKeyring gives memberlist the keyring of openKeyring; with one, all
// gossip is encrypted and authenticated.
func (g *Gossip) startKeyring() error {
	kr, err := g.openKeyring()
	if err != nil {
		return err
	}
	if kr == nil {
		return nil
	}
	g.keyMu.Lock()
	defer g.keyMu.Unlock()
	g.mc.Keyring = kr
	g.mc.GossipVerifyIncoming = true
	g.mc.GossipVerifyOutgoing = true
	return nil
}

func (g *Gossip) profile() Profile {
	if g.cfg.Profile == "" {
		return DefaultProfile
	}
	return g.cfg.Profile
}

// running returns the memberlist if Start succeeded and neither Close nor
// Leave were called.
func (g *Gossip) running() (*memberlist.Memberlist, error) {
	g.lifeMu.RLock()
	defer g.lifeMu.RUnlock()
	switch {
	case g.closed:
		return nil, ErrClosed
	case g.ml == nil:
		return nil, ErrNotStarted
	case g.left.Load():
		return nil, ErrLeft
	}
	return g.ml, nil
}

// errNotListed: memberlist's member table has lost this agent's own
// entry, so its meta cannot be re-advertised; the agent has to restart.
var errNotListed = errors.New("memberlist no longer lists this agent as alive; restart the agent to rejoin")

// listsSelf reports whether memberlist lists the agent called name (this
// one) as alive or suspect.
func listsSelf(ml *memberlist.Memberlist, name string) bool {
	_, ok := selfMeta(ml, name)
	return ok
}

// advertiser is what advertiseMeta needs of memberlist.
type advertiser interface {
	UpdateNode(timeout time.Duration) error
	Members() []*memberlist.Node
}

// selfMeta is the meta memberlist records for this agent, and whether it
// lists the agent alive at all.
func selfMeta(ml advertiser, name string) ([]byte, bool) {
	for _, n := range ml.Members() {
		if n.Name == name {
			return n.Meta, true
		}
	}
	return nil, false
}

// ensureListed makes sure memberlist, just created, lists this agent as
// alive. Create can lose a race with a peer's gossip about the agent (one
// restarted under its old name): a peer's alive message handled after
// Create has chosen its own incarnation and before it records itself
// raises the incarnation past it, and Create's own record is then
// dropped as stale. memberlist keeps the entry the peer's message made,
// marked dead, and removes it on its next probe round; the agent would
// run on without itself in its member table, unable to re-advertise.
// Re-advertising at once (a new incarnation) records it alive.
func ensureListed(ml *memberlist.Memberlist, name string) error {
	if listsSelf(ml, name) {
		return nil
	}
	err := readvertise(ml, listedTimeout) // a timeout only bounds the wait for the broadcast
	if listsSelf(ml, name) {
		return nil
	}
	return fmt.Errorf("memberlist does not list this agent after it started (%v); start it again", err)
}

// readvertise is memberlist's UpdateNode, with its panic over a missing
// own entry returned as errNotListed.
func readvertise(ml advertiser, timeout time.Duration) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w (memberlist: %v)", errNotListed, r)
		}
	}()
	return ml.UpdateNode(timeout)
}

// metaAttempts bounds the re-advertisements of one meta update.
const metaAttempts = 3

// advertiseMeta re-advertises the agent (memberlist's UpdateNode, which
// takes the meta from the delegate, meta by now) until memberlist records
// meta as the agent's own. UpdateNode can lose its update as Create can
// (see ensureListed): a peer's alive message about the agent (gossip from
// before a restart) handled after UpdateNode chose the new incarnation
// and before it records it makes memberlist refute the message with a
// higher incarnation and the meta it holds, the old one; UpdateNode's own
// message is then dropped as stale, and UpdateNode returns nil with no
// peer to wait for, or a timeout. The next UpdateNode takes an
// incarnation above the refutation's and is recorded.
func advertiseMeta(ml advertiser, name string, meta []byte, timeout time.Duration) error {
	var err error
	for range metaAttempts {
		err = readvertise(ml, timeout)
		if errors.Is(err, errNotListed) {
			return err
		}
		got, ok := selfMeta(ml, name)
		if !ok {
			return errNotListed
		}
		if bytes.Equal(got, meta) {
			// Recorded; err is at worst a timeout of the broadcast, which
			// gossip carries on with.
			return err
		}
	}
	return fmt.Errorf("memberlist did not record the new meta after %d attempts (last: %v)", metaAttempts, err)
}

// errNothingToJoin: no address was given, or only this agent's own.
var errNothingToJoin = errors.New("no address to join (this agent's own is skipped)")

// Join contacts each address once, in order, and returns how many
// answered. An address is host or host:port (the port defaults to this
// agent's bind port); host is an IP address or a DNS name, which is looked
// up (A and AAAA) on every call and stands for every address it resolves
// to, so one name of all agents (a headless Kubernetes Service) joins them
// all. Join succeeds if any address answered; the error then is nil. This
// agent's own address is skipped, so that a join list or name shared by all
// agents works. ctx is checked between addresses; one address takes at most
// the profile's TCP timeout.
func (g *Gossip) Join(ctx context.Context, addrs []string) (int, error) {
	ml, err := g.running()
	if err != nil {
		return 0, err
	}
	self, _ := netip.ParseAddrPort(g.LocalAddr())
	targets, errs, named := expandJoin(ctx, g.resolver(), addrs, g.joinPort(self))
	joined, tried := 0, 0
	for _, t := range targets {
		if t.addr == self {
			continue
		}
		if err := ctx.Err(); err != nil {
			errs = append(errs, err)
			break
		}
		tried++
		n, err := ml.Join([]string{t.addr.String()})
		joined += n
		if err != nil {
			err = g.delegate.refusalIn(err) // memberlist keeps only the text of the merge's error
			errs = append(errs, fmt.Errorf("%s: %w", t, err))
		}
	}
	switch {
	case joined > 0:
		return joined, nil
	case tried == 0 && len(errs) == 0 && named:
		return 0, fmt.Errorf("join %v: %w", addrs, errNoOtherAddress)
	case tried == 0 && len(errs) == 0:
		return 0, errNothingToJoin
	}
	return 0, fmt.Errorf("join %v: %w", addrs, errors.Join(errs...))
}

// resolver is Config.Resolver, or the system's.
func (g *Gossip) resolver() Resolver {
	if g.cfg.Resolver != nil {
		return g.cfg.Resolver
	}
	return net.DefaultResolver
}

// joinPort is the port of a join address that names none: the configured
// bind port, or the one picked for this agent when that was 0.
func (g *Gossip) joinPort(self netip.AddrPort) uint16 {
	if g.cfg.BindPort != 0 {
		return uint16(g.cfg.BindPort)
	}
	return self.Port()
}

// JoinRetry calls Join until at least one address answers or ctx ends,
// waiting between attempts with capped exponential backoff: 200 ms,
// doubling up to maxBackoff (30 s if maxBackoff <= 0), each wait drawn at
// random from its upper half. Every failed attempt is logged at Info. It
// returns nil once joined, an error wrapping ctx.Err() when ctx ends, and
// at once if joining cannot work (ErrClosed, ErrLeft, ErrNotStarted, an
// address that is not host[:port], only this agent's own address, and,
// with gossip encrypted, a cluster recovered from this agent's:
// ErrRecoveredElsewhere). A name taken (ErrNameTaken) is retried for
// nameTakenWait. A DNS name is looked up again on every attempt, and one
// that resolves to no other agent yet is retried, as is a member of
// another cluster (during a rollout a name may point at old agents for a
// while) and, without gossip encryption, a cluster recovered from this
// agent's: members' meta is then unauthenticated, and anyone answering at
// a join address could forge it to stop an agent that belongs.
func (g *Gossip) JoinRetry(ctx context.Context, addrs []string, maxBackoff time.Duration) error {
	for _, a := range addrs {
		if err := ValidJoinAddr(a); err != nil {
			return err
		}
	}
	if maxBackoff <= 0 {
		maxBackoff = DefaultJoinMaxBackoff
	}
	backoff := min(joinInitialBackoff, maxBackoff)
	var takenSince time.Time
	for attempt := 1; ; attempt++ {
		_, err := g.Join(ctx, addrs)
		if err == nil {
			return nil
		}
		if errors.Is(err, ErrClosed) || errors.Is(err, ErrLeft) || errors.Is(err, ErrNotStarted) || errors.Is(err, errNothingToJoin) ||
			errors.Is(err, ErrRecoveredElsewhere) && g.encrypted() {
			return err
		}
		// A name taken by an agent that has just died (the same agent
		// restarted with an empty data dir at a new address) frees up
		// once gossip declares it dead; one that stays taken is another
		// agent's.
		if errors.Is(err, ErrNameTaken) {
			if takenSince.IsZero() {
				takenSince = time.Now()
			}
			if time.Since(takenSince) >= g.nameTakenWait {
				return err
			}
		}
		if ctx.Err() != nil {
			return giveUp(ctx, addrs, attempt, err)
		}
		wait := backoff/2 + rand.N(backoff/2+1)
		// Peers still starting fail the first attempts (the first pod of a
		// StatefulSet); an agent that keeps failing warns.
		level := slog.LevelInfo
		if attempt >= joinWarnAfter {
			level = slog.LevelWarn
		}
		g.log.Log(ctx, level, "join attempt failed; retrying", "attempt", attempt, "addrs", addrs, "err", err, "next_in", wait)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return giveUp(ctx, addrs, attempt, err)
		case <-t.C:
		}
		backoff = min(backoff*2, maxBackoff)
	}
}

// joinWarnAfter is the first failed join attempt JoinRetry logs as a
// warning rather than at info.
const joinWarnAfter = 3

// nameTakenWait is Gossip.nameTakenWait: well past failure detection.
const nameTakenWait = 30 * time.Second

// giveUp is JoinRetry's error once ctx has ended: it wraps ctx.Err() and
// says what the last attempt ran into.
func giveUp(ctx context.Context, addrs []string, attempts int, last error) error {
	return fmt.Errorf("join %v: gave up after %d attempts (last error: %v): %w", addrs, attempts, last, ctx.Err())
}

// Events returns the membership events, in the order memberlist reported
// them. The channel is buffered and backed by an unbounded queue, so a slow
// reader delays its own view but never memberlist and loses nothing. It is
// closed by Close; events not yet read then are dropped.
func (g *Gossip) Events() <-chan Event {
	return g.out
}

// Members returns every member this agent knows, itself included, sorted by
// name: the alive ones and the failed or left ones memberlist still
// remembers (for GossipToTheDeadTime: 30 s with the lan profile, 15 s with
// local). Before Start it is empty.
func (g *Gossip) Members() []Member {
	return g.delegate.list(time.Now(), g.forgetAfter)
}

// Member returns what this agent knows of the member called name: as
// Members lists it, without building the list (callers on hot paths, such
// as Raft's transport, ask for one member at a time).
func (g *Gossip) Member(name string) (Member, bool) {
	e, ok := g.delegate.get(name)
	return e.withSince(), ok
}

// LastKnown returns what Member returns, and for a member Members no
// longer lists (failed or left longer ago than gossip remembers) its last
// status and since when: how long an agent has been gone.
func (g *Gossip) LastKnown(name string) (Member, bool) {
	e, ok := g.delegate.lastKnown(name)
	return e.withSince(), ok
}

// LocalAddr returns the gossip address (host:port) peers use to reach this
// agent; empty before Start.
func (g *Gossip) LocalAddr() string {
	g.lifeMu.RLock()
	defer g.lifeMu.RUnlock()
	return g.localAddr
}

func (g *Gossip) metaBytes() []byte {
	g.metaMu.Lock()
	defer g.metaMu.Unlock()
	return g.metaEncoded
}

// Refused returns how many times gossip refused a member (a join, a
// push/pull or an alive message of it), by reason, since the start.
func (g *Gossip) Refused() map[Refusal]uint64 {
	out := make(map[Refusal]uint64, int(numRefusals))
	for r := range numRefusals {
		out[r] = g.delegate.refused[r].Load()
	}
	return out
}

func (g *Gossip) identity() (cluster, recoveredFrom string) {
	g.metaMu.Lock()
	defer g.metaMu.Unlock()
	return g.clusterID, g.recovered
}

func (g *Gossip) setMeta(b []byte, m Meta) {
	g.metaMu.Lock()
	defer g.metaMu.Unlock()
	g.metaEncoded = b
	g.clusterID, g.recovered = m.ClusterID, m.RecoveredFrom
}

// UpdateMeta replaces this agent's meta and re-broadcasts it; peers report
// EventUpdate. m.Name may be empty (it is this agent's name) but not
// another name. It waits up to 5 s for the broadcast to go out; after a
// timeout the new meta is in place and still spreads by push/pull. An
// update memberlist dropped (see advertiseMeta) is made again, up to
// three times in all, each waiting up to 5 s. It fails
// with ErrMetaTooLarge if m does not fit, and with ErrLeft after Leave.
func (g *Gossip) UpdateMeta(m Meta) error {
	return g.UpdateMetaFrom(func() Meta { return m })
}

// UpdateMetaFrom is UpdateMeta of the meta build returns, called once
// this agent's earlier updates are out: callers that each change a part
// of what the meta says (leaving, the cluster id, the shard store's
// room) and then update it never send one built before another's
// change, which would undo it.
func (g *Gossip) UpdateMetaFrom(build func() Meta) error {
	g.updateMu.Lock()
	defer g.updateMu.Unlock()
	m := build()
	if m.Name == "" {
		m.Name = g.cfg.Name
	}
	if m.Name != g.cfg.Name {
		return fmt.Errorf("update meta: name %q differs from this agent's %q", m.Name, g.cfg.Name)
	}
	b, err := m.encodeRun(g.run)
	if err != nil {
		return fmt.Errorf("update meta: %w", err)
	}
	ml, err := g.running()
	if err != nil {
		return fmt.Errorf("update meta: %w", err)
	}
	g.setMeta(b, m)
	// memberlist's UpdateNode dereferences this agent's own entry in its
	// member table without checking it is there, and panics when it is
	// not: the entry goes once memberlist counts the agent left or dead
	// (Start sees to it that Create's race cannot do that; see
	// ensureListed). listsSelf refuses the update then; the recover covers
	// the entry going between the check and the call: the agent reports
	// an error instead of crashing.
	if !listsSelf(ml, g.cfg.Name) {
		return fmt.Errorf("update meta: %w", errNotListed)
	}
	// memberlist's UpdateNode waits for the broadcast to go out, up to
	// updateTimeout, and does not notice Shutdown: an agent shutting down
	// right after an update would wait it out. Close ends the wait here;
	// UpdateNode's own ends by its timeout.
	done := make(chan error, 1)
	go func() { done <- advertiseMeta(ml, g.cfg.Name, b, updateTimeout) }()
	select {
	case err := <-done:
		if err != nil {
			return fmt.Errorf("broadcast meta update: %w", err)
		}
		return nil
	case <-g.closing:
		return fmt.Errorf("broadcast meta update: %w", ErrClosed)
	}
}

// Close shuts memberlist down without a goodbye (peers will report
// EventFailed unless Leave came first), stops the event pump and closes the
// Events channel. It is safe to call more than once and before Start.
func (g *Gossip) Close() error {
	g.closeOnce.Do(func() {
		close(g.closing)
		g.lifeMu.Lock()
		g.closed = true
		ml, stop, pumpDone := g.ml, g.stop, g.pumpDone
		rejoinStop, rejoinDone := g.rejoinStop, g.rejoinDone
		g.lifeMu.Unlock()
		if rejoinStop != nil {
			close(rejoinStop)
			<-rejoinDone // a join in flight takes at most memberlist's TCPTimeout
		}
		if ml != nil {
			if err := ml.Shutdown(); err != nil {
				g.closeErr = fmt.Errorf("shut down memberlist: %w", err)
			}
		}
		g.notices.Wait()
		if stop != nil {
			close(stop)
			<-pumpDone
		}
		close(g.out)
	})
	return g.closeErr
}
