package dns_test

import (
	"testing"
	"time"

	"github.com/miekg/dns"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/zrpcio/zrpc/acl"
	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/client"
	"github.com/zrpcio/zrpc/internal/testport"
	"github.com/zrpcio/zrpc/node"
	"github.com/zrpcio/zrpc/testcluster"
)

// TestDNSWithACLsShowsWhatItsTokenMayRead: with ACLs on, DNS answers
// nothing until its dns_token exists, and then only the services that
// token may read; the others look unknown (NXDOMAIN).
func TestDNSWithACLsShowsWhatItsTokenMayRead(t *testing.T) {
	dnsToken, err := acl.NewSecret()
	if err != nil {
		t.Fatal(err)
	}
	port := testport.Free(t)
	c := testcluster.New(t, 1, testcluster.WithConfig(func(cfg *node.Config) {
		cfg.ACL, cfg.DNSPort, cfg.DNSToken = true, port, dnsToken
	}))
	server := c.Node(0).DNSAddr()
	anon, err := client.New(client.Config{Endpoints: []string{c.GRPCAddr(0)}})
	if err != nil {
		t.Fatal(err)
	}
	defer anon.Close()
	_, mgmt, err := anon.ACLBootstrap(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	admin, err := client.New(client.Config{Endpoints: []string{c.GRPCAddr(0)}, Token: mgmt})
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	for _, svc := range []string{"user.rpc", "order.rpc"} {
		if _, _, err := admin.Register(ctx(t), &pb.Instance{Service: svc, Id: "a", Address: "127.0.0.2:9000"}); err != nil {
			t.Fatal(err)
		}
	}
	rcodes := func() (user, order int) {
		return query(t, server, "udp", "user.rpc.service.zrpc.", dns.TypeA).Rcode,
			query(t, server, "udp", "order.rpc.service.zrpc.", dns.TypeA).Rcode
	}
	if u, o := rcodes(); u != dns.RcodeNameError || o != dns.RcodeNameError {
		t.Fatalf("before the DNS token exists: user.rpc %s, order.rpc %s; want NXDOMAIN for both",
			dns.RcodeToString[u], dns.RcodeToString[o])
	}

	if _, err := admin.ACLPolicyCreate(ctx(t), "dns", "", `service "user." { read }`); err != nil {
		t.Fatal(err)
	}
	// The token is made with the secret the agent was given (an operator
	// creates it first and then gives its secret to the agents).
	conn, err := grpc.NewClient(c.GRPCAddr(0), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	authed := metadata.AppendToOutgoingContext(ctx(t), "authorization", "Bearer "+mgmt)
	if _, err := pb.NewACLClient(conn).TokenCreate(authed, &pb.ACLTokenCreateRequest{Policies: []string{"dns"}, Secret: dnsToken}); err != nil {
		t.Fatal(err)
	}
	c.WaitFor(10*time.Second, "DNS answers user.rpc with its token", func() bool {
		u, _ := rcodes()
		return u == dns.RcodeSuccess
	})
	if u, o := rcodes(); u != dns.RcodeSuccess || o != dns.RcodeNameError {
		t.Fatalf("with the DNS token: user.rpc %s, order.rpc %s; want NOERROR and NXDOMAIN", dns.RcodeToString[u], dns.RcodeToString[o])
	}
	if resp := query(t, server, "udp", "user.rpc.service.zrpc.", dns.TypeA); len(resp.Answer) != 1 {
		t.Fatalf("user.rpc with the DNS token: %v", resp.Answer)
	}
}
