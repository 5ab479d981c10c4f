package gossip

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/zrpcio/zrpc/internal/warnrate"
)

// delegate is what memberlist calls back: it hands out this agent's meta,
// keeps the member table and queues Events.
//
// Contract (memberlist v0.7.0), like memberlist's own delegate docs:
//
//   - NotifyJoin, NotifyLeave and NotifyUpdate (memberlist.EventDelegate)
//     are called from memberlist's goroutines (packet handler, probe loop,
//     suspicion timers, push/pull sync, and for the local node from inside
//     Create, UpdateNode and Leave) while memberlist holds its node lock.
//     They never overlap one another, so their order is the order of
//     changes. They must not block, must not call into memberlist (that
//     would deadlock on the node lock) and must not keep the *Node, which
//     memberlist goes on mutating.
//   - NotifyMsg is called from the goroutine serving a peer's stream or
//     from the packet handler, without the node lock, so it may run at the
//     same time as the three above; it must not block either.
//   - NodeMeta is called from Create, UpdateNode and push/pull syncs.
//   - NotifyMerge (memberlist.MergeDelegate) is called from the goroutine
//     of a join's push/pull, on both the joining agent and the one it
//     contacts, without the node lock; NotifyAlive
//     (memberlist.AliveDelegate) from whichever goroutine handles an alive
//     message, with the node lock held. Both only decode and compare
//     cluster ids; they must not block.
//   - NotifyConflict (memberlist.ConflictDelegate) is called like
//     NotifyAlive, with the node lock held; it counts, logs and may tell
//     onNameTaken, which must not block.
//
// So every method copies what it needs, takes only the delegate's own
// short mutex, and hands Events to the unbounded queue; nothing here waits
// for the consumer of Events. The mutex covers both the table change and
// the push, so the event order always matches the table's transitions.
type delegate struct {
	log  *slog.Logger
	name string // this agent's
	// refusals holds the errors of the merges NotifyMerge refused for
	// good (the name is taken, or this agent's cluster was recovered
	// elsewhere), by their text, at most maxRefusals: Join finds its own
	// in memberlist's error, which keeps only the text. Merges of other
	// joins (the rejoin loop's, JoinRetry's, an agent joining this one)
	// run at the same time, so the last one stored may be another's.
	refusalsMu sync.Mutex
	refusals   map[string]error
	meta       func() []byte // this agent's encoded meta
	// identity is this agent's cluster id ("" if none yet) and the id its
	// cluster had before its last recovery ("" if none).
	identity func() (cluster, recoveredFrom string)
	queue    *eventQueue
	// refusalLog spaces out the log lines of refused members: memberlist
	// asks about a refused member on every alive message and push/pull.
	refusalLog *warnrate.Limiter
	// metaLog spaces out the warnings about a member's unreadable meta:
	// anyone reaching the gossip port of an unencrypted cluster can send
	// alive messages, each one a join or an update here.
	metaLog *warnrate.Limiter
	// refused counts refusals by reason.
	refused [numRefusals]atomic.Uint64
	// memberCap is maxMembers; tests lower it.
	memberCap int

	// onNameTaken, if set, is told once that this agent, in no cluster
	// yet, shares its name with an agent of a cluster (settleNameConflict);
	// it must not block or call into memberlist.
	onNameTaken func(error)
	// conflictWait is how long a conflict over this agent's name must
	// last before onNameTaken: nameTakenWait; tests lower it.
	conflictWait time.Duration
	conflictMu   sync.Mutex
	// conflictSince is when the conflicts over this agent's name with
	// the agent of a cluster at conflictAddr began (zero: none yet), and
	// conflictLast when the last one was seen: a conflict with another
	// address, or after a quiet of conflictGap, starts anew.
	// conflictSettled is set once onNameTaken was told.
	conflictSince   time.Time
	conflictLast    time.Time
	conflictAddr    string
	conflictSettled bool

	mu      sync.Mutex
	members map[string]*memberEntry
	// gone are the members list forgot (failed or left long ago), as they
	// were last: what LastKnown reports of them; at most maxGone.
	gone map[string]memberEntry
	// onGone, if set, is told of each member that failed or left (the
	// clock table forgets it); called without d.mu.
	onGone func(name string)
	// forward, if set, passes a leave notice for member leaver on to the
	// other members (msgLeaveForward); it must not block.
	forward func(leaver string)
}

// maxGone bounds the forgotten members remembered; past it one of them is
// dropped for each new one.
const maxGone = 256

// maxMembers bounds the member table: alive messages of members it does
// not hold are ignored once it holds this many. A cluster that large
// could not push/pull (its states would announce more than
// maxPushPullMembers). Without the bound anyone reaching the gossip port
// of an unencrypted cluster could make up members by the thousand a
// second, each kept by memberlist and this table, and gossiped on to every
// agent: memberlist probes one member per interval, so one made up is
// only found dead after every other has been probed.
const maxMembers = maxPushPullMembers

var (
	_ memberlist.Delegate         = (*delegate)(nil)
	_ memberlist.EventDelegate    = (*delegate)(nil)
	_ memberlist.MergeDelegate    = (*delegate)(nil)
	_ memberlist.AliveDelegate    = (*delegate)(nil)
	_ memberlist.ConflictDelegate = (*delegate)(nil)
)

// memberEntry is a Member with what the table needs to keep it.
type memberEntry struct {
	Member
	// run is the run id in its meta: a new one is a restart of the member.
	run   string
	since time.Time // last status change
	// noticed is when a leave notice from the member itself last came
	// (zero: never since it last joined or restarted).
	noticed time.Time
	// relayed is when a leave notice for it last came through another
	// member (zero: never since it last joined or restarted).
	relayed time.Time
	// forwarded: this agent passed its leave notice on (msgLeaveForward).
	forwarded bool
}

// relayedNoticeLife is how long a leave notice passed on by another
// member counts: memberlist's goodbye follows the notice within a few
// gossip intervals, and a notice still going round after the member left
// and came back must not mark the new run of it as leaving for long.
const relayedNoticeLife = 10 * time.Second

// leaveNoticeLife is how long a leave notice from the member itself
// counts: Leave sends memberlist's goodbye within its timeout (5 s for an
// agent) of the notice, and a member that missed the goodbye hears of it
// by gossip or declares the agent dead once it stops. A notice that no
// leave follows within it is stale (the goodbye was never sent: the
// agent was killed, or restarted, in between) or a stranger's, and must
// not make a crash of the member, maybe much later, a leave: a member
// reported left is removed from Raft at once, one that failed only after
// dead_node_reap.
const leaveNoticeLife = 30 * time.Second

func newDelegate(log *slog.Logger, name string, meta func() []byte, identity func() (string, string), queue *eventQueue) *delegate {
	return &delegate{log: log, name: name, meta: meta, identity: identity, queue: queue, refusalLog: newSenderLog(time.Now),
		metaLog: newSenderLog(time.Now), memberCap: maxMembers, conflictWait: nameTakenWait,
		members: make(map[string]*memberEntry), gone: make(map[string]memberEntry)}
}

// ErrOtherCluster is returned (wrapped) when a member belongs to another
// cluster than this agent.
var ErrOtherCluster = errors.New("member belongs to another cluster")

// ErrNameTaken is returned (wrapped) when an agent that belongs to no
// cluster yet joins one in which another agent, alive at another address,
// has its name.
var ErrNameTaken = errors.New("name taken")

// ErrRecoveredElsewhere is returned (wrapped, with ErrOtherCluster) when
// a member is in the cluster this agent's own was recovered as (zrpcd
// agent recover on another agent): this agent's Raft state is from before
// the recovery, and no retry can let it in.
var ErrRecoveredElsewhere = errors.New("this agent's cluster was recovered on another agent")

// NotifyMerge refuses a join (either way) with a cluster one of whose
// members has a cluster id other than this agent's. Members and agents
// without an id (not in a cluster yet) are accepted. An agent that is in
// no cluster yet also refuses to join one where its name belongs to an
// alive agent at another address: memberlist would keep the other one and
// ignore this one for as long as both run (one agent restarted at a new
// address has a cluster id, and is let through to wait for its old
// address to be declared dead).
func (d *delegate) NotifyMerge(peers []*memberlist.Node) error {
	for _, p := range peers {
		if err := d.sameCluster(p); err != nil {
			if errors.Is(err, ErrRecoveredElsewhere) {
				d.storeRefusal(err)
			}
			return err
		}
	}
	self, ok := d.get(d.name)
	if d.clusterID() != "" || !ok {
		return nil
	}
	for _, p := range peers {
		if p.Name == d.name && p.State == memberlist.StateAlive && p.Address() != self.Addr {
			// Every push/pull with a member that knows the other agent
			// comes here, and so can anyone's: one line a minute.
			if pass, held := d.refusalLog.Seen("merge " + d.name); pass {
				d.log.Error("another agent of the cluster this agent is joining has its name; give this agent another --name, or stop the other one",
					"name", d.name, "other_addr", p.Address(), "addr", self.Addr, "refused_since_last_line", held)
			}
			err := fmt.Errorf("%w: an agent named %s is alive at %s, and this agent (at %s) cannot join under the same name: give it another --name, or stop the other one",
				ErrNameTaken, d.name, p.Address(), self.Addr)
			d.storeRefusal(err)
			d.refused[RefusedNameTaken].Add(1)
			return err
		}
	}
	return nil
}

// maxRefusals bounds the refusals kept for Join; past it one is dropped
// for each new one.
const maxRefusals = 16

// storeRefusal keeps err, a merge refused for good, for refusalIn.
func (d *delegate) storeRefusal(err error) {
	d.refusalsMu.Lock()
	defer d.refusalsMu.Unlock()
	if d.refusals == nil {
		d.refusals = make(map[string]error)
	}
	if _, ok := d.refusals[err.Error()]; !ok && len(d.refusals) >= maxRefusals {
		for text := range d.refusals {
			delete(d.refusals, text)
			break
		}
	}
	d.refusals[err.Error()] = err
}

// refusalIn returns the error (ErrNameTaken, ErrRecoveredElsewhere) with
// which NotifyMerge refused for good the merge that memberlist's join
// error joinErr reports, or joinErr if it reports none.
func (d *delegate) refusalIn(joinErr error) error {
	text := joinErr.Error()
	d.refusalsMu.Lock()
	defer d.refusalsMu.Unlock()
	for refused, err := range d.refusals {
		if strings.Contains(text, refused) {
			return err
		}
	}
	return joinErr
}

// NotifyAlive ignores alive messages of members of another cluster, so
// that they never become members here even without a join, of members
// whose meta is over memberlist's limit, which no agent sends
// (memberlist would keep such meta and pass it on to every member in its
// gossip and push/pulls, where a few MiB of it from a stranger would
// take push/pulls past what the stream guard lets through), and of new
// members once the table holds maxMembers.
func (d *delegate) NotifyAlive(p *memberlist.Node) error {
	if len(p.Meta) > memberlist.MetaMaxSize {
		return fmt.Errorf("%w: %s (%s) sent %d bytes, memberlist's limit is %d",
			errMetaOverLimit, p.Name, p.Address(), len(p.Meta), memberlist.MetaMaxSize)
	}
	if err := d.sameCluster(p); err != nil {
		return err
	}
	return d.roomFor(p)
}

// errMemberLimit: the member table is full.
var errMemberLimit = errors.New("member table full")

// roomFor returns errMemberLimit (and logs it, once a minute) if p is not
// in the member table and the table holds memberCap members.
func (d *delegate) roomFor(p *memberlist.Node) error {
	d.mu.Lock()
	_, known := d.members[p.Name]
	full := len(d.members) >= d.memberCap
	d.mu.Unlock()
	if known || !full {
		return nil
	}
	d.refused[RefusedMemberLimit].Add(1)
	if pass, held := d.refusalLog.Seen("member limit"); pass {
		d.log.Error("ignoring new members: the member table is full, which no zrpc cluster fills; "+
			"without gossip encryption anyone reaching the gossip port can make members up: set encrypt on every agent",
			"member", p.Name, "addr", p.Address(), "members", d.memberCap, "refused_since_last_line", held)
	}
	return fmt.Errorf("%w: %s (%s) is new and the table holds %d members", errMemberLimit, p.Name, p.Address(), d.memberCap)
}

// NotifyConflict is told of an alive message (or a push/pull's entry)
// naming a member at another address than the one memberlist holds for
// it, while that one is not dead. memberlist keeps the address it has and
// ignores the message. An agent restarted at a new address comes here
// until its old one is declared dead, a few seconds; two agents under one
// name for as long as both run: NotifyMerge keeps out an agent whose name
// is taken when it joins, but two that join at the same time through
// members that have not yet heard of the other both get in, and members
// then each keep the one they heard of first. This counts a
// RefusedNameConflict and says, once a minute per name, what it means and
// what to do; memberlist's own line for each message is written at debug
// level (log.go). A conflict over this agent's own name may settle it
// (settleNameConflict).
func (d *delegate) NotifyConflict(existing, other *memberlist.Node) {
	if existing.Name == d.name {
		d.settleNameConflict(existing, other, time.Now())
	}
	d.refused[RefusedNameConflict].Add(1)
	pass, held := d.refusalLog.Seen("name " + existing.Name)
	if !pass {
		return
	}
	msg := "a member's name is gossiped at a second address; members keep the first. " +
		"An agent restarted at a new address is let in once the first is declared dead, in seconds. " +
		"If this line comes back, two agents run under the name and members may each take a different one for it: give one of them another --name, or stop it"
	if existing.Name == d.name {
		msg = "this agent's name is gossiped at another address. " +
			"If this line comes back, another agent runs under this agent's name and members may take it for this one: give one of them another --name, or stop it"
	}
	d.log.Warn(msg, "name", existing.Name, "addr", existing.Address(), "other_addr", other.Address(),
		"conflicts_since_last_line", held)
}

// conflictGap, times conflictWait, is the quiet after which a conflict
// over this agent's name counts as over: conflicts come with gossip's
// push/pulls (every 30 s with the lan profile) and the alive messages
// between.
const conflictGap = 2

// settleNameConflict tells onNameTaken, once, with ErrNameTaken, that
// this agent (self, as memberlist holds it), which is in no cluster yet,
// shares its name with other, which is in one, when such conflicts have
// gone on for conflictWait (at now). The agent in the cluster keeps the
// name: it never acts here, having a cluster id, and neither do two
// agents of which neither is in a cluster yet (neither can tell it is the
// duplicate). An agent restarted with an empty data dir at a new address
// hears of its old address as alive for seconds only, until failure
// detection declares that one dead; conflictWait is well past it.
func (d *delegate) settleNameConflict(self, other *memberlist.Node, now time.Time) {
	if d.onNameTaken == nil || d.clusterID() != "" {
		return
	}
	meta, err := decodeMeta(other.Meta)
	if err != nil || meta.ClusterID == "" {
		return
	}
	d.conflictMu.Lock()
	if addr := other.Address(); d.conflictSince.IsZero() || addr != d.conflictAddr || now.Sub(d.conflictLast) > conflictGap*d.conflictWait {
		// Conflicts of seconds each (an agent restarted empty at a new
		// address, twice) must not add up to one that lasted.
		d.conflictSince, d.conflictAddr = now, addr
	}
	d.conflictLast = now
	since := d.conflictSince
	settle := !d.conflictSettled && now.Sub(since) >= d.conflictWait
	d.conflictSettled = d.conflictSettled || settle
	d.conflictMu.Unlock()
	if !settle {
		return
	}
	err = fmt.Errorf("%w: an agent named %s, in cluster %s, has been gossiped alive at %s for %s while this agent (at %s), in no cluster yet, runs under the same name; "+
		"the cluster keeps the other: give this agent another --name, or stop the other one and start this one again",
		ErrNameTaken, d.name, meta.ClusterID, other.Address(), now.Sub(since).Round(time.Second), self.Address())
	d.log.Error("another agent of the cluster has this agent's name; refusing this agent", "err", err)
	d.onNameTaken(err)
}

// errMetaOverLimit: an alive message carries more meta than memberlist
// lets an agent send.
var errMetaOverLimit = errors.New("meta over memberlist's limit")

// sameCluster returns ErrOtherCluster (and logs it, at most once a
// minute per member and cluster) if p carries a cluster id that
// is not empty and not this agent's. A cluster recovered from the other
// (`zrpcd agent recover` gives it a new id) says so, on both sides: the
// agent of the old id holds Raft state from before the recovery, which
// must not come back.
func (d *delegate) sameCluster(p *memberlist.Node) error {
	own, former := d.identity()
	if own == "" {
		return nil
	}
	meta, err := decodeMeta(p.Meta)
	if err != nil || meta.ClusterID == "" || meta.ClusterID == own {
		return nil
	}
	var why string
	reason, level := RefusedOtherCluster, slog.LevelWarn
	switch {
	case meta.ClusterID == former:
		reason = RefusedBeforeRecovery
		why = fmt.Sprintf("%s (%s) holds Raft state of cluster %s from before it was recovered (zrpcd agent recover) as this cluster, %s; "+
			"that state must not come back: stop it, move its data dir aside and start it with an empty one and --join",
			p.Name, p.Address(), former, own)
	case meta.RecoveredFrom == own:
		reason, level = RefusedRecoveredElsewhere, slog.LevelError
		why = fmt.Sprintf("this agent's cluster %s was recovered (zrpcd agent recover) as cluster %s, which %s (%s) is in; "+
			"this agent's Raft state is from before the recovery and must not come back: stop this agent, move its data dir aside and start it with an empty one and --join",
			own, meta.ClusterID, p.Name, p.Address())
	default:
		why = fmt.Sprintf("%s (%s) is in cluster %s, this agent in cluster %s", p.Name, p.Address(), meta.ClusterID, own)
	}
	d.refused[reason].Add(1)
	if pass, held := d.refusalLog.Seen(p.Name + "/" + meta.ClusterID); pass {
		d.log.Log(context.Background(), level, "refusing a member of another cluster", "member", p.Name, "addr", p.Address(),
			"member_cluster", meta.ClusterID, "cluster", own, "why", why, "refused_since_last_line", held)
	}
	if reason == RefusedRecoveredElsewhere {
		return fmt.Errorf("%w: %w: %s", ErrOtherCluster, ErrRecoveredElsewhere, why)
	}
	return fmt.Errorf("%w: %s", ErrOtherCluster, why)
}

// Refusal is why gossip refused a member (Gossip.Refused counts them).
type Refusal int

const (
	// RefusedOtherCluster: the member is in another cluster.
	RefusedOtherCluster Refusal = iota
	// RefusedBeforeRecovery: the member holds Raft state of the cluster
	// this agent's was recovered from (zrpcd agent recover).
	RefusedBeforeRecovery
	// RefusedRecoveredElsewhere: the member is in the cluster this
	// agent's own was recovered as: this agent's state is the stale one.
	RefusedRecoveredElsewhere
	// RefusedNameTaken: this agent, joining, found its name taken.
	RefusedNameTaken
	// RefusedMemberLimit: a new member while the member table holds
	// maxMembers.
	RefusedMemberLimit
	// RefusedNameConflict: a member's name gossiped at another address
	// than the one it is known at (NotifyConflict).
	RefusedNameConflict
	numRefusals
)

// String is the reason's label in metrics.
func (r Refusal) String() string {
	switch r {
	case RefusedOtherCluster:
		return "other_cluster"
	case RefusedBeforeRecovery:
		return "state_before_recovery"
	case RefusedRecoveredElsewhere:
		return "recovered_elsewhere"
	case RefusedNameTaken:
		return "name_taken"
	case RefusedMemberLimit:
		return "member_limit"
	case RefusedNameConflict:
		return "name_conflict"
	}
	return "unknown"
}

// clusterID is this agent's cluster id ("" if none yet).
func (d *delegate) clusterID() string {
	id, _ := d.identity()
	return id
}

// put stores e and queues an event of type typ; the caller holds d.mu.
func (d *delegate) put(e memberEntry, typ EventType) {
	d.members[e.Name] = &e
	delete(d.gone, e.Name)
	d.queue.push(Event{Type: typ, Member: e.Member})
}

// NotifyJoin records a new (or returning) member as alive.
func (d *delegate) NotifyJoin(n *memberlist.Node) {
	m, run := d.member(n, StatusAlive)
	d.mu.Lock()
	defer d.mu.Unlock()
	d.put(memberEntry{Member: m, run: run, since: time.Now()}, EventJoin)
}

// NotifyLeave records a member as left or failed.
//
// memberlist v0.7.0 does not say which: its internal nodeState.State
// shadows the Node.State passed here, so n.State is always StateAlive
// (hashicorp/memberlist#293, open). A member is therefore "left" if a
// leave notice for it came first (see Gossip.Leave: from the member
// itself, or passed on by another member within relayedNoticeLife), or if
// its last meta said it was leaving (Meta.Leaving). A notice from the
// member itself counts for leaveNoticeLife, and only for the run of the
// member that sent it. n.State == StateLeft
// is honoured too, for when memberlist fixes the field.
func (d *delegate) NotifyLeave(n *memberlist.Node) {
	if d.onGone != nil {
		d.onGone(n.Name)
	}
	m, run := d.member(n, StatusFailed)
	now := time.Now()
	d.mu.Lock()
	defer d.mu.Unlock()
	e := d.members[m.Name]
	leaving := e != nil && (e.noticedWithin(now) || e.Meta.Leaving || e.relayedWithin(now)) || m.Meta.Leaving
	typ := EventFailed
	if leaving || n.State == memberlist.StateLeft {
		m.Status, typ = StatusLeft, EventLeave
	}
	d.put(memberEntry{Member: m, run: run, since: now}, typ)
}

func (e *memberEntry) relayedWithin(now time.Time) bool {
	return !e.relayed.IsZero() && now.Sub(e.relayed) < relayedNoticeLife
}

func (e *memberEntry) noticedWithin(now time.Time) bool {
	return !e.noticed.IsZero() && now.Sub(e.noticed) < leaveNoticeLife
}

// NotifyUpdate records a member's new meta. Meta with another run id is
// a new run of the member (restarted before its peers declared it
// failed): what the run before said of leaving no longer counts.
func (d *delegate) NotifyUpdate(n *memberlist.Node) {
	m, run := d.member(n, StatusAlive)
	d.mu.Lock()
	defer d.mu.Unlock()
	next := memberEntry{since: time.Now()}
	if e := d.members[m.Name]; e != nil {
		m.Status = e.Status
		if e.run != run {
			e.run, e.noticed, e.relayed, e.forwarded = run, time.Time{}, time.Time{}, false
		}
		if e.Member == m {
			return // nothing this package reports changed
		}
		next = *e // what it said of leaving, and since when, stands
	}
	next.Member, next.run = m, run
	d.put(next, EventUpdate)
}

// member copies n into a Member with the given status and decodes its
// meta; unreadable meta is logged and left empty. It also returns the
// run id in the meta.
func (d *delegate) member(n *memberlist.Node, status string) (Member, string) {
	m := Member{Name: n.Name, Addr: n.Address(), Status: status}
	meta, run, err := decodeMetaRun(n.Meta)
	if err == nil && meta.Name != n.Name {
		err = fmt.Errorf("meta names %q but the node is %q", meta.Name, n.Name)
	}
	if err != nil {
		if pass, held := d.metaLog.Seen(n.Name); pass {
			d.log.Warn("ignoring a member's unreadable meta", "member", n.Name, "addr", m.Addr, "err", err, "more_since_last", held)
		}
		return m, ""
	}
	m.Meta = meta
	return m, run
}

// Leave notices are this package's only messages: one type byte, then the
// name of the member that is leaving. The member sends msgLeaveNotice to
// every member it can reach. When some cannot be reached (a partial
// partition), it sends msgLeaveForward to a few that could: they take it
// as a notice and pass it on as msgLeaveRelay to every member they can
// reach. The leaver's meta update (Meta.Leaving) cannot stand in for that:
// a member that relays it drops its queued copy once memberlist's goodbye
// for the same member arrives.
const (
	msgLeaveNotice  byte = 1
	msgLeaveRelay   byte = 2
	msgLeaveForward byte = 3
)

func leaveNotice(typ byte, name string) []byte {
	return append([]byte{typ}, name...)
}

// NotifyMsg handles a leave notice: the member will be reported left, not
// failed, when it goes. A notice that arrives after the member was already
// declared failed turns it into left (EventLeave follows EventFailed). A
// notice from the member itself counts for leaveNoticeLife, one passed on
// by another member for relayedNoticeLife; both only until the member
// restarts.
func (d *delegate) NotifyMsg(b []byte) {
	if len(b) < 2 || b[0] < msgLeaveNotice || b[0] > msgLeaveForward {
		d.log.Debug("ignoring an unknown gossip message", "size", len(b))
		return
	}
	typ, name := b[0], string(b[1:])
	if name == d.name {
		return // this agent is not leaving, whoever says so
	}
	if d.noteLeaveNotice(name, typ, time.Now()) && d.forward != nil {
		d.forward(name)
	}
}

// noteLeaveNotice records a leave notice of type typ for member name and
// reports whether to pass it on: a msgLeaveForward, the first for this
// run of the member.
func (d *delegate) noteLeaveNotice(name string, typ byte, now time.Time) (forward bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	e := d.members[name]
	relayed := typ == msgLeaveRelay
	switch {
	case e == nil:
		d.log.Debug("ignoring a leave notice for an unknown member", "member", name)
		return false
	case e.Status == StatusFailed && relayed && now.Sub(e.since) >= relayedNoticeLife,
		e.Status == StatusFailed && now.Sub(e.since) >= leaveNoticeLife:
		return false // about an earlier leave, not this failure
	case e.Status == StatusFailed:
		left := *e
		left.Status, left.since = StatusLeft, now
		d.put(left, EventLeave)
		e = d.members[name]
	case e.Status == StatusLeft:
	case relayed:
		e.relayed = now
	default:
		e.noticed = now
	}
	forward = typ == msgLeaveForward && !e.forwarded
	e.forwarded = e.forwarded || forward
	return forward
}

// NodeMeta returns this agent's encoded meta (never over limit).
func (d *delegate) NodeMeta(limit int) []byte {
	b := d.meta()
	if len(b) > limit {
		// encode checked against MetaMaxSize, which is what memberlist
		// passes; a smaller limit would be a memberlist change.
		d.log.Error("meta over memberlist's limit; sending none", "size", len(b), "limit", limit)
		return nil
	}
	return b
}

// GetBroadcasts has nothing to broadcast: leave notices go point to point.
func (d *delegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }

// LocalState has no extra state for push/pull.
func (d *delegate) LocalState(join bool) []byte { return nil }

// MergeRemoteState ignores remote extra state (none is sent).
func (d *delegate) MergeRemoteState(buf []byte, join bool) {}

// withSince is the entry's member with the time its status began.
func (e *memberEntry) withSince() Member {
	m := e.Member
	m.Since = e.since
	return m
}

// get returns the entry for name.
func (d *delegate) get(name string) (memberEntry, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	e, ok := d.members[name]
	if !ok {
		return memberEntry{}, false
	}
	return *e, true
}

// forget keeps e as what is last known of the member it forgot; the
// caller holds d.mu.
func (d *delegate) forget(name string, e memberEntry) {
	if len(d.gone) >= maxGone {
		for other := range d.gone {
			delete(d.gone, other)
			break
		}
	}
	d.gone[name] = e
}

// lastKnown returns the entry for name, or the last it had if it was
// forgotten.
func (d *delegate) lastKnown(name string) (memberEntry, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if e, ok := d.members[name]; ok {
		return *e, true
	}
	e, ok := d.gone[name]
	return e, ok
}

// list returns the members sorted by name, first forgetting those that
// have been failed or left for longer than forgetAfter (memberlist forgets
// them after GossipToTheDeadTime too). memberlist's own Members lists only
// live nodes and hands out pointers it keeps writing to, so this table is
// the race-free source for Members.
func (d *delegate) list(now time.Time, forgetAfter time.Duration) []Member {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]Member, 0, len(d.members))
	for name, e := range d.members {
		if e.Status != StatusAlive && now.Sub(e.since) > forgetAfter {
			delete(d.members, name)
			d.forget(name, *e)
			continue
		}
		out = append(out, e.withSince())
	}
	slices.SortFunc(out, func(a, b Member) int { return strings.Compare(a.Name, b.Name) })
	return out
}
