package grpctest

import (
	"bytes"
	"io"
	"net"
	"sync/atomic"

	"golang.org/x/net/http2"
)

// CountPings wraps lis, a gRPC server's listener: every connection it
// accepts reads the frames its client sends as they pass and adds each
// PING the client starts (not its answers to the server's) to the
// returned counter. grpc-go's client pings after data arrives to measure
// the link while its flow-control windows are dynamic, and on its
// keepalive timer.
func CountPings(lis net.Listener) (net.Listener, *atomic.Int64) {
	n := new(atomic.Int64)
	return &pingListener{Listener: lis, pings: n}, n
}

type pingListener struct {
	net.Listener
	pings *atomic.Int64
}

func (l *pingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	r, w := io.Pipe()
	go countPings(r, l.pings)
	return &pingConn{Conn: c, frames: w}, nil
}

// pingConn passes what it reads to the frame reader, which reads until
// the connection closes.
type pingConn struct {
	net.Conn
	frames *io.PipeWriter
}

func (c *pingConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if n > 0 {
		_, _ = c.frames.Write(b[:n])
	}
	if err != nil {
		c.frames.CloseWithError(err)
	}
	return n, err
}

func (c *pingConn) Close() error {
	c.frames.Close()
	return c.Conn.Close()
}

// countPings reads a client's preface and frames from r, counting the
// PINGs it starts; past anything it cannot parse it only drains r, so
// that the connection's reads never wait for it.
func countPings(r *io.PipeReader, pings *atomic.Int64) {
	defer func() { _, _ = io.Copy(io.Discard, r) }()
	preface := make([]byte, len(http2.ClientPreface))
	if _, err := io.ReadFull(r, preface); err != nil || !bytes.Equal(preface, []byte(http2.ClientPreface)) {
		return
	}
	fr := http2.NewFramer(nil, r)
	fr.SetMaxReadFrameSize(1 << 24)
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			return
		}
		if p, ok := f.(*http2.PingFrame); ok && !p.IsAck() {
			pings.Add(1)
		}
	}
}
