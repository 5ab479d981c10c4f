package node_test

import (
	"errors"
	"net"
	"testing"
	"time"

	"github.com/zrpcio/zrpc/node"
	"github.com/zrpcio/zrpc/testcluster"
)

// TestHTTPPortBoundsEachClientsConnections: the HTTP port holds at most
// max_conns_per_client connections of one client IP open, as the gRPC
// port does; a connection past it is closed as it comes, and one that
// ends makes room.
func TestHTTPPortBoundsEachClientsConnections(t *testing.T) {
	c := testcluster.New(t, 1, testcluster.WithConfig(func(cfg *node.Config) { cfg.MaxConnsPerClient = 2 }))
	addr := c.Node(0).HTTPAddr()
	dial := func() net.Conn {
		t.Helper()
		conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatalf("dial %s: %v", addr, err)
		}
		t.Cleanup(func() { conn.Close() })
		return conn
	}
	// closedByAgent reports whether the agent closed conn (within a
	// second: an accepted, idle connection stays open far longer).
	closedByAgent := func(conn net.Conn) bool {
		t.Helper()
		_ = conn.SetReadDeadline(time.Now().Add(time.Second))
		_, err := conn.Read(make([]byte, 1))
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return false
		}
		return err != nil
	}
	first, second := dial(), dial()
	third := dial()
	if !closedByAgent(third) {
		t.Fatalf("a third connection from one client with max_conns_per_client 2 was kept open")
	}
	if closedByAgent(second) {
		t.Fatalf("the second connection, within the bound, was closed")
	}
	first.Close()
	// The agent sees the close a little later: try until a new one stays.
	deadline := time.Now().Add(10 * time.Second)
	for {
		if !closedByAgent(dial()) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no new connection was kept within 10s after one of the two closed")
		}
	}
}
