package gossip

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

const (
	// leaveSettleIntervals is how many gossip intervals Leave waits between
	// its leave notices and memberlist's goodbye, so that peers have read
	// the notice before the goodbye reaches them.
	leaveSettleIntervals = 2
	// leaveNoticeParallel bounds the leave notices in flight.
	leaveNoticeParallel = 16
	// leaveForwarders is how many of the members that got its leave
	// notice a leaving agent asks to pass it on to the members it could
	// not reach.
	leaveForwarders = 2
	// noticeRetryPause is the pause before a leave notice that a member
	// did not take (a refused or timed-out connection) is sent to it again.
	noticeRetryPause = 100 * time.Millisecond
	// relayWindow is how long a member passing a leave notice on keeps
	// trying a member that does not take it: well inside
	// relayedNoticeLife, for which the receiver counts the notice.
	relayWindow = relayedNoticeLife / 2
)

// Leave says goodbye: peers report EventLeave (not EventFailed) for this
// agent. memberlist v0.7.0 does not tell its peers' delegates whether a
// node left or failed (see delegate.NotifyLeave), so Leave first sends every
// alive member a leave notice over TCP, waits two gossip intervals, then
// broadcasts memberlist's leave and waits for it to go out. timeout (> 0)
// bounds the whole call. The agent keeps answering probes until Close but
// cannot rejoin or change its meta. Calling Leave again returns nil at
// once, even if the first call timed out: memberlist's leave is one-shot.
func (g *Gossip) Leave(timeout time.Duration) error {
	if timeout <= 0 {
		return fmt.Errorf("leave: timeout must be positive, got %s", timeout)
	}
	deadline := time.Now().Add(timeout)
	g.updateMu.Lock()
	defer g.updateMu.Unlock()
	g.lifeMu.RLock() // keeps Close from shutting memberlist down under us
	defer g.lifeMu.RUnlock()
	switch {
	case g.closed:
		return ErrClosed
	case g.ml == nil:
		return ErrNotStarted
	case g.left.Swap(true):
		return nil
	}
	if g.sendLeaveNotices(g.ml, deadline) > 0 {
		time.Sleep(max(min(leaveSettleIntervals*g.mc.GossipInterval, time.Until(deadline)), 0))
	}
	if err := g.ml.Leave(max(time.Until(deadline), time.Millisecond)); err != nil {
		return fmt.Errorf("leave: %w", err)
	}
	g.log.Info("left the gossip cluster")
	return nil
}

// sendLeaveNotices tells every other alive member that this agent is
// leaving, trying each again while it does not take the notice, until
// deadline. Once every member took it or refused it once, or half the
// time left has passed, it looks at who took it: if some member did not,
// up to leaveForwarders of those that did (or, if none had yet, the first
// to take it before deadline) are asked to pass it on (msgLeaveForward).
// Sends still in flight at deadline finish in the background; Close stops
// their retries and waits for them. It returns how many members it tried.
func (g *Gossip) sendLeaveNotices(ml *memberlist.Memberlist, deadline time.Time) int {
	peers := g.alivePeers("")
	if len(peers) == 0 {
		return 0
	}
	direct := g.sendAll(ml, peers, leaveNotice(msgLeaveNotice, g.cfg.Name), deadline)
	got := direct.wait(time.Now().Add(time.Until(deadline)/2), allTried)
	if len(got) == len(peers) {
		return len(peers)
	}
	if len(got) == 0 {
		// A loaded machine can take longer than half the time to hand one
		// notice over; a member that takes it late can still pass it on.
		got = direct.wait(deadline, anyTook)
	}
	missed := len(peers) - len(got)
	if len(got) == 0 {
		g.log.Warn("no member got the leave notice; they may report this agent failed", "members", len(peers))
		return len(peers)
	}
	forwarders := got[:min(leaveForwarders, len(got))]
	asked := g.sendAll(ml, forwarders, leaveNotice(msgLeaveForward, g.cfg.Name), deadline).wait(deadline, allEnded)
	g.log.Warn("some members did not get the leave notice directly; asked members that did to pass it on",
		"missed", missed, "members", len(peers), "forwarders_asked", len(asked))
	return len(peers)
}

// forwardLeaveNotice passes the leave notice of member leaver on to every
// other alive member, in the background (a msgLeaveForward asked for it),
// trying a member that does not take it again for up to relayWindow.
// It does nothing while the agent starts or closes.
func (g *Gossip) forwardLeaveNotice(leaver string) {
	if !g.lifeMu.TryRLock() {
		return // Start or Close holds it; NotifyMsg must not wait
	}
	defer g.lifeMu.RUnlock()
	if g.closed || g.ml == nil {
		return
	}
	peers := g.alivePeers(leaver)
	if len(peers) == 0 {
		return
	}
	g.log.Info("passing a leave notice on", "member", leaver, "to", len(peers))
	g.sendAll(g.ml, peers, leaveNotice(msgLeaveRelay, leaver), time.Now().Add(relayWindow))
}

// alivePeers returns the alive members but this agent and skip.
func (g *Gossip) alivePeers(skip string) []*memberlist.Node {
	var peers []*memberlist.Node
	for _, m := range g.Members() {
		if m.Name == g.cfg.Name || m.Name == skip || m.Status != StatusAlive {
			continue
		}
		ap, err := netip.ParseAddrPort(m.Addr)
		if err != nil {
			g.log.Warn("cannot send a leave notice", "member", m.Name, "addr", m.Addr, "err", err)
			continue
		}
		peers = append(peers, &memberlist.Node{Name: m.Name, Addr: net.IP(ap.Addr().AsSlice()), Port: ap.Port()})
	}
	return peers
}

// noticeSends follows one message sent to several members.
type noticeSends struct {
	mu      sync.Mutex
	n       int                // members sent to
	took    []*memberlist.Node // members that took the message
	tried   int                // sends whose first attempt ended
	left    int                // sends still trying
	changed chan struct{}      // closed, and replaced, at every change
}

// What noticeSends.wait can wait for (called with its lock held): every
// member took the message or refused it once; every send ended; some
// member took it (or every send ended).
func allTried(s *noticeSends) bool { return s.tried == s.n }
func allEnded(s *noticeSends) bool { return s.left == 0 }
func anyTook(s *noticeSends) bool  { return len(s.took) > 0 || s.left == 0 }

// attempted records the end of one attempt to send to p: whether p took
// the message, whether it was the first attempt, and whether the send
// ends (taken, or given up).
func (s *noticeSends) attempted(p *memberlist.Node, took, first, ends bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if took {
		s.took = append(s.took, p)
	}
	if first {
		s.tried++
	}
	if ends {
		s.left--
	}
	close(s.changed)
	s.changed = make(chan struct{})
}

// wait returns the members that took the message once enough says so,
// or at until.
func (s *noticeSends) wait(until time.Time, enough func(*noticeSends) bool) []*memberlist.Node {
	t := time.NewTimer(time.Until(until))
	defer t.Stop()
	for {
		s.mu.Lock()
		took, changed, done := slices.Clone(s.took), s.changed, enough(s)
		s.mu.Unlock()
		if done {
			return took
		}
		select {
		case <-changed:
		case <-t.C:
			return took
		}
	}
}

// sendAll sends msg to peers over TCP, leaveNoticeParallel at a time, each
// tried again while it fails until giveUp, in the background (Close stops
// the retries and waits for the sends).
func (g *Gossip) sendAll(ml *memberlist.Memberlist, peers []*memberlist.Node, msg []byte, giveUp time.Time) *noticeSends {
	s := &noticeSends{n: len(peers), left: len(peers), changed: make(chan struct{})}
	g.notices.Add(1)
	go func() {
		defer g.notices.Done()
		var wg sync.WaitGroup
		sem := make(chan struct{}, leaveNoticeParallel)
		for _, p := range peers {
			sem <- struct{}{}
			wg.Go(func() {
				defer func() { <-sem }()
				g.sendNotice(ml, p, msg, giveUp, s)
			})
		}
		wg.Wait()
	}()
	return s
}

// sendNotice sends msg to p, and again after noticeRetryPause while p does
// not take it, until giveUp or Close, recording each attempt in s.
func (g *Gossip) sendNotice(ml *memberlist.Memberlist, p *memberlist.Node, msg []byte, giveUp time.Time, s *noticeSends) {
	send := g.cfg.sendNotice
	if send == nil {
		send = (*memberlist.Memberlist).SendReliable
	}
	for first := true; ; first = false {
		err := send(ml, p, msg)
		if err == nil {
			s.attempted(p, true, first, true)
			return
		}
		if time.Until(giveUp) < noticeRetryPause {
			g.log.Debug("leave notice not delivered", "member", p.Name, "err", err)
			s.attempted(p, false, first, true)
			return
		}
		s.attempted(p, false, first, false)
		select {
		case <-g.closing:
			s.attempted(p, false, false, true)
			return
		case <-time.After(noticeRetryPause):
		}
	}
}
