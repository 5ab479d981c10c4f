package raftstore

import (
	"errors"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// Anyone who reaches the Raft port may send it anything. Raft's transport
// reads one command after another from each connection it accepts and
// drops the connection at the first it cannot decode, logging the decoder's
// complaint without saying who sent it. The guard around the stream layer
// says it: it sees each inbound connection end, and when raft, not the
// peer, ended one that had sent bytes (raft could not read them as a
// command), it logs a warning naming the peer's address. Repeats from one
// host collapse as raft's own warnings about a peer do (peerNoise). It
// also closes a connection that sends nothing for firstByteWait after it
// was accepted: a Raft peer dials to send a command at once, and each
// waiting connection holds a goroutine and raft's read buffer.

// firstByteWait is how long an inbound Raft connection may stay silent
// before its first byte.
const firstByteWait = 10 * time.Second

// Messages of the guard's warnings.
const (
	msgNotRaft = "dropped a Raft connection whose bytes are not a Raft command"
	msgSilent  = "closed a Raft connection that sent nothing"
)

// guardedStream is a raft.StreamLayer whose inbound connections are
// guardedConns.
type guardedStream struct {
	raft.StreamLayer
	log       hclog.Logger
	firstByte time.Duration // firstByteWait; tests shorten it
	closed    atomic.Bool   // the transport closed the layer: it is shutting down
	read      atomic.Int64  // bytes read from all inbound connections
}

func guardInbound(inner raft.StreamLayer, log hclog.Logger) *guardedStream {
	return &guardedStream{StreamLayer: inner, log: log, firstByte: firstByteWait}
}

func (g *guardedStream) Accept() (net.Conn, error) {
	c, err := g.StreamLayer.Accept()
	if err != nil {
		return nil, err
	}
	// A connection whose deadline cannot be set is served unguarded
	// against silence; what it sends is still judged.
	_ = c.SetReadDeadline(time.Now().Add(g.firstByte))
	return &guardedConn{Conn: c, stream: g}, nil
}

func (g *guardedStream) Close() error {
	g.closed.Store(true)
	return g.StreamLayer.Close()
}

// guardedConn is an inbound Raft connection that remembers how it went:
// whether it sent anything, and whether reading or writing failed (the
// peer went away) before raft closed it.
type guardedConn struct {
	net.Conn
	stream *guardedStream

	mu      sync.Mutex
	read    int64 // bytes read
	gone    bool  // the peer hung up (or a write to it failed)
	silent  bool  // the first-byte deadline passed
	readErr error // a read failed otherwise (a TLS handshake refused)
	closing bool
}

func (c *guardedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.stream.read.Add(int64(n))
	c.mu.Lock()
	defer c.mu.Unlock()
	if n > 0 && c.read == 0 {
		_ = c.Conn.SetReadDeadline(time.Time{}) // it spoke: no deadline from now on
	}
	c.read += int64(n)
	switch {
	case err == nil:
	case c.read == 0 && errors.Is(err, os.ErrDeadlineExceeded):
		c.silent = true
	case hungUp([]any{err}):
		c.gone = true
	default:
		c.readErr = err
	}
	return n, err
}

func (c *guardedConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	if err != nil {
		c.mu.Lock()
		c.gone = true
		c.mu.Unlock()
	}
	return n, err
}

// Close is called by raft's transport when it is done with the
// connection; it logs the end of one that was not the peer's doing.
func (c *guardedConn) Close() error {
	c.mu.Lock()
	first := !c.closing
	c.closing = true
	read, gone, silent, readErr := c.read, c.gone, c.silent, c.readErr
	c.mu.Unlock()
	if first && !gone && !c.stream.closed.Load() {
		peer := c.RemoteAddr().String()
		host := peer
		if h, _, err := net.SplitHostPort(peer); err == nil {
			host = h
		}
		switch {
		case silent:
			c.stream.log.Warn(msgSilent, "from", host, "address", peer, "waited", c.stream.firstByte.String())
		case readErr != nil:
			c.stream.log.Warn(msgNotRaft, "from", host, "address", peer, "bytes_read", read, "error", readErr)
		case read > 0:
			c.stream.log.Warn(msgNotRaft, "from", host, "address", peer, "bytes_read", read)
		}
	}
	return c.Conn.Close()
}
