package client

import (
	"context"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/client/clienttest"
)

// TestDialerOpensTheConnections: with Config.Dialer, the client reaches an
// endpoint through it, here an address where nothing listens that the
// dialer maps to the agent's.
func TestDialerOpensTheConnections(t *testing.T) {
	a := (&clienttest.Agent{OnRegister: func(context.Context, *zrpcpb.RegisterRequest) (*zrpcpb.RegisterResponse, error) {
		return &zrpcpb.RegisterResponse{Header: &zrpcpb.ResponseHeader{Revision: 7}}, nil
	}}).Start(t)
	var dials atomic.Int32
	c, err := New(Config{
		Endpoints:   []string{"127.0.0.1:1"},
		DialTimeout: time.Second,
		Logger:      testLogger(t),
		Dialer: func(ctx context.Context, addr string) (net.Conn, error) {
			dials.Add(1)
			if addr != "127.0.0.1:1" {
				t.Errorf("Dialer got %q, want the endpoint as configured", addr)
			}
			var d net.Dialer
			return d.DialContext(ctx, "tcp", a.Addr)
		},
	})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	defer c.Close()
	if _, _, err := c.Register(t.Context(), &zrpcpb.Instance{Service: "user.rpc", Id: "u1", Address: "127.0.0.1:9000"}); err != nil {
		t.Fatalf("Register through the dialer: %v", err)
	}
	if dials.Load() == 0 || a.Calls() != 1 {
		t.Fatalf("%d dials, %d calls on the agent; want the call to reach it through the dialer", dials.Load(), a.Calls())
	}
}
