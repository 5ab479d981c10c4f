package dns

import (
	"errors"
	"net"
	"sync"
	"time"
)

// limitListener hands out at most cap(slots) connections at once: one
// accepted beyond that is closed at once, so that a client opening
// thousands of connections holds no more than that many descriptors of
// the agent, for no longer than the idle timeout each.
type limitListener struct {
	net.Listener
	slots chan struct{}
}

func newLimitListener(ln net.Listener, max int) *limitListener {
	return &limitListener{Listener: ln, slots: make(chan struct{}, max)}
}

// Accept returns the next connection there is room for.
func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			if isTemporary(err) {
				// Out of descriptors, say: the server retries at once,
				// so pause rather than spin.
				time.Sleep(10 * time.Millisecond)
			}
			return nil, err
		}
		select {
		case l.slots <- struct{}{}:
			return &limitedConn{Conn: c, slots: l.slots}, nil
		default:
			c.Close()
		}
	}
}

func isTemporary(err error) bool {
	var t interface{ Temporary() bool }
	return errors.As(err, &t) && t.Temporary()
}

// limitedConn gives its slot back when closed.
type limitedConn struct {
	net.Conn
	slots chan struct{}
	once  sync.Once
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { <-c.slots })
	return err
}
