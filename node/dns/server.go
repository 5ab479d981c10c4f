// Package dns is the agent's DNS interface: it answers
// `[<tag>.]<service>.service[.<zone>].<domain>` with the SRV, A and AAAA
// records of the service's passing instances, read from the agent's
// registry replica, over UDP and TCP, so that programs in any language
// (and grpc-go's dns:/// resolver) find services without a zrpc client.
//
// It is an authoritative server for its domain only: it never recurses,
// and refuses names outside the domain, so it cannot serve as an open
// resolver. Answers come from the local replica as it is (a stale read,
// as Consul's DNS serves by default). It is not a general DNS server:
// no zone transfers, no DNSSEC, no updates.
package dns

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/miekg/dns"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
)

// Registry is what DNS reads of the agent's registry replica (raftstore's
// FSM). It is called concurrently from the server's goroutines, a few
// times per query, and must not block.
type Registry interface {
	// PassingInstances returns the passing instances of service, in any
	// order, with at least their address, weight, zone and tags, and the
	// revision they reflect; known says whether service has instances,
	// whatever their health. DNS answers show passing instances only:
	// the others are never decoded.
	PassingInstances(service string) (passing []*pb.Instance, known bool, rev uint64)
	// HasInstances reports whether service has instances, whatever their
	// health, without reading them.
	HasInstances(service string) bool
	// Revision returns the replica's revision, which moves whenever an
	// instance changes: answers are cached while it stays.
	Revision() uint64
}

// Config is what a Server needs.
type Config struct {
	// Domain is the zone the server answers for, e.g. "zrpc." (a trailing
	// dot is added when missing).
	Domain string
	// TTL is given to every record; 0 (the default) tells resolvers not
	// to cache, so clients see health changes at once.
	TTL time.Duration
	// Registry is the replica answers are read from.
	Registry Registry
	// CanRead, when set, reports whether answers may show service; a
	// service it refuses is answered as an unknown one (NXDOMAIN), so a
	// name's existence does not leak. With ACLs on, the agent passes the
	// rules of its DNS token here.
	CanRead func(service string) bool
	// Answered, when set, is called with the response code of every
	// answer ("NOERROR", "NXDOMAIN", "REFUSED", ...), from the server's
	// goroutines; it must not block. The agent counts them in
	// zrpc_dns_queries_total.
	Answered func(rcode string)
	// Logger receives the server's errors (default: discard).
	Logger *slog.Logger
	// MaxTCPConnections bounds the TCP connections served at once
	// (default 256); one beyond is closed as soon as it is accepted.
	MaxTCPConnections int
	// TCPIdleTimeout closes a TCP connection that asks nothing for that
	// long after an answer (default 8 s); its first question must come
	// within 2 s.
	TCPIdleTimeout time.Duration
}

// Server serves DNS over UDP and TCP on one address.
type Server struct {
	log      *slog.Logger
	udp, tcp *dns.Server
	addr     string
	// running are the servers started, which Close shuts down.
	running []*dns.Server
	wg      sync.WaitGroup
	closing sync.Once
}

// udpReadBuffer is the size asked for the UDP socket's receive buffer.
const udpReadBuffer = 4 << 20

// ioTimeout bounds a TCP client's reads and writes; idleTimeout closes an
// idle TCP connection, after at most maxTCPQueries questions; at most
// maxTCPConns connections are served at once. A client (or a stranger)
// thus holds at most maxTCPConns of the agent's descriptors, each for
// seconds.
const (
	ioTimeout     = 2 * time.Second
	idleTimeout   = 8 * time.Second
	maxTCPQueries = 128
	maxTCPConns   = 256
)

// Start listens on addr (host:port; port 0 picks one free for UDP and TCP
// alike) over UDP and TCP and serves queries until Close.
func Start(addr string, cfg Config) (*Server, error) {
	h, err := newHandler(cfg)
	if err != nil {
		return nil, err
	}
	if cfg.MaxTCPConnections < 0 || cfg.TCPIdleTimeout < 0 {
		return nil, fmt.Errorf("dns: MaxTCPConnections %d and TCPIdleTimeout %s must not be negative", cfg.MaxTCPConnections, cfg.TCPIdleTimeout)
	}
	pc, ln, err := listen(addr)
	if err != nil {
		return nil, err
	}
	s := &Server{log: cfg.Logger, addr: ln.Addr().String()}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.udp = &dns.Server{PacketConn: pc, Handler: h, ReadTimeout: ioTimeout, WriteTimeout: ioTimeout}
	maxConns, idle := cfg.MaxTCPConnections, cfg.TCPIdleTimeout
	if maxConns == 0 {
		maxConns = maxTCPConns
	}
	if idle == 0 {
		idle = idleTimeout
	}
	s.tcp = &dns.Server{Listener: newLimitListener(ln, maxConns, ioTimeout), Handler: h,
		ReadTimeout: ioTimeout, WriteTimeout: ioTimeout, MaxTCPQueries: maxTCPQueries,
		IdleTimeout: func() time.Duration { return idle }}
	for _, srv := range []*dns.Server{s.udp, s.tcp} {
		if err := s.serve(srv); err != nil {
			pc.Close()
			ln.Close()
			s.Close()
			return nil, fmt.Errorf("serve DNS on %s: %w", s.addr, err)
		}
	}
	return s, nil
}

// serve runs srv on a goroutine of s and returns once it serves: Close
// must not run before, as miekg/dns's Shutdown refuses a server that has
// not started, which would leave it serving.
func (s *Server) serve(srv *dns.Server) error {
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	failed := make(chan error, 1)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		err := srv.ActivateAndServe()
		select {
		case <-started:
			if err != nil {
				s.log.Error("DNS server stopped", "addr", s.addr, "err", err)
			}
		default:
			failed <- err
		}
	}()
	select {
	case <-started:
		s.running = append(s.running, srv)
		return nil
	case err := <-failed:
		return err
	}
}

// listen binds addr over UDP and TCP on the same port.
func listen(addr string) (net.PacketConn, net.Listener, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, nil, fmt.Errorf("DNS address %q: %w", addr, err)
	}
	// With port 0 the kernel picks the UDP port, which may be taken over
	// TCP: try a few.
	for attempt := 0; ; attempt++ {
		pc, err := net.ListenPacket("udp", addr)
		if err != nil {
			return nil, nil, fmt.Errorf("listen for DNS on %s/udp: %w", addr, err)
		}
		// Room for the queries of a burst, or of a moment the server is
		// not scheduled (the kernel caps it at net.core.rmem_max); the
		// default, ~200 queries, dropped queries at 10,000/s on a busy
		// machine.
		pc.(*net.UDPConn).SetReadBuffer(udpReadBuffer)
		bound := net.JoinHostPort(host, strconv.Itoa(pc.LocalAddr().(*net.UDPAddr).Port))
		ln, err := net.Listen("tcp", bound)
		if err == nil {
			return pc, ln, nil
		}
		pc.Close()
		if port != "0" || attempt == 10 {
			return nil, nil, fmt.Errorf("listen for DNS on %s/tcp: %w", bound, err)
		}
	}
}

// Addr is the host:port the server answers on (UDP and TCP).
func (s *Server) Addr() string { return s.addr }

// Close stops serving, waits up to a few seconds for queries in flight and
// returns once the server's goroutines have ended. Safe to call twice.
func (s *Server) Close() error {
	s.closing.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		for _, srv := range s.running {
			if err := srv.ShutdownContext(ctx); err != nil {
				s.log.Warn("stop DNS server", "addr", s.addr, "err", err)
			}
		}
		s.wg.Wait()
	})
	return nil
}
