package raftstore

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/zrpcio/zrpc/internal/connlimit"
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
// waiting connection holds a goroutine and raft's read buffer. And it
// greets: a connection that opens with a hello (transport_hello.go) from
// an agent of another cluster is answered and hung up on, and one from
// this cluster answered; the guard's Dial sends the hello.

// firstByteWait is how long an inbound Raft connection may stay silent
// before its first byte.
const firstByteWait = 10 * time.Second

// raftConnsPerHost bounds the inbound Raft connections one host may hold
// open (internal/connlimit): each holds a goroutine and half a MiB of
// raft's buffers. A peer keeps a few (raft pools 4, plus one in flight
// per kind of call), an agent on the same host as several others a few
// dozen; a stranger gets no more than this.
const raftConnsPerHost = 128

// Messages of the guard's warnings.
const (
	msgNotRaft       = "dropped a Raft connection whose bytes are not a Raft command"
	msgSilent        = "closed a Raft connection that sent nothing"
	msgOtherCluster  = "refused a Raft connection from an agent of another cluster; its leader may still list this address (a reused IP?)"
	msgTooMany       = "closed a Raft connection from a host that holds the most it may keep open"
	msgDialedAnother = "a Raft peer's address belongs to an agent of another cluster"
)

// guardedStream is a raft.StreamLayer whose inbound connections are
// guardedConns.
type guardedStream struct {
	raft.StreamLayer
	limited   net.Listener // the layer's Accept, at most raftConnsPerHost per host
	log       hclog.Logger
	firstByte time.Duration // firstByteWait; tests shorten it
	closed    atomic.Bool   // the transport closed the layer: it is shutting down
	read      atomic.Int64  // bytes read from all inbound connections
	hello     *hello        // nil: send no hello, accept any cluster's
}

func guardInbound(inner raft.StreamLayer, log hclog.Logger, h *hello) *guardedStream {
	limited := connlimit.Wrap(inner, raftConnsPerHost, func(host string, limit int) {
		log.Warn(msgTooMany, "from", host, "limit", limit)
	})
	return &guardedStream{StreamLayer: inner, limited: limited, log: log, firstByte: firstByteWait, hello: h}
}

// Dial opens a connection to a peer and greets it when it reads hellos.
func (g *guardedStream) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	conn, err := g.StreamLayer.Dial(addr, timeout)
	if err != nil || !g.hello.greets(string(addr)) {
		return conn, err
	}
	if err := g.hello.exchange(conn, string(addr)); err != nil {
		conn.Close()
		if errors.Is(err, errOtherCluster) {
			g.log.Warn(msgDialedAnother, "target", string(addr), "error", err)
		}
		return nil, err
	}
	return conn, nil
}

func (g *guardedStream) Accept() (net.Conn, error) {
	c, err := g.limited.Accept()
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

	// greeted and pending belong to the one goroutine that reads.
	greeted bool
	pending []byte // what the peer sent first, when it was not a hello

	mu      sync.Mutex
	read    int64 // bytes read
	gone    bool  // the peer hung up (or a write to it failed)
	silent  bool  // the first-byte deadline passed
	readErr error // a read failed otherwise (a TLS handshake refused)
	// otherCluster is the cluster a refused hello named; mine, this
	// agent's then.
	otherCluster, mine string
	closing            bool
}

func (c *guardedConn) Read(p []byte) (int, error) {
	if !c.greeted {
		c.greeted = true
		if err := c.greet(); err != nil {
			return 0, err
		}
	}
	if len(c.pending) > 0 {
		n := copy(p, c.pending)
		c.pending = c.pending[n:]
		return n, nil
	}
	return c.readConn(p)
}

// greet reads the connection's first byte: the start of a hello, which it
// reads and answers (refusing an agent of another cluster), or of a Raft
// command, kept for Read.
func (c *guardedConn) greet() error {
	first := make([]byte, 1)
	n, err := c.readConn(first)
	if n == 0 {
		if err == nil {
			err = io.ErrNoProgress
		}
		return err
	}
	if first[0] != helloMagic {
		c.pending = first
		return nil
	}
	_ = c.Conn.SetReadDeadline(time.Now().Add(helloWait))
	theirs, err := readHelloAfterMagic(readerFunc(c.readConn))
	_ = c.Conn.SetReadDeadline(time.Time{})
	if err != nil {
		c.mu.Lock()
		if c.readErr == nil && !c.gone {
			c.readErr = err
		}
		c.mu.Unlock()
		return err
	}
	mine := c.stream.hello.clusterID()
	if !sameCluster(mine, theirs) {
		c.mu.Lock()
		c.otherCluster, c.mine = theirs, mine
		c.mu.Unlock()
		_ = writeHello(c, mine) // the dialer says the clash too
		return errOtherCluster
	}
	return writeHello(c, mine)
}

// readerFunc is a function as an io.Reader.
type readerFunc func([]byte) (int, error)

func (f readerFunc) Read(p []byte) (int, error) { return f(p) }

// readConn reads from the connection, keeping count of how it went.
func (c *guardedConn) readConn(p []byte) (int, error) {
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
	other, mine := c.otherCluster, c.mine
	c.mu.Unlock()
	peer, host := c.RemoteAddr().String(), connlimit.Host(c.RemoteAddr())
	if first && other != "" {
		c.stream.log.Warn(msgOtherCluster, "from", host, "address", peer, "its_cluster", other, "cluster", mine)
	} else if first && !gone && !c.stream.closed.Load() {
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
