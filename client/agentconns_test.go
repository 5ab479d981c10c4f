package client

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"

	"github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/client/clienttest"
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

// TestConnectionsGrantAgentsStaticWindows: on every connection to an
// agent, an endpoint's (registrations, watches) and one for shards, the
// client grants the agent a 4 MiB window per stream and 16 MiB for the
// connection from the start (its first SETTINGS and WINDOW_UPDATE). gRPC
// grants more than its initial 64 KiB only when told a static window,
// and then measures nothing: no ping answers every call's reply. A fake
// agent reads what the client opens each connection with.
func TestConnectionsGrantAgentsStaticWindows(t *testing.T) {
	want := grpctest.Windows{Stream: 4 << 20, Conn: 16 << 20}
	endpoint, endpointGranted := grpctest.ListenForClientWindows(t)
	c, err := New(Config{Endpoints: []string{endpoint}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.endpoints[0].conn.Connect()
	if g := endpointGranted(); g != want {
		t.Errorf("on an endpoint's connection the client granted %d bytes per stream and %d per connection; want %d and %d",
			g.Stream, g.Conn, want.Stream, want.Conn)
	}

	shards, shardsGranted := grpctest.ListenForClientWindows(t)
	conn, err := c.agentConn(shards)
	if err != nil {
		t.Fatal(err)
	}
	conn.Connect()
	if g := shardsGranted(); g != want {
		t.Errorf("on a connection for shards the client granted %d bytes per stream and %d per connection; want %d and %d",
			g.Stream, g.Conn, want.Stream, want.Conn)
	}
}

// TestRegistrationsCostTheAgentNoPings: calls on an endpoint's connection
// send the agent requests and nothing more. With gRPC's dynamic windows
// the client would ping after every reply it reads (to measure the link),
// and the agent would wake to answer each ping.
func TestRegistrationsCostTheAgentNoPings(t *testing.T) {
	a := (&clienttest.Agent{OnRegister: func(_ context.Context, req *zrpcpb.RegisterRequest) (*zrpcpb.RegisterResponse, error) {
		return &zrpcpb.RegisterResponse{Header: &zrpcpb.ResponseHeader{Revision: 1}, Instance: req.Instance}, nil
	}}).Start(t)
	c := newTestClient(t, a.Addr)
	const calls = 20
	for i := range calls {
		inst := &zrpcpb.Instance{Service: "user.rpc", Id: fmt.Sprintf("u%d", i), Address: "127.0.0.1:9001"}
		if _, _, err := c.Register(testContext(t), inst); err != nil {
			t.Fatal(err)
		}
	}
	if a.Calls() != calls {
		t.Fatalf("the agent answered %d calls, want %d", a.Calls(), calls)
	}
	if n := a.Pings(); n != 0 {
		t.Errorf("the client sent the agent %d pings over %d registrations, want none", n, calls)
	}
}
