package client

import (
	"errors"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"

	"github.com/zrpcio/zrpc/internal/grpctest"
)

func TestAgentConnKeepsOneConnectionPerAgentAndClosesThem(t *testing.T) {
	c, err := New(Config{Endpoints: []string{"127.0.0.1:1"}})
	if err != nil {
		t.Fatal(err)
	}
	ep, err := c.agentConn("127.0.0.1:1")
	if err != nil || ep == c.endpoints[0].conn {
		t.Fatalf("agentConn of an endpoint = %p, %v; want a connection for shards apart from the endpoint's %p", ep, err, c.endpoints[0].conn)
	}
	if again, err := c.agentConn("127.0.0.1:1"); err != nil || again != ep {
		t.Fatalf("second agentConn of an endpoint = %p, %v; want the first %p", again, err, ep)
	}
	other, err := c.agentConn("127.0.0.1:2")
	if err != nil {
		t.Fatal(err)
	}
	again, err := c.agentConn("127.0.0.1:2")
	if err != nil || again != other {
		t.Fatalf("second agentConn of one address = %p, %v; want the first %p", again, err, other)
	}
	if _, err := c.agentConn("no-port"); err == nil {
		t.Fatal("agentConn accepted an address without a port")
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	for _, conn := range []*grpc.ClientConn{ep, other} {
		if st := conn.GetState(); st != connectivity.Shutdown {
			t.Fatalf("connection to agent %s after Close: %v, want Shutdown", conn.Target(), st)
		}
	}
	if _, err := c.agentConn("127.0.0.1:3"); !errors.Is(err, ErrClosed) {
		t.Fatalf("agentConn after Close: %v, want ErrClosed", err)
	}
}

// TestAgentConnGrantsAgentsStaticWindows: on a connection for shards the
// client grants the agent a 4 MiB window per stream and 16 MiB for the
// connection from the start (its first SETTINGS and WINDOW_UPDATE), so
// that a holder streams shards without waiting for the window to grow.
// A fake agent reads what the client opens the connection with.
func TestAgentConnGrantsAgentsStaticWindows(t *testing.T) {
	addr, granted := grpctest.ListenForClientWindows(t)
	c, err := New(Config{Endpoints: []string{"127.0.0.1:1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	conn, err := c.agentConn(addr)
	if err != nil {
		t.Fatal(err)
	}
	conn.Connect()
	g := granted()
	if g.Stream != uint32(shardStreamWindow) || g.Conn != uint32(shardConnWindow) {
		t.Fatalf("client granted %d bytes per stream and %d per connection; want %d and %d",
			g.Stream, g.Conn, shardStreamWindow, shardConnWindow)
	}
}
