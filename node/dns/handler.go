package dns

import (
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
)

// Names the server answers, below its domain (zrpc. by default):
//
//	[<tag>.]<service>.service[.<zone>].zrpc.   SRV, A, AAAA of passing instances
//	<hex IP>.addr.zrpc.                        A or AAAA: the targets of SRV records
//
// A service name may contain dots (user.rpc.service.zrpc. is service
// "user.rpc"). The rightmost "service" label separates the service from
// the zone, so a zone whose name has a "service" label cannot be asked
// for. When the labels before it name a service with instances, they are
// that service; otherwise the first of them is a tag and the rest the
// service (v2.user.rpc.service.zrpc.: tag "v2" of "user.rpc").
const (
	serviceLabel = "service"
	addrLabel    = "addr"
)

// maxBuilds bounds the names whose records are built at once: a build
// of a service of 100,000 instances holds tens of megabytes; one of a
// few instances, microseconds of a turn.
const maxBuilds = 4

// maxUDPSize is the largest UDP answer the server sends, whatever size a
// client's EDNS0 record offers (the usual advice, to avoid fragments).
const maxUDPSize = 1232

// handler answers queries. Between queries it keeps only the records of
// the names asked (cache), and it is safe for concurrent use.
type handler struct {
	domain   string // lower case, fully qualified
	labels   int    // labels of domain
	ttl      uint32
	reg      Registry
	canRead  func(string) bool
	answered func(string)
	cache    *cache
	// empty caches the names of a service that have no record (a tag,
	// zone or health no instance has) apart, so that a stranger asking
	// many such names evicts only them: each would otherwise read the
	// service's every instance again.
	empty *cache
	// large caches the names whose records alone exceed cache's record
	// bound, which cache would not keep: each question would otherwise
	// read the service's every instance and build all its records again.
	large *cache
	// building are the names whose records are being built, by revision:
	// the questions that come meanwhile wait for those records rather
	// than each building its own (a burst of questions for a service of
	// 100,000 instances, just after a change, would take tens of
	// megabytes each).
	buildMu  sync.Mutex
	building map[buildKey]*build
	// builders bounds the names whose records are built at once, and
	// buildWait how long a question waits for its turn before it is
	// answered SERVFAIL: questions for many names of large services at
	// once (each tag and zone of a service is a name of its own) would
	// otherwise each hold tens of megabytes at the same time.
	builders  chan struct{}
	buildWait time.Duration
}

type buildKey struct {
	name string
	rev  uint64
}

// build is one build of a name's records, rs, set before done is closed;
// busy when it could not start within buildWait.
type build struct {
	done    chan struct{}
	rs      *records
	busy    bool
	waiting int // questions waiting for it, under buildMu
}

func newHandler(cfg Config) (*handler, error) {
	if cfg.Registry == nil {
		return nil, errors.New("dns: Config.Registry is nil")
	}
	domain, err := CheckDomain(cfg.Domain)
	if err != nil {
		return nil, err
	}
	if cfg.TTL < 0 || cfg.TTL.Seconds() > float64(^uint32(0)>>1) {
		return nil, fmt.Errorf("dns: TTL %s must be between 0 and 68 years", cfg.TTL)
	}
	return &handler{
		domain:    domain,
		labels:    dns.CountLabel(domain),
		ttl:       uint32(cfg.TTL / time.Second),
		reg:       cfg.Registry,
		canRead:   cfg.CanRead,
		answered:  cfg.Answered,
		cache:     newCache(cacheNames, cacheRecords),
		empty:     newCache(emptyNames, 0),
		large:     newCache(largeNames, math.MaxInt),
		building:  map[buildKey]*build{},
		builders:  make(chan struct{}, maxBuilds),
		buildWait: ioTimeout,
	}, nil
}

// CheckDomain returns domain in the form the server uses (lower case,
// fully qualified), or an error saying why it cannot serve it.
func CheckDomain(domain string) (string, error) {
	d := dns.Fqdn(strings.ToLower(strings.TrimSpace(domain)))
	if d == "." {
		return "", errors.New("must name a domain such as zrpc. (the root would make the agent answer for every name)")
	}
	if _, ok := dns.IsDomainName(d); !ok {
		return "", fmt.Errorf("%q is not a domain name", domain)
	}
	for _, l := range dns.SplitDomainName(d) {
		if l == "" || strings.ContainsAny(l, " \\\"()@;$") {
			return "", fmt.Errorf("%q is not a domain name of letters, digits, '-' and '.'", domain)
		}
	}
	return d, nil
}

// ServeDNS answers one query; the transport decides how large the
// answer may be.
func (h *handler) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	_, udp := w.LocalAddr().(*net.UDPAddr)
	resp := h.answer(req, udp)
	if h.answered != nil {
		h.answered(dns.RcodeToString[resp.Rcode]) // before it leaves: a client that has it finds it counted
	}
	w.WriteMsg(resp)
}

// answer builds the response to req. Over UDP an answer larger than the
// client accepts is cut and marked truncated (TC), so that the client
// asks again over TCP: without EDNS0, at most amplification times the
// question's size (and 512 bytes), so that a question with a forged
// source cannot turn into a much larger answer to it; with EDNS0, the
// size the client offers, at most 1,232 bytes.
func (h *handler) answer(req *dns.Msg, udp bool) *dns.Msg {
	m := new(dns.Msg)
	m.SetReply(req)
	m.Authoritative = true
	m.RecursionAvailable = false
	size := dns.MaxMsgSize
	if udp {
		size = min(dns.MinMsgSize, amplification*req.Len())
	}
	if opt := req.IsEdns0(); opt != nil {
		if udp {
			size = min(max(int(opt.UDPSize()), dns.MinMsgSize), maxUDPSize)
		}
		m.SetEdns0(uint16(min(size, maxUDPSize)), false)
	}
	switch {
	case req.Opcode != dns.OpcodeQuery:
		m.Rcode = dns.RcodeNotImplemented
	case len(req.Question) != 1:
		m.Rcode = dns.RcodeFormatError
	case req.Question[0].Qclass != dns.ClassINET && req.Question[0].Qclass != dns.ClassANY:
		m.Rcode = dns.RcodeNotImplemented
	case h.cached(m, req.Question[0], size):
		// A name asked before, answered again from its records.
	case !dns.IsSubDomain(h.domain, strings.ToLower(req.Question[0].Name)):
		// Not ours, and the agent never recurses: no open resolver.
		m.Rcode = dns.RcodeRefused
	default:
		h.lookup(m, req.Question[0], size)
	}
	m.Truncate(size) // never below 512 bytes
	if size < dns.MinMsgSize {
		cut(m, size)
	}
	return m
}

// amplification bounds a UDP answer to a question without EDNS0: at most
// this many times the question's size.
const amplification = 10

// cut removes records from the end of m's additional, then answer
// sections until it packs in size bytes, marking it truncated; the
// authority section (an SOA) stays.
func cut(m *dns.Msg, size int) {
	m.Compress = true
	for {
		l, n := m.Len(), len(m.Extra)+len(m.Answer)
		if l <= size || n == 0 {
			return
		}
		// Drop as many records as the excess holds at their mean size.
		drop := max(1, (l-size)*n/l)
		extra := min(drop, len(m.Extra))
		m.Extra = m.Extra[:len(m.Extra)-extra]
		m.Answer = m.Answer[:len(m.Answer)-min(drop-extra, len(m.Answer))]
		m.Truncated = true
	}
}

// lookup fills m with the answer to q, a name in the domain, in size
// bytes.
func (h *handler) lookup(m *dns.Msg, q dns.Question, size int) {
	labels := dns.SplitDomainName(q.Name)
	rel := labels[:len(labels)-h.labels]
	switch {
	case len(rel) == 0:
		h.apex(m, q)
	case len(rel) == 2 && strings.EqualFold(rel[1], addrLabel):
		h.addr(m, q, rel[0])
	default:
		h.service(m, q, size)
	}
}

// apex answers the domain itself: its SOA, and NODATA for anything else.
func (h *handler) apex(m *dns.Msg, q dns.Question) {
	if q.Qtype == dns.TypeSOA || q.Qtype == dns.TypeANY {
		m.Answer = append(m.Answer, h.soa(0))
		return
	}
	h.noData(m, 0)
}

// addr answers <hex IP>.addr.<domain>.
func (h *handler) addr(m *dns.Msg, q dns.Question, label string) {
	b, err := hex.DecodeString(label)
	ip, ok := netip.AddrFromSlice(b)
	if err != nil || !ok {
		h.nxDomain(m, 0)
		return
	}
	if rr := h.ipRecord(q.Name, ip.Unmap()); rr != nil && (q.Qtype == rr.Header().Rrtype || q.Qtype == dns.TypeANY) {
		m.Answer = append(m.Answer, rr)
		return
	}
	h.noData(m, 0)
}

// cached answers q from the records cached for its name, and reports
// whether it did: they serve while the replica's revision, and the ACL
// decisions they depend on, are those they were built at.
func (h *handler) cached(m *dns.Msg, q dns.Question, size int) bool {
	key := h.cacheKey(q.Name)
	var rs *records
	for _, c := range []*cache{h.cache, h.empty, h.large} {
		if rs = c.get(key); rs != nil {
			break
		}
	}
	if rs == nil || rs.rev != h.reg.Revision() || !rs.readable(h.canRead) {
		return false
	}
	h.fill(m, q, rs, size)
	return true
}

// cacheKey is the name whose records answer name, a name in the domain
// or not: its lower case, unless a service its labels name with their
// capitals has instances (find tries a service as written before its
// lower case, and tags and zones match in any case). The letter cases
// of a name thus share one build and one cache entry: a resolver that
// randomises them (DNS 0x20) would otherwise miss the cache with every
// question, and have every record of the service built again.
func (h *handler) cacheKey(name string) string {
	lower := strings.ToLower(name)
	if lower == name || !dns.IsSubDomain(h.domain, lower) {
		return name
	}
	labels := dns.SplitDomainName(name)
	rel := labels[:len(labels)-h.labels]
	// The service all the labels before "service" name, then the one
	// they name after a tag.
	at := serviceAt(rel)
	for i := 0; i < 2 && i < at; i++ {
		if s := strings.Join(rel[i:at], "."); s != strings.ToLower(s) && h.reg.HasInstances(s) {
			return name
		}
	}
	return lower
}

// serviceAt is the index of the rightmost "service" label of rel, the
// labels of a name below the domain, after at least one; -1 when none.
func serviceAt(rel []string) int {
	for i := len(rel) - 1; i > 0; i-- {
		if strings.EqualFold(rel[i], serviceLabel) {
			return i
		}
	}
	return -1
}

// service answers [<tag>.]<service>.service[.<zone>].<domain>, and caches
// the records built for it.
func (h *handler) service(m *dns.Msg, q dns.Question, size int) {
	rs, busy := h.build(h.cacheKey(q.Name))
	switch {
	case busy:
		m.Rcode = dns.RcodeServerFailure // the client asks again
	case rs == nil:
		h.nxDomain(m, h.reg.Revision())
	default:
		h.fill(m, q, rs, size)
	}
}

// build returns the records of name (a cacheKey), built and cached by
// this question or by one that was building them at the replica's
// present revision; nil when name names no service, or one the server
// may not show. busy says none could be built: other names' builds took
// every turn for buildWait.
func (h *handler) build(name string) (rs *records, busy bool) {
	key := buildKey{name: name, rev: h.reg.Revision()}
	h.buildMu.Lock()
	if b, ok := h.building[key]; ok {
		b.waiting++
		h.buildMu.Unlock()
		<-b.done
		return b.rs, b.busy
	}
	b := &build{done: make(chan struct{})}
	h.building[key] = b
	h.buildMu.Unlock()
	defer func() {
		h.buildMu.Lock()
		delete(h.building, key)
		h.buildMu.Unlock()
		close(b.done)
	}()
	wait := time.NewTimer(h.buildWait)
	defer wait.Stop()
	select {
	case h.builders <- struct{}{}:
		defer func() { <-h.builders }()
	case <-wait.C:
		b.busy = true
		return nil, true
	}
	b.rs = h.records(name)
	if b.rs != nil {
		h.store(name, b.rs)
	}
	return b.rs, false
}

// store caches rs, the records of name, in the cache its size calls for,
// and forgets the name's records in the others: a name holds one entry,
// so that records it had at an older revision never hide those it has now.
func (h *handler) store(name string, rs *records) {
	into := h.cache
	switch {
	case len(rs.srv) == 0:
		into = h.empty
	case rs.size() > h.cache.maxRecs:
		into = h.large
	}
	for _, c := range []*cache{h.cache, h.empty, h.large} {
		if c != into {
			c.remove(name)
		}
	}
	into.put(name, rs)
}

// records builds the records of the passing instances name, a name in
// the domain, asks for; nil when it names no service, or one the server
// may not show. Tags and zones match in any letter case, as DNS names
// do.
func (h *handler) records(name string) *records {
	labels := dns.SplitDomainName(name)
	rel := labels[:len(labels)-h.labels]
	at := serviceAt(rel)
	if at < 0 {
		return nil
	}
	zone := strings.Join(rel[at+1:], ".")
	var checks []aclCheck
	tag, passing, known, rev := h.instances(rel[:at], &checks)
	if !known {
		return nil
	}
	rs := &records{rev: rev, checks: checks}
	targets := map[netip.Addr]int32{}
	ips := map[netip.Addr]bool{}
	for _, inst := range passing {
		if inst.Health != pb.Health_PASSING || (tag != "" && !hasTag(inst.Tags, tag)) || (zone != "" && !strings.EqualFold(inst.Zone, zone)) {
			continue
		}
		host, port, ok := splitAddress(inst.Address)
		if !ok {
			continue
		}
		target, at := dns.Fqdn(host), int32(-1)
		ip, err := netip.ParseAddr(host)
		if err == nil {
			ip = ip.Unmap()
			target = hex.EncodeToString(ip.AsSlice()) + "." + addrLabel + "." + h.domain
			var seen bool
			if at, seen = targets[ip]; !seen {
				at = int32(len(rs.targets))
				targets[ip] = at
				rs.targets = append(rs.targets, h.ipRecord(target, ip))
			}
		}
		rs.srv = append(rs.srv, &dns.SRV{
			Hdr:      h.header(name, dns.TypeSRV),
			Priority: 1,
			Weight:   uint16(min(max(inst.Weight, 1), 65535)),
			Port:     port,
			Target:   target,
		})
		rs.srvTarget = append(rs.srvTarget, at)
		if err == nil && !ips[ip] {
			ips[ip] = true
			if ip.Is4() {
				rs.a = append(rs.a, h.ipRecord(name, ip))
			} else {
				rs.aaaa = append(rs.aaaa, h.ipRecord(name, ip))
			}
		}
	}
	return rs
}

// instances finds the service the labels name, and the tag they ask for
// ("" for none): all of them name the service when it has instances,
// else the first is a tag of the service the others name. passing are
// its passing instances; known is false when neither exists, or the
// server may not show it. The ACL decisions taken are appended to
// checks. rev is the replica's revision at the first lookup: should it
// move before the last, the answer is never taken from the cache, as a
// lookup it skipped may have found something since.
func (h *handler) instances(labels []string, checks *[]aclCheck) (tag string, passing []*pb.Instance, known bool, rev uint64) {
	passing, known, rev = h.find(strings.Join(labels, "."), checks)
	if known || len(labels) < 2 {
		return "", passing, known, rev
	}
	passing, known, _ = h.find(strings.Join(labels[1:], "."), checks)
	return labels[0], passing, known, rev
}

// find returns the passing instances of service (asked as written, else
// in lower case: DNS names are case-insensitive); known is false when it
// has no instance or may not be shown; rev is the revision of the first
// lookup.
func (h *handler) find(service string, checks *[]aclCheck) (passing []*pb.Instance, known bool, rev uint64) {
	passing, known, rev = h.reg.PassingInstances(service)
	if !known {
		if lower := strings.ToLower(service); lower != service {
			service = lower
			passing, known, _ = h.reg.PassingInstances(service)
		}
	}
	if !known {
		return nil, false, rev
	}
	if h.canRead != nil {
		allowed := h.canRead(service)
		*checks = append(*checks, aclCheck{service: service, allowed: allowed})
		if !allowed {
			return nil, false, rev
		}
	}
	return passing, true, rev
}

// hasTag reports whether tags holds tag, in any letter case.
func hasTag(tags []string, tag string) bool {
	for _, t := range tags {
		if strings.EqualFold(t, tag) {
			return true
		}
	}
	return false
}

// minRecordLen is the fewest bytes a record of an answer takes (an A
// record whose owner name is a compression pointer): an answer of size
// bytes holds at most size/minRecordLen of them.
const minRecordLen = 16

// fill adds to m the records of rs that q asks for, in a random order
// for every answer (clients mostly take the first), at most as many as
// size bytes may hold: Truncate then cuts to size exactly.
func (h *handler) fill(m *dns.Msg, q dns.Question, rs *records, size int) {
	limit := size/minRecordLen + 1
	switch q.Qtype {
	case dns.TypeSRV:
		addSRV(m, rs, pick(len(rs.srv), limit), size)
	case dns.TypeA:
		m.Answer = pickRecords(rs.a, nil, limit)
	case dns.TypeAAAA:
		m.Answer = pickRecords(rs.aaaa, nil, limit)
	case dns.TypeANY:
		m.Answer = pickRecords(rs.a, rs.aaaa, limit)
	}
	if len(m.Answer) < rs.count(q.Qtype) {
		m.Truncated = true // cut here rather than by Truncate
	}
	if len(m.Answer) == 0 {
		h.noData(m, rs.rev)
	}
}

// addSRV adds to m the SRV records of rs in order, the address record of
// each one's target in the additional section (once per target), as
// many as pack in size bytes with their address records: a client gets
// the address of every target it is given, also in a truncated answer
// (Truncate would keep the SRV records that fit and drop every address
// record).
func addSRV(m *dns.Msg, rs *records, order []int, size int) {
	m.Answer = make([]dns.RR, 0, len(order))
	m.Extra = slices.Grow(m.Extra, len(order)) // after the OPT record, if any
	// extras[c] is the length of the additional section with the address
	// records of the first c SRV records' targets.
	extras := make([]int, 1, len(order)+1)
	extras[0] = len(m.Extra)
	var added []bool // by target, when there are many
	if len(order) > 32 {
		added = make([]bool, len(rs.targets))
	}
	for _, i := range order {
		m.Answer = append(m.Answer, rs.srv[i])
		if at := rs.srvTarget[i]; at >= 0 {
			target := rs.targets[at]
			var seen bool
			if added != nil {
				seen, added[at] = added[at], true
			} else {
				seen = slices.Contains(m.Extra, target)
			}
			if !seen {
				m.Extra = append(m.Extra, target)
			}
		}
		extras = append(extras, len(m.Extra))
	}
	fitSRV(m, extras, size)
}

// fitSRV keeps the most SRV records of m's answer that pack in size
// bytes with the address records of their targets (extras, as addSRV
// counts them), marking m truncated when it cuts any.
func fitSRV(m *dns.Msg, extras []int, size int) {
	answer, extra := m.Answer, m.Extra
	keep := func(c int) { m.Answer, m.Extra = answer[:c], extra[:extras[c]] }
	packed := func(c int) int {
		keep(c)
		return m.Len()
	}
	n := len(answer)
	if m.Compress = false; m.Len() <= size {
		return // as Truncate: uncompressed, it fits
	}
	// The first lo records (with their targets') pack in size bytes even
	// uncompressed; the first hi do not even with every owner name
	// compressed to a pointer (2 bytes), their least: the SRV targets
	// never are.
	lo, hi := 0, n+1
	most := packed(0) // nothing to compress
	least := most
	add := func(rr dns.RR) {
		l := dns.Len(rr)
		most += l
		least += l - (len(rr.Header().Name) + 1) + 2
	}
	for c := 1; c <= n && hi > n; c++ {
		add(answer[c-1])
		for _, rr := range extra[extras[c-1]:extras[c]] {
			add(rr)
		}
		if most <= size {
			lo = c
		}
		if least > size {
			hi = c
		}
	}
	m.Compress = true
	if hi > n {
		if packed(n) <= size {
			return
		}
		hi = n
	}
	m.Truncated = true
	// Mostly the records take their least (every owner name a pointer):
	// the first hi-1 fit. Else guess where size falls from the lengths at
	// both ends, as the length grows with c nearly in proportion, and
	// halve when the guesses move one end twice in a row.
	if hi-lo > 1 {
		if packed(hi-1) <= size {
			lo = hi - 1
		} else {
			hi--
		}
	}
	var loLen, hiLen int
	if hi-lo > 1 {
		loLen, hiLen = packed(lo), packed(hi)
	}
	for moved := 0; hi-lo > 1; {
		c := lo + (size-loLen)*(hi-lo)/max(hiLen-loLen, 1)
		if moved >= 2 || moved <= -2 {
			c = lo + (hi-lo)/2
		}
		c = min(max(c, lo+1), hi-1)
		if l := packed(c); l <= size {
			lo, loLen, moved = c, l, max(moved, 0)+1
		} else {
			hi, hiLen, moved = c, l, min(moved, 0)-1
		}
	}
	keep(lo)
}

// splitAddress splits an instance's "host:port"; ok is false for an
// address DNS cannot give (no port, or a port out of range).
func splitAddress(addr string) (host string, port uint16, ok bool) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil || host == "" {
		return "", 0, false
	}
	n, err := strconv.ParseUint(p, 10, 16)
	if err != nil {
		return "", 0, false
	}
	if _, isName := dns.IsDomainName(host); !isName {
		return "", 0, false
	}
	return host, uint16(n), true
}

func (h *handler) ipRecord(name string, ip netip.Addr) dns.RR {
	if ip.Is4() {
		return &dns.A{Hdr: h.header(name, dns.TypeA), A: net.IP(ip.AsSlice())}
	}
	return &dns.AAAA{Hdr: h.header(name, dns.TypeAAAA), AAAA: net.IP(ip.AsSlice())}
}

func (h *handler) header(name string, t uint16) dns.RR_Header {
	return dns.RR_Header{Name: name, Rrtype: t, Class: dns.ClassINET, Ttl: h.ttl}
}

// nxDomain answers that the name does not exist; noData that it exists
// but has no record of the type asked. Both carry the SOA, whose minimum
// TTL tells resolvers how long to remember the answer (RFC 2308).
func (h *handler) nxDomain(m *dns.Msg, rev uint64) {
	m.Rcode = dns.RcodeNameError
	m.Ns = append(m.Ns, h.soa(rev))
}

func (h *handler) noData(m *dns.Msg, rev uint64) {
	m.Ns = append(m.Ns, h.soa(rev))
}

// soa is the domain's SOA record; its serial is the registry revision the
// answer reflects (its low 32 bits).
func (h *handler) soa(rev uint64) dns.RR {
	return &dns.SOA{
		Hdr:     h.header(h.domain, dns.TypeSOA),
		Ns:      "ns." + h.domain,
		Mbox:    "hostmaster." + h.domain,
		Serial:  uint32(rev),
		Refresh: 3600,
		Retry:   600,
		Expire:  86400,
		Minttl:  h.ttl,
	}
}
