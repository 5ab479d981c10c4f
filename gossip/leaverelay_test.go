package gossip

import (
	"bytes"
	"errors"
	"net"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

// cuts is a set of cut links between agents' gossip addresses, both ways,
// and of leave notices to drop or hold up on one link, one way.
type cuts struct {
	mu    sync.Mutex
	pairs map[[2]string]bool
	trips []trip
}

// trip makes the next send of leave notice msg from one agent to another
// fail (hold 0) or wait for hold first.
type trip struct {
	from, to string
	msg      []byte
	hold     time.Duration
}

func (c *cuts) cut(a, b string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pairs == nil {
		c.pairs = make(map[[2]string]bool)
	}
	c.pairs[[2]string{a, b}], c.pairs[[2]string{b, a}] = true, true
}

func (c *cuts) isCut(from, to string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.pairs[[2]string{from, to}]
}

func (c *cuts) arm(tr trip) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.trips = append(c.trips, tr)
}

// sender returns agent from's Config.sendNotice: it springs the trips
// armed for its notices.
func (c *cuts) sender(from string) func(*memberlist.Memberlist, *memberlist.Node, []byte) error {
	return func(ml *memberlist.Memberlist, to *memberlist.Node, msg []byte) error {
		c.mu.Lock()
		var tr trip
		i := slices.IndexFunc(c.trips, func(tr trip) bool {
			return tr.from == from && tr.to == to.Name && bytes.Equal(tr.msg, msg)
		})
		if i >= 0 {
			tr = c.trips[i]
			c.trips = slices.Delete(c.trips, i, i+1)
		}
		c.mu.Unlock()
		switch {
		case i >= 0 && tr.hold == 0:
			return errCut
		case i >= 0:
			time.Sleep(tr.hold)
		}
		return ml.SendReliable(to, msg)
	}
}

// cutTransport is a NetTransport that neither sends to nor hears from the
// agents its links to are cut.
type cutTransport struct {
	*memberlist.NetTransport
	self    string
	cuts    *cuts
	packets chan *memberlist.Packet
}

func newCutTransport(t *testing.T, c *cuts) *cutTransport {
	nt, err := memberlist.NewNetTransport(&memberlist.NetTransportConfig{BindAddrs: []string{"127.0.0.1"}})
	if err != nil {
		t.Fatal(err)
	}
	ct := &cutTransport{NetTransport: nt, cuts: c, packets: make(chan *memberlist.Packet),
		self: net.JoinHostPort("127.0.0.1", strconv.Itoa(nt.GetAutoBindPort()))}
	go func() {
		defer close(ct.packets)
		for p := range nt.PacketCh() {
			if !c.isCut(p.From.String(), ct.self) {
				ct.packets <- p
			}
		}
	}()
	return ct
}

var errCut = errors.New("test: link cut")

func (ct *cutTransport) PacketCh() <-chan *memberlist.Packet { return ct.packets }

func (ct *cutTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	if ct.cuts.isCut(ct.self, addr) {
		return time.Now(), nil // lost on the way
	}
	return ct.NetTransport.WriteTo(b, addr)
}

func (ct *cutTransport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	return ct.WriteTo(b, a.Addr)
}

func (ct *cutTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	if ct.cuts.isCut(ct.self, addr) {
		return nil, errCut
	}
	return ct.NetTransport.DialTimeout(addr, timeout)
}

func (ct *cutTransport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	return ct.DialTimeout(a.Addr, timeout)
}

// A member that leaves while it cannot reach some of the others (a
// partial partition) still reaches them with its leave notice, through a
// member it can reach that passes it on: they report it left, not failed,
// although memberlist tells them no more than that it went. Without the
// relay, the member cut off from the leaver saw only memberlist's goodbye
// (passed on by the third) and reported it failed.
func TestLeaveNoticeReachesAMemberTheLeaverCannotReach(t *testing.T) {
	leaveAcrossACut(t, 5*time.Second)
}

// A member that passes a leave notice on tries again when the member it
// passes it to does not take it (a refused or timed-out connection on a
// loaded machine): the notice was lost, and the member cut off from the
// leaver reported it failed.
func TestARelayedLeaveNoticeThatDoesNotGetThroughIsSentAgain(t *testing.T) {
	leaveAcrossACut(t, 5*time.Second, trip{from: "b", to: "a", msg: leaveNotice(msgLeaveRelay, "c")})
}

// A leaving member whose one reachable peer takes the notice only after
// half of Leave's time (a loaded machine) still asks it to pass the
// notice on: it used to look at who had taken it at half time only,
// found nobody, and asked nobody.
func TestALeaveNoticeTakenLateIsStillPassedOn(t *testing.T) {
	leaveAcrossACut(t, 2*time.Second, trip{from: "c", to: "b", msg: leaveNotice(msgLeaveNotice, "c"), hold: 1500 * time.Millisecond})
}

// leaveAcrossACut starts a, b and c, cuts the link between a and c, arms
// trips and has c leave within timeout: a and b must both report it left,
// not failed, and every trip must have sprung.
func leaveAcrossACut(t *testing.T, timeout time.Duration, trips ...trip) {
	c := &cuts{}
	agents := make([]*agent, 3)
	transports := make([]*cutTransport, 3)
	for i := range agents {
		transports[i] = newCutTransport(t, c)
		name := string(rune('a' + i))
		agents[i] = startAgent(t, name, func(cfg *Config) {
			cfg.Transport, cfg.sendNotice = transports[i], c.sender(name)
		})
	}
	for _, a := range agents[1:] {
		if joined, err := a.Join(t.Context(), []string{agents[0].LocalAddr()}); err != nil || joined != 1 {
			t.Fatalf("%s joins: joined %d, err %v", a.name, joined, err)
		}
	}
	for _, a := range agents {
		waitFor(t, a.name+" to see all members alive", func() bool { return countStatus(a.Members(), StatusAlive) == 3 })
	}
	a, b, leaver := agents[0], agents[1], agents[2]
	c.cut(transports[0].self, transports[2].self)
	// a keeps leaver alive through b's indirect probes.
	time.Sleep(10 * a.mc.ProbeInterval)
	if !hasStatus(a.Gossip, leaver.name, StatusAlive) {
		t.Fatalf("with the link cut, a lost leaver before it left: %+v", a.about(leaver.name)())
	}
	for _, tr := range trips {
		c.arm(tr)
	}

	if err := leaver.Leave(timeout); err != nil {
		t.Fatalf("Leave: %v", err)
	}
	for _, o := range []*agent{b, a} {
		waitForOr(t, o.name+" to see the leaver gone", func() bool {
			m, ok := memberNamed(o.Gossip, leaver.name)
			return ok && (m.Status == StatusLeft || m.Status == StatusFailed)
		}, o.about(leaver.name))
		// Give a late relayed notice the time it takes to arrive.
		waitForOr(t, o.name+" to report the leaver left, not failed", func() bool {
			return hasStatus(o.Gossip, leaver.name, StatusLeft)
		}, o.about(leaver.name))
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.trips) > 0 {
		t.Fatalf("armed trips never sprung (the messages were not sent): %+v", c.trips)
	}
}

// The delegate's side of passed-on notices: which it forwards, and how
// long a notice that came through another member counts.
func TestRelayedLeaveNotices(t *testing.T) {
	d, _, events := delegateForTest(t)
	var forwarded []string
	d.forward = func(leaver string) { forwarded = append(forwarded, leaver) }
	x := func() *memberlist.Node { return fakeNode(t, "x", 1, testMeta("x")) }
	expect := func(step string, typ EventType, status string) {
		t.Helper()
		if ev := next(t, events); ev.Type != typ || ev.Member.Status != status || ev.Member.Name != "x" {
			t.Fatalf("%s: got %v (%s) for %s, want %v (%s)", step, ev.Type, ev.Member.Status, ev.Member.Name, typ, status)
		}
	}
	wantForwarded := func(step string, want int) {
		t.Helper()
		if len(forwarded) != want {
			t.Fatalf("%s: %d notices forwarded (%v), want %d", step, len(forwarded), forwarded, want)
		}
	}
	age := func(f func(e *memberEntry)) {
		d.mu.Lock()
		defer d.mu.Unlock()
		f(d.members["x"])
	}
	long := relayedNoticeLife + time.Second

	d.NotifyJoin(x())
	expect("join", EventJoin, StatusAlive)
	d.NotifyMsg(leaveNotice(msgLeaveForward, "self"))
	wantForwarded("a notice about this agent", 0)
	d.NotifyMsg(leaveNotice(msgLeaveRelay, "x"))
	wantForwarded("a relayed notice", 0)
	d.NotifyMsg(leaveNotice(msgLeaveForward, "x"))
	wantForwarded("a notice to pass on", 1)
	d.NotifyMsg(leaveNotice(msgLeaveForward, "x"))
	d.NotifyMsg(leaveNotice(msgLeaveNotice, "x"))
	wantForwarded("the same notice again", 1)
	d.NotifyUpdate(fakeNode(t, "x", 1, func() Meta { m := testMeta("x"); m.Build = "v1.1"; return m }()))
	expect("meta update while leaving", EventUpdate, StatusAlive)
	d.NotifyMsg(leaveNotice(msgLeaveForward, "x"))
	wantForwarded("the same notice after a meta update", 1)
	d.NotifyLeave(x())
	expect("gone after a notice", EventLeave, StatusLeft)
	d.NotifyJoin(x())
	expect("back", EventJoin, StatusAlive)
	d.NotifyMsg(leaveNotice(msgLeaveRelay, "x"))
	d.NotifyLeave(x())
	expect("gone after a relayed notice", EventLeave, StatusLeft)

	// A relayed notice stops counting after relayedNoticeLife.
	d.NotifyJoin(x())
	expect("back", EventJoin, StatusAlive)
	d.NotifyMsg(leaveNotice(msgLeaveRelay, "x"))
	d.NotifyUpdate(fakeNode(t, "x", 1, func() Meta { m := testMeta("x"); m.Build = "v2"; return m }()))
	expect("meta update keeps the relayed notice", EventUpdate, StatusAlive)
	age(func(e *memberEntry) {
		if e.relayed.IsZero() {
			t.Fatal("the meta update dropped the relayed notice")
		}
		e.relayed = e.relayed.Add(-long)
	})
	d.NotifyLeave(x())
	expect("gone long after a relayed notice", EventFailed, StatusFailed)

	// A relayed notice turns a recent failure into a leave, not an old one.
	d.NotifyMsg(leaveNotice(msgLeaveRelay, "x"))
	expect("a relayed notice just after the failure", EventLeave, StatusLeft)
	d.NotifyJoin(x())
	expect("back again", EventJoin, StatusAlive)
	d.NotifyLeave(x())
	expect("failed", EventFailed, StatusFailed)
	age(func(e *memberEntry) { e.since = e.since.Add(-long) })
	d.NotifyMsg(leaveNotice(msgLeaveRelay, "x"))
	if e, _ := d.get("x"); e.Status != StatusFailed {
		t.Fatalf("a relayed notice about a failure %s old made it %s", long, e.Status)
	}
	// A notice from the member itself counts, however late; it is
	// forwarded when asked, as news.
	d.NotifyMsg(leaveNotice(msgLeaveForward, "x"))
	expect("its own notice, late", EventLeave, StatusLeft)
	wantForwarded("a late notice to pass on", 2)
	select {
	case ev := <-events:
		t.Fatalf("unexpected event %v %+v", ev.Type, ev.Member)
	default:
	}
}
