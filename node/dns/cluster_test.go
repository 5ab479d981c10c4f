package dns_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/internal/grpctest"
	"github.com/zrpcio/zrpc/internal/testport"
	"github.com/zrpcio/zrpc/node"
	"github.com/zrpcio/zrpc/testcluster"
)

// dnsCluster is a one-agent cluster answering DNS on a free port.
func dnsCluster(t testing.TB) (*testcluster.Cluster, string) {
	port := testport.Free(t)
	c := testcluster.New(t, 1, testcluster.WithConfig(func(cfg *node.Config) {
		cfg.DNSPort = port
	}))
	addr := c.Node(0).DNSAddr()
	if addr == "" {
		t.Fatal("agent started with dns_port set but serves no DNS")
	}
	return c, addr
}

func ctx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// register registers instances on agent 0 and waits until its replica
// has them.
func register(t testing.TB, c *testcluster.Cluster, instances ...*pb.Instance) {
	t.Helper()
	for _, inst := range instances {
		if _, err := c.Registry(0).Register(ctx(t), &pb.RegisterRequest{Instance: inst}); err != nil {
			t.Fatalf("register %s/%s: %v", inst.Service, inst.Id, err)
		}
	}
	c.WaitFor(10*time.Second, "the agent's replica holds the registrations", func() bool {
		for _, inst := range instances {
			if c.Node(0).Store().FSM().Instance(inst.Service, inst.Id) == nil {
				return false
			}
		}
		return true
	})
}

func httpGet(t testing.TB, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// query asks server over net ("udp" or "tcp") for name of type qtype.
func query(t testing.TB, server, netw, name string, qtype uint16) *dns.Msg {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	cl := &dns.Client{Net: netw, Timeout: 5 * time.Second}
	resp, _, err := cl.Exchange(m, server)
	if err != nil {
		t.Fatalf("%s %s %s: %v", netw, dns.TypeToString[qtype], name, err)
	}
	return resp
}

// answers lists the answer section as "TYPE data" strings, sorted.
func answers(resp *dns.Msg) []string {
	var out []string
	for _, rr := range resp.Answer {
		switch rr := rr.(type) {
		case *dns.A:
			out = append(out, "A "+rr.A.String())
		case *dns.AAAA:
			out = append(out, "AAAA "+rr.AAAA.String())
		case *dns.SRV:
			out = append(out, fmt.Sprintf("SRV %d %s", rr.Port, rr.Target))
		default:
			out = append(out, rr.String())
		}
	}
	slices.Sort(out)
	return out
}

func TestDNSAnswersPassingInstancesOverUDPAndTCP(t *testing.T) {
	c, server := dnsCluster(t)
	register(t, c,
		&pb.Instance{Id: "a", Service: "user.rpc", Address: "127.0.0.2:9000", Tags: []string{"v2"}, Zone: "z1"},
		&pb.Instance{Id: "b", Service: "user.rpc", Address: "127.0.0.3:9001", Zone: "z2"},
		&pb.Instance{Id: "c", Service: "user.rpc", Address: "[::1]:9002", Tags: []string{"v2"}, Zone: "z2"},
		// critical until its first check, which fails: never answered
		&pb.Instance{Id: "sick", Service: "user.rpc", Address: "127.0.0.9:9003", Check: &pb.Check{
			Grpc: true, GrpcAddress: "127.0.0.1:1", Interval: durationpb.New(time.Second), Timeout: durationpb.New(time.Second)}},
		&pb.Instance{Id: "only", Service: "sick.rpc", Address: "127.0.0.9:9004", Check: &pb.Check{
			Grpc: true, GrpcAddress: "127.0.0.1:1", Interval: durationpb.New(time.Second), Timeout: durationpb.New(time.Second)}},
	)
	const (
		t2 = "7f000002.addr.zrpc."
		t3 = "7f000003.addr.zrpc."
		t6 = "00000000000000000000000000000001.addr.zrpc."
	)
	cases := []struct {
		name  string
		qtype uint16
		rcode int
		want  []string
	}{
		{"user.rpc.service.zrpc.", dns.TypeSRV, dns.RcodeSuccess, []string{"SRV 9000 " + t2, "SRV 9001 " + t3, "SRV 9002 " + t6}},
		{"user.rpc.service.zrpc.", dns.TypeA, dns.RcodeSuccess, []string{"A 127.0.0.2", "A 127.0.0.3"}},
		{"user.rpc.service.zrpc.", dns.TypeAAAA, dns.RcodeSuccess, []string{"AAAA ::1"}},
		{"USER.rpc.Service.ZRPC.", dns.TypeA, dns.RcodeSuccess, []string{"A 127.0.0.2", "A 127.0.0.3"}},
		{"v2.user.rpc.service.zrpc.", dns.TypeSRV, dns.RcodeSuccess, []string{"SRV 9000 " + t2, "SRV 9002 " + t6}},
		{"user.rpc.service.z2.zrpc.", dns.TypeSRV, dns.RcodeSuccess, []string{"SRV 9001 " + t3, "SRV 9002 " + t6}},
		{"v2.user.rpc.service.z2.zrpc.", dns.TypeA, dns.RcodeSuccess, nil},
		{"v2.user.rpc.service.z2.zrpc.", dns.TypeAAAA, dns.RcodeSuccess, []string{"AAAA ::1"}},
		{t2, dns.TypeA, dns.RcodeSuccess, []string{"A 127.0.0.2"}},
		{t6, dns.TypeAAAA, dns.RcodeSuccess, []string{"AAAA ::1"}},
		// NODATA: a known service with no passing instance, or a type it has none of
		{"sick.rpc.service.zrpc.", dns.TypeA, dns.RcodeSuccess, nil},
		{"user.rpc.service.zrpc.", dns.TypeTXT, dns.RcodeSuccess, nil},
		{"nosuchtag.user.rpc.service.zrpc.", dns.TypeA, dns.RcodeSuccess, nil},
		// NXDOMAIN: no such service
		{"order.rpc.service.zrpc.", dns.TypeSRV, dns.RcodeNameError, nil},
		{"x.order.rpc.service.zrpc.", dns.TypeA, dns.RcodeNameError, nil},
		{"user.rpc.zrpc.", dns.TypeA, dns.RcodeNameError, nil},
		// REFUSED: not the agent's domain, and it never recurses
		{"example.com.", dns.TypeA, dns.RcodeRefused, nil},
		{"user.rpc.service.consul.", dns.TypeA, dns.RcodeRefused, nil},
	}
	for _, netw := range []string{"udp", "tcp"} {
		for _, tc := range cases {
			resp := query(t, server, netw, tc.name, tc.qtype)
			what := fmt.Sprintf("%s %s %s", netw, dns.TypeToString[tc.qtype], tc.name)
			if resp.Rcode != tc.rcode {
				t.Errorf("%s: rcode %s, want %s", what, dns.RcodeToString[resp.Rcode], dns.RcodeToString[tc.rcode])
			}
			if got := answers(resp); !slices.Equal(got, tc.want) {
				t.Errorf("%s: answers %q, want %q", what, got, tc.want)
			}
			if resp.RecursionAvailable {
				t.Errorf("%s: answer offers recursion", what)
			}
			if tc.rcode != dns.RcodeRefused && (!resp.Authoritative || len(resp.Answer) == 0 && len(resp.Ns) == 0) {
				t.Errorf("%s: want an authoritative answer, with the SOA when empty: %v", what, resp)
			}
			for _, rr := range resp.Answer {
				if rr.Header().Ttl != 0 {
					t.Errorf("%s: %v has TTL %d, want the default 0", what, rr, rr.Header().Ttl)
				}
			}
		}
	}
	// An SRV answer's targets have their address in the additional section.
	resp := query(t, server, "udp", "user.rpc.service.zrpc.", dns.TypeSRV)
	var extra []string
	for _, rr := range resp.Extra {
		extra = append(extra, rr.Header().Name+" "+dns.TypeToString[rr.Header().Rrtype])
	}
	slices.Sort(extra)
	if want := []string{t6 + " AAAA", t2 + " A", t3 + " A"}; !slices.Equal(extra, want) {
		t.Errorf("SRV additional section %q, want %q", extra, want)
	}
	// The agent counts the answers by response code.
	metrics := httpGet(t, "http://"+c.Node(0).HTTPAddr()+"/metrics")
	for rcode, n := range map[string]int{"NOERROR": 2*13 + 1, "NXDOMAIN": 2 * 3, "REFUSED": 2 * 2} {
		if want := fmt.Sprintf("zrpc_dns_queries_total{rcode=%q} %d\n", rcode, n); !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %q", strings.TrimSpace(want))
		}
	}
}

func TestDNSRandomisesTheOrderOfRecords(t *testing.T) {
	c, server := dnsCluster(t)
	var insts []*pb.Instance
	for i := range 8 {
		insts = append(insts, &pb.Instance{Id: strconv.Itoa(i), Service: "user.rpc", Address: fmt.Sprintf("127.0.1.%d:9000", i+1)})
	}
	register(t, c, insts...)
	firsts := map[string]bool{}
	for range 50 {
		resp := query(t, server, "udp", "user.rpc.service.zrpc.", dns.TypeA)
		if len(resp.Answer) != 8 {
			t.Fatalf("%d answers, want 8", len(resp.Answer))
		}
		firsts[resp.Answer[0].(*dns.A).A.String()] = true
	}
	// The same first record 50 times out of 8 would be chance 8^-49.
	if len(firsts) < 2 {
		t.Fatalf("50 answers all start with %v: records are not shuffled", firsts)
	}
}

func TestDNSTruncatesLargeUDPAnswersAndAnswersThemWholeOverTCP(t *testing.T) {
	c, server := dnsCluster(t)
	var insts []*pb.Instance
	for i := range 100 {
		insts = append(insts, &pb.Instance{Id: strconv.Itoa(i), Service: "big.rpc", Address: fmt.Sprintf("127.0.%d.%d:9000", 2+i/200, 1+i%200)})
	}
	register(t, c, insts...)
	for _, qtype := range []uint16{dns.TypeSRV, dns.TypeA} {
		m := new(dns.Msg)
		m.SetQuestion("big.rpc.service.zrpc.", qtype)
		// Over UDP without EDNS0: at most 512 bytes, marked truncated.
		resp, _, err := (&dns.Client{Net: "udp", Timeout: 5 * time.Second}).Exchange(m, server)
		if err != nil {
			t.Fatal(err)
		}
		resp.Compress = true // as sent
		packed, _ := resp.Pack()
		if !resp.Truncated || len(packed) > dns.MinMsgSize || len(resp.Answer) >= 100 {
			t.Fatalf("UDP %s answer: truncated %v, %d bytes, %d records; want TC, at most 512 bytes", dns.TypeToString[qtype], resp.Truncated, len(packed), len(resp.Answer))
		}
		// With EDNS0 a client may take more, still not all of it.
		m.SetEdns0(4096, false)
		resp, _, err = (&dns.Client{Net: "udp", Timeout: 5 * time.Second, UDPSize: 4096}).Exchange(m, server)
		if err != nil {
			t.Fatal(err)
		}
		resp.Compress = true
		packed, _ = resp.Pack()
		if qtype == dns.TypeSRV && (!resp.Truncated || len(packed) <= dns.MinMsgSize || len(packed) > 4096) {
			t.Fatalf("UDP+EDNS0 SRV answer: truncated %v, %d bytes; want TC and more than 512 bytes", resp.Truncated, len(packed))
		}
		// The client retries over TCP, as resolvers do on TC: all of it.
		tcp := query(t, server, "tcp", "big.rpc.service.zrpc.", qtype)
		if tcp.Truncated || len(tcp.Answer) != 100 {
			t.Fatalf("TCP %s answer: truncated %v, %d records; want all 100", dns.TypeToString[qtype], tcp.Truncated, len(tcp.Answer))
		}
	}
}

// TestGRPCDNSResolverReachesRegisteredInstances dials with grpc-go's own
// dns:/// resolver, the agent as its DNS server: the A records of the
// service name lead to the instances, which share one port.
func TestGRPCDNSResolverReachesRegisteredInstances(t *testing.T) {
	c, server := dnsCluster(t)
	port, servers := echoServersOnOnePort(t, "127.0.0.2", "127.0.0.3")
	register(t, c,
		&pb.Instance{Id: "a", Service: "user.rpc", Address: net.JoinHostPort("127.0.0.2", port)},
		&pb.Instance{Id: "b", Service: "user.rpc", Address: net.JoinHostPort("127.0.0.3", port)},
	)
	target := fmt.Sprintf("dns://%s/user.rpc.service.zrpc:%s", server, port)
	conn, err := grpc.NewClient(target,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultServiceConfig(`{"loadBalancingConfig":[{"round_robin":{}}]}`))
	if err != nil {
		t.Fatalf("dial %s: %v", target, err)
	}
	defer conn.Close()
	c.WaitFor(20*time.Second, "calls through "+target+" reach both instances", func() bool {
		out := new(wrapperspb.BytesValue)
		if err := conn.Invoke(ctx(t), grpctest.EchoMethod, wrapperspb.Bytes([]byte("hi")), out); err != nil {
			t.Logf("call through %s: %v", target, err)
			return false
		}
		return string(out.Value) == "hi" && servers[0].calls() > 0 && servers[1].calls() > 0
	})
}

// echoServer is an echo server on one loopback IP that counts its calls.
type echoServer struct{ n atomic.Int64 }

func (s *echoServer) calls() int64 { return s.n.Load() }

// echoServersOnOnePort starts an echo server on each of ips, all on one
// port (as instances found by A records must be), and returns the port.
func echoServersOnOnePort(t *testing.T, ips ...string) (string, []*echoServer) {
	t.Helper()
	for range 20 {
		lns, err := listenAll(ips)
		if err != nil {
			continue
		}
		var servers []*echoServer
		for _, ln := range lns {
			es := &echoServer{}
			s := grpc.NewServer()
			grpctest.RegisterEcho(s, func(_ context.Context, in *wrapperspb.BytesValue) (*wrapperspb.BytesValue, error) {
				es.n.Add(1)
				return in, nil
			})
			done := make(chan struct{})
			go func() {
				defer close(done)
				_ = s.Serve(ln)
			}()
			t.Cleanup(func() {
				s.Stop()
				<-done
			})
			servers = append(servers, es)
		}
		_, port, _ := net.SplitHostPort(lns[0].Addr().String())
		return port, servers
	}
	t.Fatalf("no port free on all of %v", ips)
	return "", nil
}

// listenAll listens on the first IP's free port and on that port of the
// others.
func listenAll(ips []string) ([]net.Listener, error) {
	first, err := net.Listen("tcp", net.JoinHostPort(ips[0], "0"))
	if err != nil {
		return nil, err
	}
	lns := []net.Listener{first}
	_, port, _ := net.SplitHostPort(first.Addr().String())
	for _, ip := range ips[1:] {
		ln, err := net.Listen("tcp", net.JoinHostPort(ip, port))
		if err != nil {
			for _, l := range lns {
				l.Close()
			}
			return nil, err
		}
		lns = append(lns, ln)
	}
	return lns, nil
}

// TestDNSFollowsHealthChanges: an instance whose TTL runs out leaves the
// answers as soon as the replica has it critical, and comes back when it
// is renewed (TTL 0: nothing to wait out).
func TestDNSFollowsHealthChanges(t *testing.T) {
	c, server := dnsCluster(t)
	register(t, c,
		&pb.Instance{Id: "steady", Service: "user.rpc", Address: "127.0.0.2:9000"},
		&pb.Instance{Id: "ttl", Service: "user.rpc", Address: "127.0.0.3:9000", Check: &pb.Check{Ttl: durationpb.New(3 * time.Second)}},
	)
	a := func() []string { return answers(query(t, server, "udp", "user.rpc.service.zrpc.", dns.TypeA)) }
	both, steady := []string{"A 127.0.0.2", "A 127.0.0.3"}, []string{"A 127.0.0.2"}
	if got := a(); !slices.Equal(got, both) {
		t.Fatalf("before the TTL runs out: %q, want %q", got, both)
	}
	c.WaitFor(20*time.Second, "the expired instance leaves the A records", func() bool { return slices.Equal(a(), steady) })
	if _, err := c.Registry(0).RenewTTL(ctx(t), &pb.RenewTTLRequest{Service: "user.rpc", Id: "ttl"}); err != nil {
		t.Fatal(err)
	}
	c.WaitFor(20*time.Second, "the renewed instance is back", func() bool { return slices.Equal(a(), both) })
}

// TestDNSAnswersAgainAfterAKillAndRestart: a killed agent frees its DNS
// port, and the restarted one answers there from its recovered replica.
func TestDNSAnswersAgainAfterAKillAndRestart(t *testing.T) {
	c, server := dnsCluster(t)
	register(t, c, &pb.Instance{Id: "a", Service: "user.rpc", Address: "127.0.0.2:9000"})
	c.Kill(0)
	c.Restart(0)
	if got := c.Node(0).DNSAddr(); got != server {
		t.Fatalf("restarted agent answers DNS on %q, want %s", got, server)
	}
	c.WaitFor(20*time.Second, "the restarted agent answers from its replica", func() bool {
		return slices.Equal(answers(query(t, server, "tcp", "user.rpc.service.zrpc.", dns.TypeA)), []string{"A 127.0.0.2"})
	})
}

// TestDNSAnswersChangeWithTheReplica: answers are cached, yet the first
// question after the agent's replica applied a deregistration or a
// registration reflects it, with nothing to wait out.
func TestDNSAnswersChangeWithTheReplica(t *testing.T) {
	c, server := dnsCluster(t)
	register(t, c,
		&pb.Instance{Id: "a", Service: "user.rpc", Address: "127.0.0.2:9000"},
		&pb.Instance{Id: "b", Service: "user.rpc", Address: "127.0.0.3:9000"},
	)
	srv := func() []string { return answers(query(t, server, "udp", "user.rpc.service.zrpc.", dns.TypeSRV)) }
	for range 3 { // cached from the second question on
		if got := srv(); len(got) != 2 {
			t.Fatalf("SRV %q, want a's and b's", got)
		}
	}
	if _, err := c.Registry(0).Deregister(ctx(t), &pb.DeregisterRequest{Service: "user.rpc", Id: "b"}); err != nil {
		t.Fatal(err)
	}
	c.WaitFor(10*time.Second, "the replica drops b", func() bool { return c.Node(0).Store().FSM().Instance("user.rpc", "b") == nil })
	if got, want := srv(), []string{"SRV 9000 7f000002.addr.zrpc."}; !slices.Equal(got, want) {
		t.Fatalf("after b's deregistration: SRV %q, want %q", got, want)
	}
	register(t, c, &pb.Instance{Id: "c", Service: "user.rpc", Address: "127.0.0.4:9000"})
	if got := srv(); len(got) != 2 || !slices.Contains(got, "SRV 9000 7f000004.addr.zrpc.") {
		t.Fatalf("after c's registration: SRV %q, want a's and c's", got)
	}
}
