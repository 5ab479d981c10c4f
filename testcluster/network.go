package testcluster

import (
	"context"
	"errors"
	"net"
	"os"
	"slices"
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
// as a dropped connection. A silent partition closes nothing: traffic
// across it stops as if the cable were pulled (dials and writes hang,
// bytes already sent are held) until the partition heals, the
// connection's deadline passes, or it is closed.
type network struct {
	mu      sync.Mutex
	group   map[string]int    // agent -> partition group; empty when healed
	silent  bool              // the partition drops traffic without closing anything
	changed chan struct{}     // closed and replaced on every partition and heal
	owner   map[string]string // listen address -> agent
	conns   map[*faultConn]struct{}
	killed  map[string]bool
	loss    map[link]float64       // one-way packet loss (faults.go)
	delay   map[link]time.Duration // one-way latency (faults.go)
}

func newNetwork() *network {
	return &network{owner: map[string]string{}, conns: map[*faultConn]struct{}{}, killed: map[string]bool{}, changed: make(chan struct{})}
}

// linkState is what a partition does to traffic between two agents.
type linkState int

const (
	linkUp     linkState = iota
	linkCut              // refused and closed
	linkSilent           // held: nothing passes, nothing is closed
)

// link returns the state of from → to, and a channel closed at the next
// change of the network.
func (nw *network) link(from, to string) (linkState, <-chan struct{}) {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	switch {
	case nw.linkedLocked(from, to):
		return linkUp, nw.changed
	case nw.silent:
		return linkSilent, nw.changed
	}
	return linkCut, nw.changed
}

// notifyLocked wakes everything waiting on a silent link; nw.mu is held.
func (nw *network) notifyLocked() {
	close(nw.changed)
	nw.changed = make(chan struct{})
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

// partition puts each agent in the group whose index it is listed in. A
// partition that is not silent closes every connection that now crosses
// groups.
func (nw *network) partition(groups [][]string, silent bool) {
	nw.mu.Lock()
	nw.group = map[string]int{}
	for i, g := range groups {
		for _, a := range g {
			nw.group[a] = i
		}
	}
	nw.silent = silent
	nw.notifyLocked()
	if silent {
		nw.mu.Unlock()
		return
	}
	nw.cutUnlinkedAndUnlock()
}

// cutUnlinkedAndUnlock closes every connection whose two agents the
// network no longer links. nw.mu is held on entry and released before the
// connections close (Close takes it too).
func (nw *network) cutUnlinkedAndUnlock() {
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
	nw.silent = false
	nw.notifyLocked()
	nw.mu.Unlock()
}

// await blocks while from → to is silent, until it changes, closed is
// closed or deadline (if set) passes. It returns nil once the link is up.
func (nw *network) await(from, to string, closed <-chan struct{}, deadline time.Time) error {
	for {
		st, changed := nw.link(from, to)
		switch st {
		case linkUp:
			return nil
		case linkCut:
			return errPartitioned
		}
		var timeout <-chan time.Time
		var timer *time.Timer
		if !deadline.IsZero() {
			d := time.Until(deadline)
			if d <= 0 {
				return os.ErrDeadlineExceeded
			}
			timer = time.NewTimer(d)
			timeout = timer.C
		}
		select {
		case <-changed:
		case <-closed:
		case <-timeout:
		}
		if timer != nil {
			timer.Stop()
		}
		select {
		case <-closed:
			return net.ErrClosed
		default:
		}
		if !deadline.IsZero() && !time.Now().Before(deadline) {
			return os.ErrDeadlineExceeded
		}
	}
}

// dialer returns the dial function of agent from.
func (nw *network) dialer(from string) func(ctx context.Context, addr string) (net.Conn, error) {
	return func(ctx context.Context, addr string) (net.Conn, error) {
		to := nw.ownerOf(addr)
		deadline, _ := ctx.Deadline()
		if err := nw.await(from, to, ctx.Done(), deadline); err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err() // a silent partition: the dial timed out
			}
			return nil, err
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
	fc := &faultConn{Conn: c, nw: nw, from: from, to: to, closed: make(chan struct{})}
	nw.mu.Lock()
	nw.conns[fc] = struct{}{}
	nw.mu.Unlock()
	return fc
}

// faultConn fails once its link is cut, and holds traffic while its link
// is silent.
type faultConn struct {
	net.Conn
	nw       *network
	from, to string
	once     sync.Once
	closed   chan struct{}

	mu                          sync.Mutex
	readDeadline, writeDeadline time.Time
	held                        []byte // read while the link was silent, not yet returned
}

// pass waits until traffic may pass; on a cut it closes the connection.
func (c *faultConn) pass(deadline time.Time) error {
	err := c.nw.await(c.from, c.to, c.closed, deadline)
	if errors.Is(err, errPartitioned) {
		c.Close()
	}
	return err
}

func (c *faultConn) deadlines() (read, write time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.readDeadline, c.writeDeadline
}

func (c *faultConn) Read(p []byte) (int, error) {
	read, _ := c.deadlines()
	if n, ok, err := c.readHeld(p, read); ok {
		return n, err
	}
	if st, _ := c.nw.link(c.from, c.to); st == linkCut {
		c.Close()
		return 0, errPartitioned
	}
	n, err := c.Conn.Read(p)
	if n == 0 {
		return n, err
	}
	// What arrived is seen the answer direction's latency later (Delay),
	// and bytes that arrived while the link went silent are held until it
	// heals, as the network would have held them.
	perr := c.nw.wait(c.nw.delayOf(c.to, c.from), read)
	if perr == nil {
		perr = c.pass(read)
	}
	if perr != nil {
		if errors.Is(perr, os.ErrDeadlineExceeded) {
			c.mu.Lock()
			c.held = append(c.held, p[:n]...)
			c.mu.Unlock()
		}
		return 0, perr
	}
	return n, err
}

// readHeld returns bytes held from an earlier Read once the link lets
// them through; ok is false when nothing is held.
func (c *faultConn) readHeld(p []byte, deadline time.Time) (n int, ok bool, err error) {
	c.mu.Lock()
	held := len(c.held) > 0
	c.mu.Unlock()
	if !held {
		return 0, false, nil
	}
	if err := c.pass(deadline); err != nil {
		return 0, true, err
	}
	c.mu.Lock()
	n = copy(p, c.held)
	c.held = c.held[n:]
	c.mu.Unlock()
	return n, true, nil
}

func (c *faultConn) Write(p []byte) (int, error) {
	_, write := c.deadlines()
	if err := c.pass(write); err != nil {
		return 0, err
	}
	if err := c.nw.wait(c.nw.delayOf(c.from, c.to), write); err != nil {
		return 0, err
	}
	return c.Conn.Write(p)
}

func (c *faultConn) SetDeadline(t time.Time) error {
	c.mu.Lock()
	c.readDeadline, c.writeDeadline = t, t
	c.mu.Unlock()
	return c.Conn.SetDeadline(t)
}

func (c *faultConn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	c.readDeadline = t
	c.mu.Unlock()
	return c.Conn.SetReadDeadline(t)
}

func (c *faultConn) SetWriteDeadline(t time.Time) error {
	c.mu.Lock()
	c.writeDeadline = t
	c.mu.Unlock()
	return c.Conn.SetWriteDeadline(t)
}

func (c *faultConn) Close() error {
	c.once.Do(func() {
		close(c.closed)
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
	to := t.nw.ownerOf(addr)
	if !t.nw.packetPasses(t.self, to) {
		return time.Now(), nil // dropped on the wire
	}
	if d := t.nw.delayOf(t.self, to); d > 0 {
		late := slices.Clone(b)
		time.AfterFunc(d, func() { t.NetTransport.WriteTo(late, addr) }) // in flight; an error is a lost packet
		return time.Now(), nil
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
