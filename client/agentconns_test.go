package client

import (
	"errors"
	"testing"

	"google.golang.org/grpc/connectivity"
)

func TestAgentConnSharesEndpointConnectionsAndClosesItsOwn(t *testing.T) {
	c, err := New(Config{Endpoints: []string{"127.0.0.1:1"}})
	if err != nil {
		t.Fatal(err)
	}
	ep, err := c.agentConn("127.0.0.1:1")
	if err != nil || ep != c.endpoints[0].conn {
		t.Fatalf("agentConn of an endpoint = %p, %v; want the endpoint's connection %p", ep, err, c.endpoints[0].conn)
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
	if st := other.GetState(); st != connectivity.Shutdown {
		t.Fatalf("connection to an agent after Close: %v, want Shutdown", st)
	}
	if _, err := c.agentConn("127.0.0.1:3"); !errors.Is(err, ErrClosed) {
		t.Fatalf("agentConn after Close: %v, want ErrClosed", err)
	}
}
