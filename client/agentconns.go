package client

import (
	"fmt"
	"net"
	"sync"

	"google.golang.org/grpc"

	"github.com/zrpcio/zrpc/api/apierr"
)

// maxAgentConns bounds the connections a client keeps to agents it was not
// configured with: more than a cluster has agents means the addresses are
// not a cluster's.
const maxAgentConns = 1024

// shardWriteBuffer is the size of the buffer gRPC writes the connections
// shards stream over (agentConns) through, 32 KiB by default: a put's
// shards leave in writes of up to 512 KiB, a sixteenth of the system
// calls and far fewer, fuller loopback or NIC packets. grpc-go shares
// write buffers between connections (its default): a connection holds
// one only while it has bytes to write, so a client that has talked to
// many agents does not keep 512 KiB for each. The read buffer stays at
// grpc-go's 32 KiB: it is held for the connection's life.
const shardWriteBuffer = 512 << 10

// agentConns are the client's connections to agents reached by the
// address the cluster gives (the holders of a blob's shards, which
// client-striped puts and reads talk to directly), one per agent, apart
// from the endpoints' connections (an endpoint that holds shards has one
// of each). They use the endpoints' dial options (TLS, token, windows)
// with a larger write buffer, and close with the client.
type agentConns struct {
	mu     sync.Mutex
	conns  map[string]*grpc.ClientConn
	closed bool
}

// agentConn returns the client's connection for shards to the agent at
// addr, made on first use and kept until Close.
func (c *Client) agentConn(addr string) (*grpc.ClientConn, error) {
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return nil, fmt.Errorf("%w: agent address %q from the cluster: want host:port: %v", apierr.ErrInvalidArgument, addr, err)
	}
	ac := &c.agents
	ac.mu.Lock()
	defer ac.mu.Unlock()
	if ac.closed {
		return nil, ErrClosed
	}
	if conn := ac.conns[addr]; conn != nil {
		return conn, nil
	}
	if len(ac.conns) >= maxAgentConns {
		return nil, fmt.Errorf("client holds connections to %d agents already, the limit; agent address %q", len(ac.conns), addr)
	}
	opts := append([]grpc.DialOption{grpc.WithWriteBufferSize(shardWriteBuffer)}, dialOptions(c.cfg)...)
	conn, err := grpc.NewClient(addr, opts...)
	if err != nil {
		return nil, fmt.Errorf("create connection to agent %s: %w", addr, err)
	}
	if ac.conns == nil {
		ac.conns = make(map[string]*grpc.ClientConn)
	}
	ac.conns[addr] = conn
	return conn, nil
}

// close closes every connection and refuses new ones.
func (ac *agentConns) close() []error {
	ac.mu.Lock()
	defer ac.mu.Unlock()
	ac.closed = true
	var errs []error
	for addr, conn := range ac.conns {
		if err := conn.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close connection to %s: %w", addr, err))
		}
	}
	ac.conns = nil
	return errs
}
