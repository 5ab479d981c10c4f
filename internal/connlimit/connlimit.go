// Package connlimit bounds how many connections one remote host may hold
// open on a listener at once, as Consul's limits.*_max_conns_per_client
// do: a stranger or a runaway client opening connections without end
// would otherwise hold a goroutine and buffers for each until the agent
// runs out of memory. A connection past the bound is closed as soon as it
// is accepted; the others, and other hosts, are served as before.
package connlimit

import (
	"net"
	"net/netip"
	"sync"
)

// Listener is a net.Listener that accepts at most PerHost open
// connections from one remote IP.
type Listener struct {
	net.Listener
	perHost int
	// refused is called (outside the lock) for each connection closed
	// because its host holds perHost already.
	refused func(host string, limit int)

	mu   sync.Mutex
	open map[string]int
}

// Wrap returns ln accepting at most perHost connections per remote IP;
// refused, when set, hears of each connection it closed for that. A
// perHost of 0 or less returns ln itself: no bound.
func Wrap(ln net.Listener, perHost int, refused func(host string, limit int)) net.Listener {
	if perHost <= 0 {
		return ln
	}
	return &Listener{Listener: ln, perHost: perHost, refused: refused, open: make(map[string]int)}
}

// Accept returns the next connection whose host is under its bound,
// closing those that are not.
func (l *Listener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		host := Host(c.RemoteAddr())
		l.mu.Lock()
		full := l.open[host] >= l.perHost
		if !full {
			l.open[host]++
		}
		l.mu.Unlock()
		if full {
			c.Close()
			if l.refused != nil {
				l.refused(host, l.perHost)
			}
			continue
		}
		return &conn{Conn: c, l: l, host: host}, nil
	}
}

// Open returns how many connections host holds open.
func (l *Listener) Open(host string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.open[host]
}

func (l *Listener) release(host string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.open[host] <= 1 {
		delete(l.open, host)
		return
	}
	l.open[host]--
}

// conn gives its host's slot back when it is closed (once, however often
// Close is called).
type conn struct {
	net.Conn
	l    *Listener
	host string
	once sync.Once
}

func (c *conn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.l.release(c.host) })
	return err
}

// Host is the host a connection is counted under: the IP of a TCP
// address, else the host of the address's host:port, or its whole string.
func Host(a net.Addr) string {
	if t, ok := a.(*net.TCPAddr); ok {
		return t.IP.String()
	}
	if h, _, err := net.SplitHostPort(a.String()); err == nil {
		return h
	}
	return a.String()
}

// Group is who a stranger may be when it comes from a: an IPv6 address
// stands for its /64 ("2001:db8:1:2::/64"), which one machine usually
// holds whole and may send from any address of; an IPv4 address (also
// one written as IPv4-mapped IPv6), and an IPv6 loopback or link-local
// one (every host on a link has one in fe80::/64), stand alone; else
// what Host says. It groups refusals in logs. Listener counts per
// address (Host), not per Group: in clouds a /64 is a whole subnet
// (every machine of an AWS VPC subnet has its addresses in one), and one
// budget for all of them would refuse the cluster's own agents.
func Group(a net.Addr) string {
	var ip netip.Addr
	if t, ok := a.(*net.TCPAddr); ok {
		ip, _ = netip.AddrFromSlice(t.IP)
	} else {
		ip, _ = netip.ParseAddr(Host(a))
	}
	ip = ip.Unmap().WithZone("")
	switch {
	case !ip.IsValid():
		return Host(a)
	case ip.Is6() && !ip.IsLoopback() && !ip.IsLinkLocalUnicast():
		p, _ := ip.Prefix(64)
		return p.String()
	}
	return ip.String()
}
