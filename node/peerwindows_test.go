package node

import (
	"errors"
	"testing"

	"github.com/zrpcio/zrpc/api/apierr"
	"github.com/zrpcio/zrpc/internal/grpctest"
	"github.com/zrpcio/zrpc/node/grpcapi"
)

// TestPeerConnectionsGrantPeersStaticWindows: an agent's connection to a
// peer grants the peer the static windows the agent's own server grants
// (grpcapi.PeerWindows), so that shards a peer answers stream without
// waiting for gRPC to grow the windows. A fake peer reads what the
// connection opens with.
func TestPeerConnectionsGrantPeersStaticWindows(t *testing.T) {
	addr, granted := grpctest.ListenForClientWindows(t)
	peers := newPeerConns(&Node{})
	defer peers.close()
	conn, err := peers.conn(addr)
	if err != nil {
		t.Fatal(err)
	}
	conn.Connect()
	want := grpctest.Windows{Stream: grpcapi.StreamWindow, Conn: grpcapi.ConnWindow}
	if g := granted(); g != want {
		t.Fatalf("peer connection granted %d bytes per stream and %d per connection; want the server's %d and %d",
			g.Stream, g.Conn, want.Stream, want.Conn)
	}
}

// TestPeerConnectionsMakeNoneOnceClosed: once the agent closes its peer
// connections (shutting down), a late caller (a goroutine still asking a
// peer) gets an error, not a new connection that no one would close.
func TestPeerConnectionsMakeNoneOnceClosed(t *testing.T) {
	peers := newPeerConns(&Node{})
	if _, err := peers.conn("127.0.0.1:1"); err != nil {
		t.Fatal(err)
	}
	peers.close()
	if c, err := peers.conn("127.0.0.1:1"); !errors.Is(err, apierr.ErrShuttingDown) || c != nil {
		t.Fatalf("conn after close: %v, %v; want no connection and ErrShuttingDown", c, err)
	}
	if n := len(peers.conns); n != 0 {
		t.Fatalf("%d connections kept after close", n)
	}
}
