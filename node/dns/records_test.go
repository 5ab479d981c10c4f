package dns

import (
	"fmt"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
	"google.golang.org/protobuf/proto"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/internal/testwait"
)

// liveRegistry is a registry replica that changes: each change moves its
// revision, and it counts the walks of a service's instances.
type liveRegistry struct {
	mu    sync.Mutex
	rev   uint64
	insts map[string][]*pb.Instance
	walks atomic.Int64
}

func (r *liveRegistry) PassingInstances(service string) ([]*pb.Instance, bool, uint64) {
	r.walks.Add(1)
	r.mu.Lock()
	defer r.mu.Unlock()
	return passingOf(r.insts[service]), len(r.insts[service]) > 0, r.rev
}

func (r *liveRegistry) HasInstances(service string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.insts[service]) > 0
}

func (r *liveRegistry) Revision() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.rev
}

// change applies f to the instances of service and moves the revision.
func (r *liveRegistry) change(service string, f func([]*pb.Instance) []*pb.Instance) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.insts[service] = f(r.insts[service])
	r.rev++
}

// manyInstances are n passing instances of service, each on its own IP.
func manyInstances(service string, n int) []*pb.Instance {
	var out []*pb.Instance
	for i := range n {
		out = append(out, passing(service, fmt.Sprint(i), net.JoinHostPort(net.IPv4(10, 1, byte(i/250), byte(1+i%250)).String(), "9000")))
	}
	return out
}

func srvTargets(resp *dns.Msg) []string {
	var out []string
	for _, rr := range resp.Answer {
		out = append(out, rr.(*dns.SRV).Target)
	}
	slices.Sort(out)
	return out
}

func TestDNSAnswerChangesAsSoonAsTheRevisionDoes(t *testing.T) {
	reg := &liveRegistry{rev: 1, insts: map[string][]*pb.Instance{"user.rpc": {
		passing("user.rpc", "a", "10.0.0.1:80"), passing("user.rpc", "b", "10.0.0.2:80"),
	}}}
	h := testHandler(t, Config{Registry: reg})
	const name = "user.rpc.service.zrpc."
	if got := srvTargets(ask(h, name, dns.TypeSRV)); len(got) != 2 {
		t.Fatalf("SRV targets %q, want 2", got)
	}
	// Health change: b turns critical.
	reg.change("user.rpc", func(insts []*pb.Instance) []*pb.Instance {
		b := proto.Clone(insts[1]).(*pb.Instance)
		b.Health = pb.Health_CRITICAL
		return []*pb.Instance{insts[0], b}
	})
	if got := srvTargets(ask(h, name, dns.TypeSRV)); !slices.Equal(got, []string{"0a000001.addr.zrpc."}) {
		t.Fatalf("after b turned critical: SRV targets %q, want a's only", got)
	}
	if got := ask(h, name, dns.TypeA); len(got.Answer) != 1 || got.Answer[0].(*dns.A).A.String() != "10.0.0.1" {
		t.Fatalf("after b turned critical: A %v, want 10.0.0.1 only", got.Answer)
	}
	// Deregistration of a: no passing instance left (NODATA), then none
	// at all (NXDOMAIN).
	reg.change("user.rpc", func(insts []*pb.Instance) []*pb.Instance { return insts[1:] })
	if got := ask(h, name, dns.TypeSRV); got.Rcode != dns.RcodeSuccess || len(got.Answer) != 0 || got.Ns[0].(*dns.SOA).Serial != 3 {
		t.Fatalf("with b critical only: %v, want NODATA with serial 3", got)
	}
	reg.change("user.rpc", func([]*pb.Instance) []*pb.Instance { return nil })
	if got := ask(h, name, dns.TypeSRV); got.Rcode != dns.RcodeNameError {
		t.Fatalf("after deregistration: %s, want NXDOMAIN", dns.RcodeToString[got.Rcode])
	}
	// Back again.
	reg.change("user.rpc", func([]*pb.Instance) []*pb.Instance { return []*pb.Instance{passing("user.rpc", "c", "10.0.0.3:80")} })
	if got := srvTargets(ask(h, name, dns.TypeSRV)); !slices.Equal(got, []string{"0a000003.addr.zrpc."}) {
		t.Fatalf("after c registered: SRV targets %q, want c's", got)
	}
}

func TestDNSAnswersFromItsCacheWhileTheRevisionStays(t *testing.T) {
	reg := &liveRegistry{rev: 1, insts: map[string][]*pb.Instance{"user.rpc": manyInstances("user.rpc", 1000)}}
	h := testHandler(t, Config{Registry: reg})
	ask(h, "user.rpc.service.zrpc.", dns.TypeSRV)
	before := reg.walks.Load()
	for _, qtype := range []uint16{dns.TypeSRV, dns.TypeA, dns.TypeSRV, dns.TypeANY} {
		if got := ask(h, "user.rpc.service.zrpc.", qtype); len(got.Answer) == 0 {
			t.Fatalf("%s: no answer", dns.TypeToString[qtype])
		}
	}
	if walks := reg.walks.Load() - before; walks != 0 {
		t.Fatalf("4 questions at the same revision read the registry %d times, want 0", walks)
	}
	reg.change("other.rpc", func([]*pb.Instance) []*pb.Instance { return nil })
	ask(h, "user.rpc.service.zrpc.", dns.TypeSRV)
	if walks := reg.walks.Load() - before; walks != 1 {
		t.Fatalf("a question after the revision moved read the registry %d times, want 1", walks)
	}
}

// TestDNSCachedAnswersFollowACLChanges: the DNS token's rules may change
// without the registry's revision moving; a cached answer does not
// outlive the right to see it.
func TestDNSCachedAnswersFollowACLChanges(t *testing.T) {
	reg := &liveRegistry{rev: 1, insts: map[string][]*pb.Instance{
		"user.rpc":    {passing("user.rpc", "a", "10.0.0.1:80", "v2")},
		"v2.user.rpc": {passing("v2.user.rpc", "b", "10.0.0.2:80")},
	}}
	var hidden sync.Map
	h := testHandler(t, Config{Registry: reg, CanRead: func(s string) bool { _, no := hidden.Load(s); return !no }})
	a := func(name string) []string {
		var out []string
		for _, rr := range ask(h, name, dns.TypeA).Answer {
			out = append(out, rr.(*dns.A).A.String())
		}
		return out
	}
	if got := a("user.rpc.service.zrpc."); !slices.Equal(got, []string{"10.0.0.1"}) {
		t.Fatalf("readable: %q", got)
	}
	if got := a("v2.user.rpc.service.zrpc."); !slices.Equal(got, []string{"10.0.0.2"}) {
		t.Fatalf("the service v2.user.rpc: %q", got)
	}
	hidden.Store("user.rpc", true)
	if got := ask(h, "user.rpc.service.zrpc.", dns.TypeA); got.Rcode != dns.RcodeNameError {
		t.Fatalf("after the token lost user.rpc: %v, want NXDOMAIN", got)
	}
	hidden.Delete("user.rpc")
	hidden.Store("v2.user.rpc", true)
	// v2.user.rpc hidden: the name now means tag v2 of user.rpc.
	if got := a("v2.user.rpc.service.zrpc."); !slices.Equal(got, []string{"10.0.0.1"}) {
		t.Fatalf("after the token lost v2.user.rpc: %q, want tag v2 of user.rpc", got)
	}
}

func TestDNSLargeServiceAnswersWholeOverTCPAndShuffledOverUDP(t *testing.T) {
	reg := &liveRegistry{rev: 1, insts: map[string][]*pb.Instance{"user.rpc": manyInstances("user.rpc", 1000)}}
	h := testHandler(t, Config{Registry: reg})
	m := new(dns.Msg)
	m.SetQuestion("user.rpc.service.zrpc.", dns.TypeSRV)
	tcp := h.answer(m, false)
	if tcp.Truncated || len(tcp.Answer) != 1000 || len(tcp.Extra) != 1000 {
		t.Fatalf("TCP: truncated %v, %d answers, %d extra; want all 1000 of each", tcp.Truncated, len(tcp.Answer), len(tcp.Extra))
	}
	if targets := srvTargets(tcp); len(slices.Compact(targets)) != 1000 {
		t.Fatalf("TCP: %d distinct targets, want 1000", len(slices.Compact(targets)))
	}
	if b, err := tcp.Pack(); err != nil || len(b) > dns.MaxMsgSize {
		t.Fatalf("TCP answer packs to %d bytes: %v", len(b), err)
	}
	firsts := map[string]bool{}
	for range 20 {
		m.SetEdns0(1232, false)
		udp := h.answer(m, true)
		if !udp.Truncated || len(udp.Answer) == 0 || udp.IsEdns0() == nil {
			t.Fatalf("UDP: truncated %v, %d answers, EDNS0 %v; want some, marked truncated, with EDNS0", udp.Truncated, len(udp.Answer), udp.IsEdns0())
		}
		if targets := srvTargets(udp); len(slices.Compact(targets)) != len(udp.Answer) {
			t.Fatalf("UDP: a target twice in %q", targets)
		}
		firsts[udp.Answer[0].(*dns.SRV).Target] = true
	}
	if len(firsts) < 2 {
		t.Fatalf("20 UDP answers all start with %v: records are not shuffled", firsts)
	}
}

// TestDNSUDPAnswersWithoutEDNS0AreAtMostTenTimesTheQuestion: a question
// with a forged source address gets an answer at most ten times its size
// (and 512 bytes) unless it carries EDNS0.
func TestDNSUDPAnswersWithoutEDNS0AreAtMostTenTimesTheQuestion(t *testing.T) {
	reg := &liveRegistry{rev: 1, insts: map[string][]*pb.Instance{"u.rpc": manyInstances("u.rpc", 100)}}
	h := testHandler(t, Config{Registry: reg})
	for _, qtype := range []uint16{dns.TypeSRV, dns.TypeA, dns.TypeANY} {
		m := new(dns.Msg)
		m.SetQuestion("u.rpc.service.zrpc.", qtype)
		q, _ := m.Pack()
		resp := h.answer(m, true)
		b, err := resp.Pack()
		if err != nil {
			t.Fatal(err)
		}
		if len(b) > amplification*len(q) || !resp.Truncated || len(resp.Answer) == 0 {
			t.Fatalf("%s without EDNS0: %d bytes for a question of %d, truncated %v, %d records; want at most %d bytes, TC and some records",
				dns.TypeToString[qtype], len(b), len(q), resp.Truncated, len(resp.Answer), amplification*len(q))
		}
		m.SetEdns0(4096, false)
		resp = h.answer(m, true)
		if b, _ = resp.Pack(); len(b) <= dns.MinMsgSize || len(b) > maxUDPSize {
			t.Fatalf("%s with EDNS0 4096: %d bytes, want more than 512 and at most %d", dns.TypeToString[qtype], len(b), maxUDPSize)
		}
	}
}

func TestDNSCacheStaysWithinItsBounds(t *testing.T) {
	c := newCache(4, 50)
	rs := func(n int) *records { return &records{srv: make([]dns.RR, n)} }
	for i := range 20 {
		c.put(fmt.Sprint(i), rs(10))
		if len(c.names) > 4 || c.held > 50 {
			t.Fatalf("after %d names: %d names, %d records; bounds 4 and 50", i+1, len(c.names), c.held)
		}
	}
	c.put("big", rs(40))
	if c.get("big") == nil || c.held > 50 {
		t.Fatalf("a large entry: kept %v, %d records held", c.get("big") != nil, c.held)
	}
	c.put("huge", rs(51))
	if c.get("huge") != nil {
		t.Fatal("an entry larger than the cache was kept")
	}
}

// discardWriter is a UDP ResponseWriter that packs the answer as the
// server does, and drops it.
type discardWriter struct{ dns.ResponseWriter }

func (discardWriter) LocalAddr() net.Addr {
	return &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 8600}
}
func (discardWriter) RemoteAddr() net.Addr {
	return &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5353}
}
func (discardWriter) WriteMsg(m *dns.Msg) error {
	_, err := m.Pack()
	return err
}

// TestDNSQueryAllocatesLittleForALargeService: an SRV question over UDP
// for a service of 1,000 instances costs a bounded number of
// allocations, whatever the number of instances: no copy of the registry,
// no record built per instance.
func TestDNSQueryAllocatesLittleForALargeService(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	reg := &liveRegistry{rev: 1, insts: map[string][]*pb.Instance{"user.rpc": manyInstances("user.rpc", 1000)}}
	h := testHandler(t, Config{Registry: reg})
	for _, edns := range []bool{false, true} {
		m := new(dns.Msg)
		m.SetQuestion("user.rpc.service.zrpc.", dns.TypeSRV)
		if edns {
			m.SetEdns0(1232, false)
		}
		h.ServeDNS(discardWriter{}, m)
		allocs := testing.AllocsPerRun(200, func() { h.ServeDNS(discardWriter{}, m) })
		t.Logf("EDNS0 %v: %.0f allocations per query", edns, allocs)
		if allocs > 40 {
			t.Errorf("EDNS0 %v: %.0f allocations per query, want at most 40", edns, allocs)
		}
	}
}

func BenchmarkDNSAnswerLargeService(b *testing.B) {
	reg := &liveRegistry{rev: 1, insts: map[string][]*pb.Instance{"user.rpc": manyInstances("user.rpc", 1000)}}
	h := testHandler(b, Config{Registry: reg})
	m := new(dns.Msg)
	m.SetQuestion("user.rpc.service.zrpc.", dns.TypeSRV)
	m.SetEdns0(1232, false)
	b.ReportAllocs()
	for b.Loop() {
		h.ServeDNS(discardWriter{}, m)
	}
}

// TestDNSConcurrentQueriesShareCachedRecords: queries answered at once
// from the same cached records over UDP and TCP each get a whole, valid
// answer (with -race: packing and truncating never write to them).
func TestDNSConcurrentQueriesShareCachedRecords(t *testing.T) {
	reg := &liveRegistry{rev: 1, insts: map[string][]*pb.Instance{"user.rpc": manyInstances("user.rpc", 300)}}
	h := testHandler(t, Config{Registry: reg})
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := range 8 {
		wg.Go(func() {
			for i := range 50 {
				m := new(dns.Msg)
				m.SetQuestion("user.rpc.service.zrpc.", []uint16{dns.TypeSRV, dns.TypeA, dns.TypeANY}[i%3])
				udp := g%2 == 0
				if i%2 == 0 {
					m.SetEdns0(1232, false)
				}
				resp := h.answer(m, udp)
				b, err := resp.Pack()
				if err == nil {
					err = new(dns.Msg).Unpack(b)
				}
				if err == nil && (len(resp.Answer) == 0 || (!udp && len(resp.Answer) != 300)) {
					err = fmt.Errorf("udp %v: %d answers", udp, len(resp.Answer))
				}
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// registeringRegistry registers v2.user.rpc just before it reads
// user.rpc the first time: between the two lookups of the name
// v2.user.rpc.service.zrpc. (the service v2.user.rpc, else tag v2 of
// user.rpc).
type registeringRegistry struct {
	*liveRegistry
	once sync.Once
}

func (r *registeringRegistry) PassingInstances(service string) ([]*pb.Instance, bool, uint64) {
	if service == "user.rpc" {
		r.once.Do(func() {
			r.change("v2.user.rpc", func([]*pb.Instance) []*pb.Instance {
				return []*pb.Instance{passing("v2.user.rpc", "b", "10.0.0.2:80")}
			})
		})
	}
	return r.liveRegistry.PassingInstances(service)
}

// TestDNSDoesNotCacheAnAnswerTheRegistryChangedUnder: when the registry
// changes between the lookups of one name, the answer built from them is
// not served again from the cache: the next question sees the registry
// as it is.
func TestDNSDoesNotCacheAnAnswerTheRegistryChangedUnder(t *testing.T) {
	reg := &registeringRegistry{liveRegistry: &liveRegistry{rev: 1, insts: map[string][]*pb.Instance{
		"user.rpc": {passing("user.rpc", "a", "10.0.0.1:80", "v2")},
	}}}
	h := testHandler(t, Config{Registry: reg})
	ask(h, "v2.user.rpc.service.zrpc.", dns.TypeA)
	got := ask(h, "v2.user.rpc.service.zrpc.", dns.TypeA)
	if len(got.Answer) != 1 || got.Answer[0].(*dns.A).A.String() != "10.0.0.2" {
		t.Fatalf("once the service v2.user.rpc is registered: %v, want its address 10.0.0.2", got.Answer)
	}
}

// TestDNSCachesANameWithoutRecordsApart: a name of a large service that
// matches no instance (a tag none has) is answered from a cache of its
// own while the revision stays, instead of reading the service's every
// instance per question; asking many such names evicts none of the
// names with records.
func TestDNSCachesANameWithoutRecordsApart(t *testing.T) {
	reg := &liveRegistry{rev: 1, insts: map[string][]*pb.Instance{"user.rpc": manyInstances("user.rpc", 1000)}}
	h := testHandler(t, Config{Registry: reg})
	ask(h, "user.rpc.service.zrpc.", dns.TypeSRV)
	ask(h, "nosuchtag.user.rpc.service.zrpc.", dns.TypeSRV)
	before := reg.walks.Load()
	for range 5 {
		if got := ask(h, "nosuchtag.user.rpc.service.zrpc.", dns.TypeSRV); len(got.Answer) != 0 || got.Rcode != dns.RcodeSuccess {
			t.Fatalf("a tag no instance has: rcode %s, %d answers; want NOERROR and none", dns.RcodeToString[got.Rcode], len(got.Answer))
		}
	}
	if walks := reg.walks.Load() - before; walks != 0 {
		t.Fatalf("5 questions for a name without records read the registry %d times, want 0", walks)
	}
	for i := range 2 * emptyNames {
		ask(h, fmt.Sprintf("t%d.user.rpc.service.zrpc.", i), dns.TypeSRV)
	}
	before = reg.walks.Load()
	if got := ask(h, "user.rpc.service.zrpc.", dns.TypeSRV); len(got.Answer) == 0 || reg.walks.Load() != before {
		t.Fatalf("after many names without records, the service's own name read the registry %d times; want it still cached", reg.walks.Load()-before)
	}
}

// TestDNSCachesTheNameOfAServiceLargerThanTheCache: a service whose
// records alone exceed the cache's record bound (tens of thousands of
// instances) is still answered from cached records while the revision
// stays, whatever the names of other services asked meanwhile: building
// them costs a walk of every instance and tens of megabytes per question.
func TestDNSCachesTheNameOfAServiceLargerThanTheCache(t *testing.T) {
	const n = cacheRecords/3 + 1000 // SRV, target and A record each
	reg := &liveRegistry{rev: 1, insts: map[string][]*pb.Instance{
		"big.rpc":   manyInstances("big.rpc", n),
		"small.rpc": manyInstances("small.rpc", 3),
	}}
	h := testHandler(t, Config{Registry: reg})
	ask(h, "big.rpc.service.zrpc.", dns.TypeSRV)
	before := reg.walks.Load()
	for i := range 4 {
		ask(h, fmt.Sprintf("t%d.small.rpc.service.zrpc.", i), dns.TypeA)
		ask(h, "small.rpc.service.zrpc.", dns.TypeA)
		if got := ask(h, "big.rpc.service.zrpc.", dns.TypeSRV); len(got.Answer) == 0 || !got.Truncated {
			t.Fatalf("big.rpc over UDP: %d answers, truncated %v; want some, truncated", len(got.Answer), got.Truncated)
		}
	}
	// small.rpc once as itself, and each t<i> tag twice (as a service,
	// then as a tag of small.rpc): the big service never again.
	if walks, want := reg.walks.Load()-before, int64(1+4*2); walks != want {
		t.Fatalf("questions for a service of %d instances at one revision read the registry %d times, want %d (none for it)", n, walks, want)
	}
}

// TestDNSCachesANameThatLostItsRecords: once a name's every instance
// turns critical, its empty answer is served from the cache while the
// revision stays, as its records were: the records it had before do not
// make every question read the service again; and the same when it
// outgrows the cache or has records again.
func TestDNSCachesANameThatLostItsRecords(t *testing.T) {
	reg := &liveRegistry{rev: 1, insts: map[string][]*pb.Instance{"user.rpc": manyInstances("user.rpc", 100)}}
	h := testHandler(t, Config{Registry: reg})
	const name = "user.rpc.service.zrpc."
	for _, step := range []struct {
		what   string
		change func([]*pb.Instance) []*pb.Instance
		want   int
	}{
		{"with 100 passing instances", nil, 100},
		{"with every instance critical", func(insts []*pb.Instance) []*pb.Instance {
			out := make([]*pb.Instance, len(insts))
			for i, inst := range insts {
				out[i] = proto.Clone(inst).(*pb.Instance)
				out[i].Health = pb.Health_CRITICAL
			}
			return out
		}, 0},
		{"with more instances than the cache holds records", func([]*pb.Instance) []*pb.Instance {
			return manyInstances("user.rpc", cacheRecords/3+1000)
		}, cacheRecords/3 + 1000},
		{"with 100 passing instances again", func([]*pb.Instance) []*pb.Instance { return manyInstances("user.rpc", 100) }, 100},
	} {
		if step.change != nil {
			reg.change("user.rpc", step.change)
		}
		m := new(dns.Msg)
		m.SetQuestion(name, dns.TypeSRV)
		if got := h.answer(m, false); (len(got.Answer) == 0) != (step.want == 0) {
			t.Fatalf("%s: %d SRV records over TCP, want %d", step.what, len(got.Answer), step.want)
		}
		before := reg.walks.Load()
		for range 3 {
			h.answer(m, false)
		}
		if walks := reg.walks.Load() - before; walks != 0 {
			t.Fatalf("%s: 3 questions at one revision read the registry %d times, want 0", step.what, walks)
		}
	}
}

// gatedRegistry holds every read of a service's instances until open is
// closed, counting the reads begun.
type gatedRegistry struct {
	*liveRegistry
	open  chan struct{}
	begun atomic.Int64
}

func (r *gatedRegistry) PassingInstances(service string) ([]*pb.Instance, bool, uint64) {
	r.begun.Add(1)
	<-r.open
	return r.liveRegistry.PassingInstances(service)
}

// TestDNSQuestionsAskedAtOnceShareOneReadOfTheRegistry: questions for a
// name whose records are being built wait for them instead of each
// reading the service's every instance and building its own (a burst
// for a service of 100,000 instances after a change took tens of
// megabytes per question).
func TestDNSQuestionsAskedAtOnceShareOneReadOfTheRegistry(t *testing.T) {
	reg := &gatedRegistry{
		liveRegistry: &liveRegistry{rev: 1, insts: map[string][]*pb.Instance{"user.rpc": manyInstances("user.rpc", 1000)}},
		open:         make(chan struct{}),
	}
	var opening sync.Once
	open := func() { opening.Do(func() { close(reg.open) }) }
	h := testHandler(t, Config{Registry: reg})
	const questions = 8
	var wg sync.WaitGroup
	defer wg.Wait()
	defer open() // before the wait, should the test fail
	answered := make(chan int, questions)
	for range questions {
		wg.Go(func() { answered <- len(ask(h, "user.rpc.service.zrpc.", dns.TypeSRV).Answer) })
	}
	waiting := func() int64 {
		h.buildMu.Lock()
		defer h.buildMu.Unlock()
		var n int64
		for _, b := range h.building {
			n += int64(b.waiting)
		}
		return n
	}
	testwait.For(t, 10*time.Second, "every question reading the registry or waiting for another's read", func() bool {
		return reg.begun.Load()+waiting() >= questions
	})
	open()
	wg.Wait()
	close(answered)
	for n := range answered {
		if n == 0 {
			t.Fatal("a question got no SRV record")
		}
	}
	if walks := reg.walks.Load(); walks != 1 {
		t.Fatalf("%d questions at once read the registry %d times, want 1", questions, walks)
	}
}

// TestDNSBuildsTheRecordsOfAFewNamesAtOnce: questions for more names
// than the handler builds at once wait for a turn, and are answered
// SERVFAIL (the client asks again) when none comes in time, rather than
// each reading a large service and building its records at the same
// time (each tag of a service is a name of its own).
func TestDNSBuildsTheRecordsOfAFewNamesAtOnce(t *testing.T) {
	reg := &gatedRegistry{
		liveRegistry: &liveRegistry{rev: 1, insts: map[string][]*pb.Instance{"user.rpc": manyInstances("user.rpc", 10)}},
		open:         make(chan struct{}),
	}
	var opening sync.Once
	open := func() { opening.Do(func() { close(reg.open) }) }
	h := testHandler(t, Config{Registry: reg})
	h.builders, h.buildWait = make(chan struct{}, 2), 10*time.Millisecond
	var wg sync.WaitGroup
	defer wg.Wait()
	defer open() // before the wait, should the test fail
	rcodes := make(chan int, 3)
	for _, name := range []string{"user.rpc", "a.user.rpc", "b.user.rpc"} {
		wg.Go(func() { rcodes <- ask(h, name+".service.zrpc.", dns.TypeSRV).Rcode })
	}
	var failed int
	testwait.For(t, 10*time.Second, "two names building and a third answered, or three building", func() bool {
		select {
		case rc := <-rcodes:
			if rc != dns.RcodeServerFailure {
				t.Errorf("a name answered %s while the others were building, want SERVFAIL", dns.RcodeToString[rc])
			}
			failed++
		default:
		}
		return reg.begun.Load() == 3 || (reg.begun.Load() == 2 && failed == 1)
	})
	if begun := reg.begun.Load(); begun != 2 {
		t.Fatalf("%d names' records built at once, want at most 2", begun)
	}
	open()
	wg.Wait()
	if got := ask(h, "USER.rpc.service.zrpc.", dns.TypeSRV); got.Rcode != dns.RcodeSuccess || len(got.Answer) == 0 {
		t.Fatalf("once the builds ended: %s with %d records, want NOERROR with some", dns.RcodeToString[got.Rcode], len(got.Answer))
	}
}

// TestDNSTruncatedSRVAnswerCarriesItsTargetsAddresses: an SRV answer cut
// to the size the transport allows still holds the A record of every
// target it gives, in its additional section, and is cut no further than
// that size requires.
func TestDNSTruncatedSRVAnswerCarriesItsTargetsAddresses(t *testing.T) {
	insts := manyInstances("user.rpc", 3000)
	// Two instances on one IP: one address record for both.
	insts = append(insts, passing("user.rpc", "same", net.JoinHostPort(net.IPv4(10, 1, 0, 1).String(), "9001")))
	reg := &liveRegistry{rev: 1, insts: map[string][]*pb.Instance{"user.rpc": insts}}
	h := testHandler(t, Config{Registry: reg})
	for _, tc := range []struct {
		what string
		udp  bool
		edns uint16
	}{
		{"UDP without EDNS0", true, 0},
		{"UDP with EDNS0 1232", true, 1232},
		{"TCP", false, 0},
	} {
		m := new(dns.Msg)
		m.SetQuestion("user.rpc.service.zrpc.", dns.TypeSRV)
		limit := dns.MaxMsgSize
		if tc.udp {
			limit = min(dns.MinMsgSize, amplification*m.Len())
		}
		if tc.edns != 0 {
			m.SetEdns0(tc.edns, false)
			limit = int(tc.edns)
		}
		resp := h.answer(m, tc.udp)
		b, err := resp.Pack()
		if err != nil {
			t.Fatalf("%s: %v", tc.what, err)
		}
		addrs := map[string]bool{}
		for _, rr := range resp.Extra {
			if a, ok := rr.(*dns.A); ok {
				if addrs[a.Hdr.Name] {
					t.Fatalf("%s: the address of %s twice", tc.what, a.Hdr.Name)
				}
				addrs[a.Hdr.Name] = true
			}
		}
		targets := map[string]bool{}
		for _, rr := range resp.Answer {
			target := rr.(*dns.SRV).Target
			targets[target] = true
			if !addrs[target] {
				t.Fatalf("%s: %d SRV records in %d bytes, truncated %v, with %d address records: none for target %s",
					tc.what, len(resp.Answer), len(b), resp.Truncated, len(addrs), target)
			}
		}
		if len(addrs) != len(targets) {
			t.Fatalf("%s: %d address records for %d targets", tc.what, len(addrs), len(targets))
		}
		// An SRV record and its target's address take less than 100 bytes.
		if !resp.Truncated || len(resp.Answer) == 0 || len(b) > limit || len(b) <= limit-100 {
			t.Fatalf("%s: %d bytes, %d SRV records, truncated %v; want some, truncated, in %d bytes and less than 100 bytes short of them",
				tc.what, len(b), len(resp.Answer), resp.Truncated, limit)
		}
	}
}

// TestDNSLetterCasesOfANameShareItsRecords: the letter cases of a name
// (as a resolver that randomises them, DNS 0x20, asks) are answered with
// the same records, built once; tags and zones match in any case; a
// service whose name has capitals is still told apart by them.
func TestDNSLetterCasesOfANameShareItsRecords(t *testing.T) {
	insts := manyInstances("user.rpc", 100)
	for _, inst := range insts[:10] {
		inst.Tags, inst.Zone = []string{"v2"}, "eu-1"
	}
	reg := &liveRegistry{rev: 1, insts: map[string][]*pb.Instance{
		"user.rpc":  insts,
		"Order.rpc": {passing("Order.rpc", "a", "10.0.0.9:80")},
		"order.rpc": {passing("order.rpc", "b", "10.0.0.8:80")},
	}}
	h := testHandler(t, Config{Registry: reg})
	for _, names := range [][]string{
		{"user.rpc.service.zrpc.", "USER.RPC.SERVICE.ZRPC.", "uSeR.rPc.SeRvIcE.zRpC.", "User.Rpc.service.zrpc."},
		{"v2.user.rpc.service.eu-1.zrpc.", "V2.USER.rpc.service.EU-1.zrpc.", "v2.User.RPC.Service.eU-1.ZRPC."},
	} {
		first := ask(h, names[0], dns.TypeSRV)
		if len(first.Answer) == 0 {
			t.Fatalf("%s: no SRV record", names[0])
		}
		before := reg.walks.Load()
		for _, name := range names[1:] {
			resp := ask(h, name, dns.TypeSRV)
			if resp.Rcode != dns.RcodeSuccess || len(resp.Answer) != len(first.Answer) || resp.Question[0].Name != name {
				t.Fatalf("%s: %s with %d SRV records for question %s; want NOERROR with %d, as %s got, for the question as asked",
					name, dns.RcodeToString[resp.Rcode], len(resp.Answer), resp.Question[0].Name, len(first.Answer), names[0])
			}
		}
		if walks := reg.walks.Load() - before; walks != 0 {
			t.Fatalf("%d other letter cases of %s read the registry %d times, want 0 (its records built once)", len(names)-1, names[0], walks)
		}
	}
	for _, order := range [][2]string{{"order.rpc", "10.0.0.8"}, {"Order.rpc", "10.0.0.9"}, {"ORDER.rpc", "10.0.0.8"}, {"Order.rpc", "10.0.0.9"}} {
		if got := ask(h, order[0]+".service.zrpc.", dns.TypeA); len(got.Answer) != 1 || got.Answer[0].(*dns.A).A.String() != order[1] {
			t.Fatalf("A %s: %v, want %s", order[0], got.Answer, order[1])
		}
	}
}

// TestDNSPickDrawsEveryOrderedChoiceAlike: pick's every ordered choice of
// k indexes below n comes about as often, whether it draws few of many,
// many of many more, or most of them.
func TestDNSPickDrawsEveryOrderedChoiceAlike(t *testing.T) {
	for _, tc := range []struct {
		pick          func(n, k int) []int
		n, k, choices int
	}{{pick, 6, 2, 30}, {pickSparse, 6, 2, 30}, {pickSparse, 7, 3, 210}, {pick, 4, 3, 24}, {pick, 3, 5, 6}} {
		const per = 1000 // draws per ordered choice, on average
		seen := map[string]int{}
		for range per * tc.choices {
			order := tc.pick(tc.n, tc.k)
			if len(order) != min(tc.n, tc.k) {
				t.Fatalf("pick(%d, %d) = %v, want %d indexes", tc.n, tc.k, order, min(tc.n, tc.k))
			}
			for i, v := range order {
				if v < 0 || v >= tc.n || slices.Contains(order[:i], v) {
					t.Fatalf("pick(%d, %d) = %v, want distinct indexes below %d", tc.n, tc.k, order, tc.n)
				}
			}
			seen[fmt.Sprint(order)]++
		}
		// 10 standard deviations apart: never by chance.
		if len(seen) != tc.choices {
			t.Fatalf("pick(%d, %d) drew %d ordered choices, want %d", tc.n, tc.k, len(seen), tc.choices)
		}
		for choice, times := range seen {
			if times < per-300 || times > per+300 {
				t.Errorf("pick(%d, %d) drew %s %d times in %d, want about %d", tc.n, tc.k, choice, times, per*tc.choices, per)
			}
		}
	}
}
