package testcluster

import (
	"context"
	"errors"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/raft"
)

// errPartitioned is what a dial across a partition returns.
var errPartitioned = errors.New("testcluster: network partitioned")

// network decides which agents can reach which. Every connection an agent
// opens to a peer (Raft, gRPC forwarding, gossip streams) is dialled
// through it and wrapped, and every gossip packet passes its check, so one
// Partition cuts all three. The dialling side enforces the cut: it refuses
// new connections and closes existing ones, which the other side then sees
// as a dropped connection.
type network struct {
	mu     sync.Mutex
	group  map[string]int    // agent -> partition group; empty when healed
	owner  map[string]string // listen address -> agent
	conns  map[*faultConn]struct{}
	killed map[string]bool
	loss   map[link]float64 // one-way packet loss (faults.go)
}

func newNetwork() *network {
	return &network{owner: map[string]string{}, conns: map[*faultConn]struct{}{}, killed: map[string]bool{}}
}

func (nw *network) register(agent string, addrs ...string) {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	for _, a := range addrs {
		nw.owner[a] = agent
	}
}

// linked reports whether from can reach the owner of addr. Addresses that
// belong to no agent (test clients, services) are always reachable.
func (nw *network) linked(from, to string) bool {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	return nw.linkedLocked(from, to)
}

func (nw *network) linkedLocked(from, to string) bool {
	if nw.lostLocked(from, to) || nw.lostLocked(to, from) {
		return false // a connection needs packets in both directions
	}
	return nw.groupedLocked(from, to)
}

// groupedLocked reports whether from and to are in the same partition group.
func (nw *network) groupedLocked(from, to string) bool {
	if to == "" || from == to || nw.group == nil {
		return true
	}
	gf, okf := nw.group[from]
	gt, okt := nw.group[to]
	return !okf || !okt || gf == gt
}

func (nw *network) ownerOf(addr string) string {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	return nw.owner[addr]
}

// partition puts each agent in the group whose index it is listed in and
// closes every connection that now crosses groups.
func (nw *network) partition(groups [][]string) {
	nw.mu.Lock()
	nw.group = map[string]int{}
	for i, g := range groups {
		for _, a := range g {
			nw.group[a] = i
		}
	}
	var cut []*faultConn
	for c := range nw.conns {
		if !nw.linkedLocked(c.from, c.to) {
			cut = append(cut, c)
		}
	}
	nw.mu.Unlock()
	for _, c := range cut {
		c.Close()
	}
}

func (nw *network) heal() {
	nw.mu.Lock()
	nw.group = nil
	nw.mu.Unlock()
}

// dialer returns the dial function of agent from.
func (nw *network) dialer(from string) func(ctx context.Context, addr string) (net.Conn, error) {
	return func(ctx context.Context, addr string) (net.Conn, error) {
		to := nw.ownerOf(addr)
		if !nw.linked(from, to) {
			return nil, errPartitioned
		}
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return nil, err
		}
		return nw.wrap(c, from, to), nil
	}
}

func (nw *network) wrap(c net.Conn, from, to string) net.Conn {
	fc := &faultConn{Conn: c, nw: nw, from: from, to: to}
	nw.mu.Lock()
	nw.conns[fc] = struct{}{}
	nw.mu.Unlock()
	return fc
}

// faultConn fails once its link is cut.
type faultConn struct {
	net.Conn
	nw       *network
	from, to string
	once     sync.Once
}

func (c *faultConn) Read(p []byte) (int, error) {
	if !c.nw.linked(c.from, c.to) {
		c.Close()
		return 0, errPartitioned
	}
	return c.Conn.Read(p)
}

func (c *faultConn) Write(p []byte) (int, error) {
	if !c.nw.linked(c.from, c.to) {
		c.Close()
		return 0, errPartitioned
	}
	return c.Conn.Write(p)
}

func (c *faultConn) Close() error {
	c.once.Do(func() {
		c.nw.mu.Lock()
		delete(c.nw.conns, c)
		c.nw.mu.Unlock()
	})
	return c.Conn.Close()
}

// raftLayer is a raft.StreamLayer whose dials go through the network.
type raftLayer struct {
	net.Listener
	dial func(ctx context.Context, addr string) (net.Conn, error)
}

func (l *raftLayer) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return l.dial(ctx, string(addr))
}

// gossipTransport wraps memberlist's NetTransport: packets to or from a
// cut agent are dropped, streams are dialled through the network.
type gossipTransport struct {
	*memberlist.NetTransport
	nw      *network
	self    string
	packets chan *memberlist.Packet
	done    chan struct{}
}

func newGossipTransport(nw *network, self string, inner *memberlist.NetTransport) *gossipTransport {
	t := &gossipTransport{NetTransport: inner, nw: nw, self: self, packets: make(chan *memberlist.Packet, 256), done: make(chan struct{})}
	go t.filterPackets()
	return t
}

func (t *gossipTransport) filterPackets() {
	for {
		select {
		case <-t.done:
			return
		case p := <-t.NetTransport.PacketCh():
			if p == nil || !t.nw.grouped(t.nw.ownerOf(p.From.String()), t.self) {
				continue
			}
			select {
			case t.packets <- p:
			default: // a full receive queue drops the packet, as UDP would
			}
		}
	}
}

func (t *gossipTransport) PacketCh() <-chan *memberlist.Packet { return t.packets }

func (t *gossipTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	if !t.nw.packetPasses(t.self, t.nw.ownerOf(addr)) {
		return time.Now(), nil // dropped on the wire
	}
	return t.NetTransport.WriteTo(b, addr)
}

func (t *gossipTransport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	return t.WriteTo(b, a.Addr)
}

func (t *gossipTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return t.nw.dialer(t.self)(ctx, addr)
}

func (t *gossipTransport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	return t.DialTimeout(a.Addr, timeout)
}

// Shutdown stops the inner transport first: its UDP listener may be
// blocked handing a packet to filterPackets, which must keep reading until
// then.
func (t *gossipTransport) Shutdown() error {
	err := t.NetTransport.Shutdown()
	select {
	case <-t.done:
	default:
		close(t.done)
	}
	return err
}
