package gossip

import (
	"fmt"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/zrpcio/zrpc/internal/testwait"
)

func fakeNode(t *testing.T, name string, port uint16, meta Meta) *memberlist.Node {
	t.Helper()
	b, err := meta.encode()
	if err != nil {
		t.Fatal(err)
	}
	return &memberlist.Node{Name: name, Addr: net.IPv4(127, 0, 0, 1), Port: port, Meta: b}
}

// next reads one event, failing the test if none comes.
func next(t *testing.T, ch <-chan Event) Event {
	t.Helper()
	select {
	case ev, ok := <-ch:
		if !ok {
			t.Fatal("Events closed early")
		}
		return ev
	case <-time.After(waitTimeout):
		t.Fatal("no event")
	}
	return Event{}
}

func TestEventQueueNeverBlocksMemberlist(t *testing.T) {
	const n = 10000
	g, err := New(testConfig(t, "a"))
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Close() })
	d := g.delegate
	nodes := make([]*memberlist.Node, n)
	for i := range nodes {
		name := fmt.Sprintf("peer-%05d", i)
		nodes[i] = fakeNode(t, name, uint16(20000+i%1000), testMeta(name))
	}

	// Nobody reads Events while memberlist "calls" the delegate.
	pushed := make(chan struct{})
	go func() {
		defer close(pushed)
		for i, node := range nodes {
			if i%2 == 0 {
				d.NotifyJoin(node)
			} else {
				d.NotifyLeave(node)
			}
		}
	}()
	select {
	case <-pushed:
	case <-time.After(waitTimeout):
		t.Fatalf("the delegate blocked with nobody reading Events (buffer %d, %d events)", eventBuffer, n)
	}

	if ev := next(t, g.Events()); ev.Type != EventJoin || ev.Member.Name != "a" {
		t.Fatalf("first event %v %s, want the agent's own join", ev.Type, ev.Member.Name)
	}
	for i, node := range nodes {
		want := EventJoin
		if i%2 == 1 {
			want = EventFailed
		}
		ev := next(t, g.Events())
		if ev.Type != want || ev.Member.Name != node.Name || ev.Member.Meta.Name != node.Name {
			t.Fatalf("event %d: %v %s, want %v %s", i, ev.Type, ev.Member.Name, want, node.Name)
		}
	}
	select {
	case ev := <-g.Events():
		t.Fatalf("unexpected extra event %v %s", ev.Type, ev.Member.Name)
	default:
	}
}

func TestCloseStopsPumpWithUnreadEvents(t *testing.T) {
	g, err := New(testConfig(t, "a"))
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Start(); err != nil {
		t.Fatal(err)
	}
	for i := range 2 * eventBuffer {
		g.delegate.NotifyJoin(fakeNode(t, fmt.Sprintf("p%d", i), 1, testMeta(fmt.Sprintf("p%d", i))))
	}
	if err := g.Close(); err != nil {
		t.Fatal(err)
	}
	got := 0
	deadline := time.After(waitTimeout)
	for {
		select {
		case _, ok := <-g.Events():
			if !ok {
				if got > eventBuffer+1 {
					t.Errorf("read %d events after Close, more than the buffer of %d holds", got, eventBuffer)
				}
				return
			}
			got++
		case <-deadline:
			t.Fatal("Events not closed after Close")
		}
	}
}

// delegateForTest returns a delegate whose logs are recorded and a
// channel of what it queued.
func delegateForTest(t *testing.T) (*delegate, *logRecords, <-chan Event) {
	logs := &logRecords{}
	log := slog.New(recordingHandler{Handler: slog.DiscardHandler, rec: logs})
	d := newDelegate(log, "self", func() []byte { return nil }, func() (string, string) { return "", "" }, newEventQueue())
	out, stop, done := make(chan Event, 16), make(chan struct{}), make(chan struct{})
	go func() { defer close(done); d.queue.run(out, stop) }()
	t.Cleanup(func() { close(stop); <-done })
	return d, logs, out
}

func TestDelegateTellsLeaveFromFailure(t *testing.T) {
	d, _, events := delegateForTest(t)
	meta := testMeta("x")
	newer := meta
	newer.Build = "v2"
	node := func(m Meta) func() *memberlist.Node { return func() *memberlist.Node { return fakeNode(t, "x", 1, m) } }
	join := func() { d.NotifyJoin(node(meta)()) }
	dead := func() { d.NotifyLeave(node(newer)()) }
	notice := func() { d.NotifyMsg(leaveNotice(msgLeaveNotice, "x")) }
	leavingMeta := newer
	leavingMeta.Leaving = true
	update := func(m Meta) func() { return func() { d.NotifyUpdate(node(m)()) } }

	steps := []struct {
		name       string
		do         func()
		wantEvent  EventType // 0: no event
		wantStatus string
	}{
		{"join", join, EventJoin, StatusAlive},
		{"dead without a notice", dead, EventFailed, StatusFailed},
		{"back", join, EventJoin, StatusAlive},
		{"meta changed", func() { d.NotifyUpdate(node(newer)()) }, EventUpdate, StatusAlive},
		{"same meta again", func() { d.NotifyUpdate(node(newer)()) }, 0, StatusAlive},
		{"unknown message", func() { d.NotifyMsg([]byte{42, 'x'}) }, 0, StatusAlive},
		{"empty message", func() { d.NotifyMsg(nil) }, 0, StatusAlive},
		{"leave notice", notice, 0, StatusAlive},
		{"dead after a notice", dead, EventLeave, StatusLeft},
		{"back again", join, EventJoin, StatusAlive},
		{"dead: the old notice is forgotten", dead, EventFailed, StatusFailed},
		{"late notice", notice, EventLeave, StatusLeft},
		{"notice once left", notice, 0, StatusLeft},
		{"back once more", join, EventJoin, StatusAlive},
		{"dead with State left", func() {
			n := node(meta)()
			n.State = memberlist.StateLeft // as memberlist would pass it once #293 is fixed
			d.NotifyLeave(n)
		}, EventLeave, StatusLeft},
		// Meta that says the member is leaving stands for a notice the
		// direct connection could not carry.
		{"back, saying it leaves", func() { d.NotifyJoin(node(leavingMeta)()) }, EventJoin, StatusAlive},
		{"dead after its meta said it leaves", dead, EventLeave, StatusLeft},
		{"back to stay", join, EventJoin, StatusAlive},
		{"meta: leaving", update(leavingMeta), EventUpdate, StatusAlive},
		{"meta: staying after all", update(newer), EventUpdate, StatusAlive},
		{"dead after it stayed", dead, EventFailed, StatusFailed},
		{"back, then dead with leaving meta", join, EventJoin, StatusAlive},
		{"dead, its last meta leaving", func() { d.NotifyLeave(node(leavingMeta)()) }, EventLeave, StatusLeft},
	}
	for _, s := range steps {
		s.do()
		if s.wantEvent != 0 {
			ev := next(t, events)
			if ev.Type != s.wantEvent || ev.Member.Status != s.wantStatus || ev.Member.Name != "x" {
				t.Fatalf("%s: got %v (%s) for %s, want %v (%s)", s.name, ev.Type, ev.Member.Status, ev.Member.Name, s.wantEvent, s.wantStatus)
			}
		}
		if e, _ := d.get("x"); e.Status != s.wantStatus {
			t.Fatalf("%s: table says %s, want %s", s.name, e.Status, s.wantStatus)
		}
	}
	select {
	case ev := <-events:
		t.Fatalf("unexpected event %v %+v", ev.Type, ev.Member)
	default:
	}
	d.NotifyMsg(leaveNotice(msgLeaveNotice, "stranger")) // must not invent a member
	if _, ok := d.get("stranger"); ok {
		t.Error("a notice from an unknown member added it")
	}
}

func TestDelegateReportsUnreadableMetaEmpty(t *testing.T) {
	tests := []struct {
		name string
		meta []byte
	}{
		{"garbage", []byte("\x00\xffnot meta")},
		{"none", nil},
		{"another node's", func() []byte { b, _ := testMeta("y").encode(); return b }()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, logs, events := delegateForTest(t)
			d.NotifyJoin(&memberlist.Node{Name: "x", Addr: net.IPv4(127, 0, 0, 1), Port: 7, Meta: tt.meta})
			ev := next(t, events)
			if ev.Type != EventJoin || ev.Member.Name != "x" || ev.Member.Addr != "127.0.0.1:7" || ev.Member.Meta != (Meta{}) {
				t.Errorf("got %v %+v, want a join of x at 127.0.0.1:7 with empty Meta", ev.Type, ev.Member)
			}
			warns := logs.matching("ignoring a member's unreadable meta")
			if len(warns) != 1 || warns[0].Level != slog.LevelWarn {
				t.Errorf("want one warning, got %d", len(warns))
			}
		})
	}
}

// A member whose alive messages keep bringing unreadable meta (anyone
// can send them to an unencrypted cluster) is warned of once, not once
// per message; another member still gets its own warning.
func TestUnreadableMetaIsWarnedOfOncePerMember(t *testing.T) {
	d, logs, events := delegateForTest(t)
	d.NotifyJoin(&memberlist.Node{Name: "x", Addr: net.IPv4(127, 0, 0, 1), Port: 7, Meta: []byte("garbage")})
	next(t, events)
	for i := range 100 {
		d.NotifyUpdate(&memberlist.Node{Name: "x", Addr: net.IPv4(127, 0, 0, 1), Port: 7, Meta: []byte(fmt.Sprintf("garbage %d", i))})
	}
	d.NotifyJoin(&memberlist.Node{Name: "y", Addr: net.IPv4(127, 0, 0, 1), Port: 8, Meta: []byte("garbage")})
	warns := logs.matching("ignoring a member's unreadable meta")
	if len(warns) != 2 {
		t.Fatalf("%d warnings about unreadable meta, want one for x and one for y", len(warns))
	}
}

// An alive message whose meta is over memberlist's limit (no agent
// sends one) is ignored: its member is never listed, so its meta is
// neither kept nor gossiped on; one with meta in bounds is listed.
func TestAliveMessageWithMetaOverTheLimitIsIgnored(t *testing.T) {
	a := startAgent(t, "a", nil)
	c, err := net.Dial("udp", a.LocalAddr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	alive := func(name string, meta []byte) []byte {
		return append([]byte{4}, msgpackOf(t, map[string]any{ // memberlist's aliveMsg
			"Incarnation": 1, "Node": name, "Addr": []byte(net.IPv4(127, 0, 0, 1).To4()), "Port": 9,
			"Meta": meta, "Vsn": []uint8{1, 5, 2, 0, 0, 0},
		})...)
	}
	small, err := testMeta("witness").encode()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range [][]byte{alive("stranger", make([]byte, 8<<10)), alive("witness", small)} {
		if _, err := c.Write(p); err != nil {
			t.Fatal(err)
		}
	}
	testwait.For(t, 20*time.Second, "a to list the witness, sent after the stranger", func() bool {
		_, ok := a.Member("witness")
		return ok
	})
	if m, ok := a.Member("stranger"); ok {
		t.Fatalf("a lists a member whose alive message carried 8 KiB of meta: %+v", m)
	}
}

func TestMembersForgetsLongGoneMembers(t *testing.T) {
	now := time.Now()
	d := newDelegate(slog.New(slog.DiscardHandler), "self", nil, func() (string, string) { return "", "" }, newEventQueue())
	d.members["b"] = &memberEntry{Member: Member{Name: "b", Status: StatusFailed}, since: now.Add(-time.Minute)}
	d.members["c"] = &memberEntry{Member: Member{Name: "c", Status: StatusLeft}, since: now.Add(-time.Second)}
	d.members["a"] = &memberEntry{Member: Member{Name: "a", Status: StatusAlive}, since: now.Add(-time.Hour)}
	got := d.list(now, 30*time.Second)
	if len(got) != 2 || got[0].Name != "a" || got[1].Name != "c" {
		t.Errorf("list = %+v, want a (alive) and c (left recently), sorted", got)
	}
	// What was last known of b stays, until it comes back.
	if e, ok := d.lastKnown("b"); !ok || e.Status != StatusFailed || !e.since.Equal(now.Add(-time.Minute)) {
		t.Errorf("lastKnown(b) = %+v, %v; want failed a minute ago", e, ok)
	}
	d.NotifyJoin(fakeNode(t, "b", 1, testMeta("b")))
	if e, ok := d.lastKnown("b"); !ok || e.Status != StatusAlive {
		t.Errorf("lastKnown(b) after it joined = %+v, %v; want alive", e, ok)
	}
	if len(d.gone) != 0 {
		t.Errorf("a member that came back is still remembered as gone: %v", d.gone)
	}
}

func TestMembersSayWhenTheirStatusBegan(t *testing.T) {
	d, _, events := delegateForTest(t)
	node := fakeNode(t, "x", 1, testMeta("x"))
	before := time.Now()
	d.NotifyJoin(node)
	next(t, events)
	joined := d.list(time.Now(), time.Hour)[0].Since
	if joined.Before(before) || joined.After(time.Now()) {
		t.Fatalf("alive since %v, want the time of the join (after %v)", joined, before)
	}
	time.Sleep(2 * time.Millisecond) // the failure's time must differ from the join's
	newer := testMeta("x")
	newer.Build = "v2"
	d.NotifyUpdate(fakeNode(t, "x", 1, newer))
	next(t, events)
	if got := d.list(time.Now(), time.Hour)[0].Since; !got.Equal(joined) {
		t.Fatalf("a meta update moved Since from %v to %v; only a status change should", joined, got)
	}
	d.NotifyLeave(node)
	next(t, events)
	m := d.list(time.Now(), time.Hour)[0]
	if m.Status != StatusFailed || !m.Since.After(joined) {
		t.Fatalf("after the failure: %s since %v, want failed since after %v", m.Status, m.Since, joined)
	}
	if e, _ := d.get("x"); e.withSince() != m {
		t.Errorf("Member says %+v, Members %+v", e.withSince(), m)
	}
}

// TestMemberLacksCluster: only an alive member without a cluster id,
// asked about by an agent that knows its cluster's, lacks it.
func TestMemberLacksCluster(t *testing.T) {
	for _, c := range []struct {
		status, id, cluster string
		want                bool
	}{
		{StatusAlive, "", "c1", true},
		{StatusAlive, "c1", "c1", false},
		{StatusAlive, "", "", false},
		{StatusFailed, "", "c1", false},
		{StatusLeft, "", "c1", false},
	} {
		m := Member{Name: "n2", Status: c.status, Meta: Meta{ClusterID: c.id}}
		if got := m.LacksCluster(c.cluster); got != c.want {
			t.Errorf("%s member with cluster id %q, asked by an agent of %q: LacksCluster %v, want %v", c.status, c.id, c.cluster, got, c.want)
		}
	}
}
