package dns

import (
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
)

// fakeRegistry is a registry replica of fixed instances.
type fakeRegistry map[string][]*pb.Instance

func (r fakeRegistry) PassingInstances(service string) ([]*pb.Instance, bool, uint64) {
	return passingOf(r[service]), len(r[service]) > 0, 7
}

func (r fakeRegistry) HasInstances(service string) bool { return len(r[service]) > 0 }

// passingOf returns the passing instances of insts, as a registry
// replica gives them to DNS.
func passingOf(insts []*pb.Instance) []*pb.Instance {
	return slices.DeleteFunc(slices.Clone(insts), func(inst *pb.Instance) bool { return inst.Health != pb.Health_PASSING })
}

func (r fakeRegistry) Revision() uint64 { return 7 }

func passing(service, id, addr string, tags ...string) *pb.Instance {
	return &pb.Instance{Service: service, Id: id, Address: addr, Tags: tags, Health: pb.Health_PASSING, Weight: 100}
}

func testHandler(t testing.TB, cfg Config) *handler {
	t.Helper()
	if cfg.Domain == "" {
		cfg.Domain = "zrpc."
	}
	h, err := newHandler(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func ask(h *handler, name string, qtype uint16) *dns.Msg {
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	return h.answer(m, true)
}

func TestDNSNamesADottedServiceBeforeATag(t *testing.T) {
	reg := fakeRegistry{
		"user.rpc":    {passing("user.rpc", "a", "10.0.0.1:80", "v2")},
		"v2.user.rpc": {passing("v2.user.rpc", "b", "10.0.0.2:80")},
		"order.rpc":   {passing("order.rpc", "c", "10.0.0.3:80", "v2")},
	}
	h := testHandler(t, Config{Registry: reg})
	for name, want := range map[string]string{
		"v2.user.rpc.service.zrpc.":  "10.0.0.2", // the service v2.user.rpc exists: it wins
		"v2.order.rpc.service.zrpc.": "10.0.0.3", // else v2 is a tag
		"user.rpc.service.zrpc.":     "10.0.0.1",
	} {
		resp := ask(h, name, dns.TypeA)
		if len(resp.Answer) != 1 || resp.Answer[0].(*dns.A).A.String() != want {
			t.Errorf("A %s: %v, want %s", name, resp.Answer, want)
		}
	}
}

func TestDNSAnswersWithItsTTLAndDomain(t *testing.T) {
	reg := fakeRegistry{"user.rpc": {passing("user.rpc", "a", "10.0.0.1:80")}}
	h := testHandler(t, Config{Registry: reg, Domain: "Svc.Example", TTL: 30 * time.Second})
	resp := ask(h, "user.rpc.service.svc.example.", dns.TypeSRV)
	if len(resp.Answer) != 1 || resp.Answer[0].Header().Ttl != 30 {
		t.Fatalf("SRV answer %v, want one record with TTL 30", resp.Answer)
	}
	if srv := resp.Answer[0].(*dns.SRV); srv.Target != "0a000001.addr.svc.example." || srv.Weight != 100 || srv.Port != 80 {
		t.Fatalf("SRV record %v, want target 0a000001.addr.svc.example. weight 100 port 80", srv)
	}
	if resp := ask(h, "user.rpc.service.zrpc.", dns.TypeA); resp.Rcode != dns.RcodeRefused {
		t.Fatalf("a name under the default domain, served for svc.example.: %s, want REFUSED", dns.RcodeToString[resp.Rcode])
	}
	resp = ask(h, "svc.example.", dns.TypeSOA)
	if len(resp.Answer) != 1 || resp.Answer[0].(*dns.SOA).Minttl != 30 {
		t.Fatalf("SOA of the domain: %v", resp.Answer)
	}
	if resp := ask(h, "nosuch.service.svc.example.", dns.TypeA); resp.Rcode != dns.RcodeNameError || len(resp.Ns) != 1 {
		t.Fatalf("unknown service: %s with authority %v, want NXDOMAIN with the SOA", dns.RcodeToString[resp.Rcode], resp.Ns)
	}
}

// TestDNSSkipsAddressesItCannotGive: an instance whose address is a host
// name gets an SRV record to that name and no A record; one without a
// port gets nothing.
func TestDNSSkipsAddressesItCannotGive(t *testing.T) {
	reg := fakeRegistry{"user.rpc": {
		passing("user.rpc", "a", "db1.example.com:80"),
		passing("user.rpc", "b", "10.0.0.1"),
		passing("user.rpc", "c", "10.0.0.2:99999"),
	}}
	h := testHandler(t, Config{Registry: reg})
	resp := ask(h, "user.rpc.service.zrpc.", dns.TypeSRV)
	if len(resp.Answer) != 1 || resp.Answer[0].(*dns.SRV).Target != "db1.example.com." || len(resp.Extra) != 0 {
		t.Fatalf("SRV: %v / extra %v, want one record to db1.example.com. and no address", resp.Answer, resp.Extra)
	}
	if resp := ask(h, "user.rpc.service.zrpc.", dns.TypeA); len(resp.Answer) != 0 || resp.Rcode != dns.RcodeSuccess {
		t.Fatalf("A: %v, want NODATA", resp)
	}
}

// TestDNSHidesServicesItMayNotRead: with ACLs on, a service the DNS
// token may not read is answered as one that does not exist.
func TestDNSHidesServicesItMayNotRead(t *testing.T) {
	reg := fakeRegistry{
		"user.rpc":   {passing("user.rpc", "a", "10.0.0.1:80")},
		"secret.rpc": {passing("secret.rpc", "b", "10.0.0.2:80")},
	}
	h := testHandler(t, Config{Registry: reg, CanRead: func(s string) bool { return s == "user.rpc" }})
	if resp := ask(h, "user.rpc.service.zrpc.", dns.TypeA); len(resp.Answer) != 1 {
		t.Fatalf("readable service: %v", resp)
	}
	for _, name := range []string{"secret.rpc.service.zrpc.", "x.secret.rpc.service.zrpc."} {
		hidden, unknown := ask(h, name, dns.TypeA), ask(h, "nosuch.rpc.service.zrpc.", dns.TypeA)
		if hidden.Rcode != dns.RcodeNameError || len(hidden.Answer) != 0 || hidden.Rcode != unknown.Rcode {
			t.Fatalf("%s: %v; want NXDOMAIN as for an unknown service", name, hidden)
		}
	}
}

func TestDNSRefusesWhatIsNotAQuery(t *testing.T) {
	h := testHandler(t, Config{Registry: fakeRegistry{}})
	m := new(dns.Msg)
	m.SetQuestion("user.rpc.service.zrpc.", dns.TypeA)
	m.Question = append(m.Question, m.Question[0])
	if resp := h.answer(m, true); resp.Rcode != dns.RcodeFormatError {
		t.Errorf("two questions: %s, want FORMERR", dns.RcodeToString[resp.Rcode])
	}
	m = new(dns.Msg)
	m.SetQuestion("user.rpc.service.zrpc.", dns.TypeA)
	m.Question[0].Qclass = dns.ClassCHAOS
	if resp := h.answer(m, true); resp.Rcode != dns.RcodeNotImplemented {
		t.Errorf("class CHAOS: %s, want NOTIMP", dns.RcodeToString[resp.Rcode])
	}
	m = new(dns.Msg)
	m.SetUpdate("zrpc.")
	if resp := h.answer(m, true); resp.Rcode != dns.RcodeNotImplemented {
		t.Errorf("update: %s, want NOTIMP", dns.RcodeToString[resp.Rcode])
	}
	for _, name := range []string{"ffff.addr.zrpc.", "zz.addr.zrpc."} {
		if resp := ask(h, name, dns.TypeA); resp.Rcode != dns.RcodeNameError {
			t.Errorf("%s: %s, want NXDOMAIN", name, dns.RcodeToString[resp.Rcode])
		}
	}
}

func TestDNSConfigRefusals(t *testing.T) {
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{Domain: "zrpc."}, "Registry"},
		{Config{Domain: ".", Registry: fakeRegistry{}}, "root"},
		{Config{Domain: "", Registry: fakeRegistry{}}, "root"},
		{Config{Domain: "a b.", Registry: fakeRegistry{}}, "domain name"},
		{Config{Domain: "zrpc.", Registry: fakeRegistry{}, TTL: -time.Second}, "TTL"},
	} {
		if _, err := newHandler(tc.cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("newHandler(%+v) = %v, want an error about %s", tc.cfg, err, tc.want)
		}
	}
}

func TestDNSServerClosesAndFreesItsPorts(t *testing.T) {
	s, err := Start("127.0.0.1:0", Config{Domain: "zrpc.", Registry: fakeRegistry{"user.rpc": {passing("user.rpc", "a", "10.0.0.1:80")}}})
	if err != nil {
		t.Fatal(err)
	}
	for _, netw := range []string{"udp", "tcp"} {
		m := new(dns.Msg)
		m.SetQuestion("user.rpc.service.zrpc.", dns.TypeA)
		resp, _, err := (&dns.Client{Net: netw, Timeout: 5 * time.Second}).Exchange(m, s.Addr())
		if err != nil || len(resp.Answer) != 1 {
			t.Fatalf("%s query: %v %v", netw, resp, err)
		}
	}
	// A second server on the same address is refused, naming it.
	if _, err := Start(s.Addr(), Config{Domain: "zrpc.", Registry: fakeRegistry{}}); err == nil || !strings.Contains(err.Error(), s.Addr()) {
		t.Fatalf("second server on %s: %v, want an error naming the address", s.Addr(), err)
	}
	s.Close()
	s.Close()
	pc, err := net.ListenPacket("udp", s.Addr())
	if err != nil {
		t.Fatalf("UDP port still taken after Close: %v", err)
	}
	pc.Close()
	ln, err := net.Listen("tcp", s.Addr())
	if err != nil {
		t.Fatalf("TCP port still taken after Close: %v", err)
	}
	ln.Close()
}

// FuzzDNSQuery answers arbitrary packets as a stranger may send them: the
// handler never panics, and its answer packs and unpacks again within the
// size the transport allows.
//
//	go test -run '^$' -fuzz FuzzDNSQuery ./node/dns/
func FuzzDNSQuery(f *testing.F) {
	for _, q := range []struct {
		name  string
		qtype uint16
	}{
		{"user.rpc.service.zrpc.", dns.TypeSRV}, {"v2.user.rpc.service.z1.zrpc.", dns.TypeA},
		{"7f000001.addr.zrpc.", dns.TypeAAAA}, {"zrpc.", dns.TypeANY}, {"example.com.", dns.TypeA},
		{"service.zrpc.", dns.TypeA}, {".", dns.TypeNS},
	} {
		m := new(dns.Msg)
		m.SetQuestion(q.name, q.qtype)
		m.SetEdns0(4096, true)
		b, _ := m.Pack()
		f.Add(b, true)
	}
	f.Add([]byte{0, 1, 2}, false)
	var big []*pb.Instance
	for i := range 300 {
		big = append(big, passing("user.rpc", string(rune('a'+i%26))+strings.Repeat("x", i), net.JoinHostPort(net.IPv4(10, 0, byte(i/250), byte(i%250)).String(), "80"), "v2"))
	}
	big = append(big, passing("user.rpc", "v6", "[2001:db8::1]:443"), passing("user.rpc", "name", "host.example:1"))
	h := testHandler(f, Config{Registry: fakeRegistry{"user.rpc": big}})
	f.Fuzz(func(t *testing.T, packet []byte, udp bool) {
		req := new(dns.Msg)
		if req.Unpack(packet) != nil {
			return // the server answers FORMERR before the handler
		}
		resp := h.answer(req, udp)
		b, err := resp.Pack()
		if err != nil {
			t.Fatalf("answer to %v does not pack: %v", req, err)
		}
		limit := dns.MaxMsgSize
		if udp {
			limit = maxUDPSize
			if req.IsEdns0() == nil {
				limit = dns.MinMsgSize
			}
		}
		if len(b) > limit {
			t.Fatalf("answer of %d bytes, over the %d the transport allows", len(b), limit)
		}
		if udp && req.IsEdns0() == nil && len(b) > amplification*req.Len() && len(resp.Answer)+len(resp.Extra) > 0 {
			t.Fatalf("UDP answer of %d bytes with records to a question of %d without EDNS0", len(b), req.Len())
		}
		if err := new(dns.Msg).Unpack(b); err != nil {
			t.Fatalf("answer does not unpack: %v", err)
		}
	})
}

// A question answered SERVFAIL because no build turn came within the
// wait is reported to Answered as SERVFAIL before the answer leaves: the
// agent counts it in zrpc_dns_queries_total{rcode="SERVFAIL"}.
func TestDNSAnswerWithoutABuildTurnIsReportedServfail(t *testing.T) {
	reg := fakeRegistry{"user.rpc": {passing("user.rpc", "a", "10.0.0.1:80")}}
	var rcodes []string
	h := testHandler(t, Config{Registry: reg, Answered: func(rcode string) { rcodes = append(rcodes, rcode) }})
	h.builders, h.buildWait = make(chan struct{}), time.Millisecond // no turn ever comes
	m := new(dns.Msg)
	m.SetQuestion("user.rpc.service.zrpc.", dns.TypeSRV)
	h.ServeDNS(discardWriter{}, m)
	if len(rcodes) != 1 || rcodes[0] != "SERVFAIL" {
		t.Fatalf("Answered heard %v, want [SERVFAIL]", rcodes)
	}
}
