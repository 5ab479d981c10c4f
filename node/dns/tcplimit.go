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
// the agent, for no longer than the idle timeout each. Each write to a
// connection must finish within writeTimeout.
type limitListener struct {
	net.Listener
	slots        chan struct{}
	writeTimeout time.Duration
}

func newLimitListener(ln net.Listener, max int, writeTimeout time.Duration) *limitListener {
	return &limitListener{Listener: ln, slots: make(chan struct{}, max), writeTimeout: writeTimeout}
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
			return &limitedConn{Conn: c, slots: l.slots, writeTimeout: l.writeTimeout}, nil
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
	slots        chan struct{}
	writeTimeout time.Duration
	once         sync.Once
}

// Write sends an answer within the write timeout, and closes the
// connection when it cannot: miekg/dns sets no write deadline, so a
// client that stops reading its answers would otherwise block the
// write, keeping its slot and the server's Close waiting for as long as
// it likes. The server's next read then fails, and it closes the
// connection (Close), giving the slot back.
func (c *limitedConn) Write(b []byte) (int, error) {
	c.Conn.SetWriteDeadline(time.Now().Add(c.writeTimeout))
	n, err := c.Conn.Write(b)
	if err != nil {
		c.Conn.Close()
	}
	return n, err
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { <-c.slots })
	return err
}
