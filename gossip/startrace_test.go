package gossip

import (
	"bytes"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-msgpack/v2/codec"
	"github.com/hashicorp/memberlist"
)

// TestStartListsItselfWhenGossipAboutItWinsTheRace: a peer's alive
// message about this agent (gossip about it from before a restart),
// handled after memberlist.Create chose the agent's incarnation and
// before Create recorded the agent, makes Create drop its own record as
// stale; memberlist then keeps the agent only as the dead entry the
// peer's message made, and forgets it on the next probe round. Start must
// leave the agent listed alive, with its own meta, able to update it.
//
// The race is made certain: the transport's FinalAdvertiseAddr, which
// Create calls a second time (once its listeners run) just before choosing
// the incarnation, delivers such a message, and the Alive hook holds memberlist's member table (its lock)
// while Create goes on to record the agent.
func TestStartListsItselfWhenGossipAboutItWinsTheRace(t *testing.T) {
	cfg := testConfig(t, "a")
	g, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	nt, err := netTransport(g.mc)
	if err != nil {
		t.Fatal(err)
	}
	stale := cfg.Meta
	stale.Build = "before-restart"
	staleMeta, err := stale.encode()
	if err != nil {
		t.Fatal(err)
	}
	held := &holdingAlive{inner: g.mc.Alive, name: cfg.Name, meta: staleMeta,
		entered: make(chan struct{}), release: make(chan struct{})}
	g.mc.Alive = held
	g.mc.Transport = &racingTransport{NetTransport: nt, t: t, vsn: g.mc.BuildVsnArray(),
		name: cfg.Name, meta: staleMeta, held: held}
	if err := g.Start(); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { g.Close() })
	select {
	case <-held.entered:
	default:
		t.Fatal("the peer's message about this agent never reached memberlist: the race was not staged")
	}

	self, ok := memberNamed(g, cfg.Name)
	if !listsSelf(g.ml, cfg.Name) || !ok || self.Status != StatusAlive || self.Meta != cfg.Meta {
		t.Fatalf("after Start memberlist lists this agent %v, gossip has %+v (ok %v); want alive with its own meta %+v",
			listsSelf(g.ml, cfg.Name), self, ok, cfg.Meta)
	}
	// Past several probe rounds, when a dead own entry would be forgotten.
	time.Sleep(5 * g.mc.ProbeInterval)
	meta := cfg.Meta
	meta.Build = "v2"
	if err := g.UpdateMeta(meta); err != nil {
		t.Fatalf("UpdateMeta after Start: %v", err)
	}
}

// racingTransport is a NetTransport whose second FinalAdvertiseAddr sends
// the agent a peer's alive message about it and waits until memberlist
// is handling it (and holding its member table).
type racingTransport struct {
	*memberlist.NetTransport
	t     *testing.T
	vsn   []uint8
	name  string
	meta  []byte
	held  *holdingAlive
	calls int
}

// alive is memberlist's alive message, as it encodes it.
type alive struct {
	Incarnation uint32
	Node        string
	Addr        []byte
	Port        uint16
	Meta        []byte
	Vsn         []uint8
}

func (r *racingTransport) FinalAdvertiseAddr(ip string, port int) (net.IP, int, error) {
	addr, p, err := r.NetTransport.FinalAdvertiseAddr(ip, port)
	if r.calls++; err == nil && r.calls == 2 {
		r.stage(addr, p)
	}
	return addr, p, err
}

// stage sends the alive message and waits until memberlist holds it.
func (r *racingTransport) stage(addr net.IP, port int) {
	var buf bytes.Buffer
	buf.WriteByte(4) // memberlist's aliveMsg
	msg := alive{Incarnation: 1, Node: r.name, Addr: addr.To4(), Port: uint16(port), Meta: r.meta, Vsn: r.vsn}
	if err := codec.NewEncoder(&buf, &codec.MsgpackHandle{}).Encode(&msg); err != nil {
		r.t.Errorf("encode alive: %v", err)
		return
	}
	conn, err := net.Dial("udp", net.JoinHostPort(addr.String(), strconv.Itoa(port)))
	if err != nil {
		r.t.Errorf("dial the agent's gossip port: %v", err)
		return
	}
	defer conn.Close()
	if _, err := conn.Write(buf.Bytes()); err != nil {
		r.t.Errorf("send alive: %v", err)
		return
	}
	select {
	case <-r.held.entered:
	case <-time.After(waitTimeout):
		r.t.Errorf("memberlist did not handle the alive message within %s", waitTimeout)
		return
	}
	// Create goes on to choose the incarnation and then waits for the
	// member table; the message's handling goes on after that.
	time.AfterFunc(200*time.Millisecond, func() { close(r.held.release) })
}

// holdingAlive is memberlist's Alive delegate that, for the staged
// message (this agent's name and the stale meta), says it entered and
// waits to be released, holding memberlist's member table meanwhile.
type holdingAlive struct {
	inner   memberlist.AliveDelegate
	name    string
	meta    []byte
	entered chan struct{}
	release chan struct{}
	once    sync.Once
}

func (h *holdingAlive) NotifyAlive(n *memberlist.Node) error {
	if n.Name == h.name && bytes.Equal(n.Meta, h.meta) {
		h.once.Do(func() {
			close(h.entered)
			select { // never holds the member table for good
			case <-h.release:
			case <-time.After(waitTimeout):
			}
		})
	}
	return h.inner.NotifyAlive(n)
}
