package client

import (
	"context"
	"crypto/tls"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/client/clienttest"
	"github.com/zrpcio/zrpc/internal/pki/pkitest"
	"github.com/zrpcio/zrpc/internal/tlsconf"
	"github.com/zrpcio/zrpc/internal/tlsconf/tlstest"
)

func tlsClient(t *testing.T, addr string, tc *tls.Config) *Client {
	t.Helper()
	c, err := New(Config{Endpoints: []string{addr}, TLS: tc})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestTLSClientTalksToAgentsOverMutualTLS(t *testing.T) {
	kit := pkitest.New(t)
	agent := (&clienttest.Agent{OnStatus: func(context.Context, *zrpcpb.StatusRequest) (*zrpcpb.StatusResponse, error) {
		return &zrpcpb.StatusResponse{Node: "n1"}, nil
	}}).Start(t)
	agentTLS, err := tlsconf.Server(tlsconf.Files(kit.Agent("n1")))
	if err != nil {
		t.Fatal(err)
	}
	addr := tlstest.Front(t, agent.Addr, agentTLS, nil)

	opsTLS, err := tlsconf.Client(tlsconf.Files(kit.Client("ops")), "", tlsconf.RequireAgent())
	if err != nil {
		t.Fatal(err)
	}
	st, err := tlsClient(t, addr, opsTLS).Status(testContext(t))
	if err != nil {
		t.Fatalf("Status over TLS: %v", err)
	}
	if st.GetNode() != "n1" {
		t.Fatalf("Status node %q, want n1", st.GetNode())
	}

	// A plaintext client gets no answer from a TLS agent.
	if _, err := tlsClient(t, addr, nil).Status(testContext(t)); status.Code(err) != codes.Unavailable {
		t.Fatalf("plaintext Status: err %v, want Unavailable", err)
	}
}

func TestTLSClientRefusesServerWithoutAgentCertificate(t *testing.T) {
	kit := pkitest.New(t)
	agent := (&clienttest.Agent{}).Start(t)
	svcTLS, err := tlsconf.Server(tlsconf.Files(kit.Service("user.rpc")))
	if err != nil {
		t.Fatal(err)
	}
	addr := tlstest.Front(t, agent.Addr, svcTLS, nil)
	opsTLS, err := tlsconf.Client(tlsconf.Files(kit.Client("ops")), "")
	if err != nil {
		t.Fatal(err)
	}
	_, err = tlsClient(t, addr, opsTLS).Status(testContext(t))
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), `server certificate \"user.rpc\" is not valid for \"agent.zrpc\"`) {
		t.Fatalf("Status of a server with a service certificate: err %v (code %v), want Unavailable saying it is not valid for agent.zrpc", err, status.Code(err))
	}
	if agent.Calls() != 0 {
		t.Fatalf("the server got %d calls, want none", agent.Calls())
	}
}
