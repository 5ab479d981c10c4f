package node

import (
	"net"
	"testing"
	"time"

	"github.com/zrpcio/zrpc/internal/grpctest"
	"github.com/zrpcio/zrpc/node/grpcapi"
)

// TestPeerConnectionsGrantPeersStaticWindows: an agent's connection to a
// peer grants the peer the static windows the agent's own server grants
// (grpcapi.PeerWindows), so that shards a peer answers stream without
// waiting for gRPC to grow the windows. A fake peer reads what the
// connection opens with.
func TestPeerConnectionsGrantPeersStaticWindows(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type grant struct {
		grpctest.Windows
		err error
	}
	got := make(chan grant, 1)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			got <- grant{err: err}
			return
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(20 * time.Second))
		w, err := grpctest.ClientWindows(conn)
		got <- grant{w, err}
	}()
	peers := newPeerConns(&Node{})
	defer peers.close()
	conn, err := peers.conn(ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	conn.Connect()
	g := <-got
	if g.err != nil {
		t.Fatal(g.err)
	}
	want := grpctest.Windows{Stream: grpcapi.StreamWindow, Conn: grpcapi.ConnWindow}
	if g.Windows != want {
		t.Fatalf("peer connection granted %d bytes per stream and %d per connection; want the server's %d and %d",
			g.Stream, g.Conn, want.Stream, want.Conn)
	}
}
