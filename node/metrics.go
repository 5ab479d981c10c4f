package node

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc/codes"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/gossip"
	"github.com/zrpcio/zrpc/internal/connlimit"
	"github.com/zrpcio/zrpc/internal/diskspace"
	"github.com/zrpcio/zrpc/internal/httpserve"
	"github.com/zrpcio/zrpc/node/grpcapi"
	"github.com/zrpcio/zrpc/node/ui"
	"github.com/zrpcio/zrpc/raftstore"
)

// metrics are one agent's Prometheus metrics, in a registry of its own so
// that several agents can share a process (tests).
type metrics struct {
	reg      *prometheus.Registry
	apply    *prometheus.HistogramVec
	rpcs     *prometheus.CounterVec
	rpcTime  *prometheus.HistogramVec
	watchers prometheus.Gauge
	panics   *prometheus.CounterVec
	// slowWatchers counts Watch streams ended as too slow.
	slowWatchers prometheus.Counter
	// connsRefused counts gRPC connections closed past max_conns_per_client.
	connsRefused prometheus.Counter
	// streamsRefused counts Watch and Session streams refused past
	// max_watches and max_sessions.
	streamsRefused *prometheus.CounterVec
	// aclRefused counts calls the ACLs refused.
	aclRefused *prometheus.CounterVec
	// dnsQueries counts DNS answers by response code.
	dnsQueries *prometheus.CounterVec
	// snapshots count the scheduled snapshots.
	snapshots *snapshotMetrics
	// divergence counts, on the leader, the comparisons that found a
	// peer's registry diverged from the leader's (divergence.go); the
	// log line names the peer.
	divergence prometheus.Counter
	// registry is the Registry service, whose watch streams' queued
	// bytes are reported; nil until it is built.
	registry atomic.Pointer[grpcapi.Registry]
}

func newMetrics(n *Node) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		apply: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "zrpc_raft_apply_duration_seconds",
			Help:    "Time from proposing a registry write on the leader to its being applied, by result.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}, []string{"result"}),
		rpcs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "zrpc_grpc_server_handled_total",
			Help: "Agent API calls completed, by method and gRPC code.",
		}, []string{"method", "code"}),
		rpcTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "zrpc_grpc_server_handling_seconds",
			Help:    "Agent API unary call latency by method.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}, []string{"method"}),
		watchers: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "zrpc_registry_watchers", Help: "Open watches served by this agent: Watch streams and the watches of WatchMany streams (the streams themselves count against max_watches too, not here).",
		}),
		panics: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "zrpc_grpc_panics_total",
			Help: "Agent API calls whose handler panicked (answered Internal; the stack is in the log), by method.",
		}, []string{"method"}),
		aclRefused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "zrpc_acl_refused_total",
			Help: "Agent API calls the ACLs refused (no known token, or a missing permission), by method and gRPC code.",
		}, []string{"method", "code"}),
		slowWatchers: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "zrpc_registry_watchers_too_slow_total",
			Help: "Watch and WatchMany streams ended because their reader fell behind (the client resumes each watch from the last revision it received).",
		}),
		connsRefused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "zrpc_grpc_connections_refused_total",
			Help: "Connections to the agent's gRPC API closed as they came because their client IP held max_conns_per_client open already.",
		}),
		streamsRefused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "zrpc_registry_streams_refused_total",
			Help: "Watch and Session streams refused (ResourceExhausted) because this agent served max_watches or max_sessions of them already, by kind.",
		}, []string{"kind"}),
		divergence: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "zrpc_raft_replica_divergence_total",
			Help: "Times the Raft leader found a peer's apply hash, at a revision both applied, different from its own (checked every 30 s): that replica's registry diverged from the leader's; the leader's error log names it. Stop it, move its data dir aside and start it empty with --join.",
		}),
	}
	// Known label values start at zero, so that rate() sees the first
	// increase and a dashboard shows 0 rather than no data.
	for _, result := range []string{"ok", "error"} {
		m.apply.WithLabelValues(result)
	}
	for _, kind := range []string{"Watch", "Session"} {
		m.streamsRefused.WithLabelValues(kind)
	}
	m.snapshots = newSnapshotMetrics()
	m.reg.MustRegister(m.snapshots.collectors()...)
	store := n.store
	gauge := func(name, help string, f func() float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f)
	}
	m.reg.MustRegister(m.apply, m.rpcs, m.rpcTime, m.watchers, m.panics, m.slowWatchers, m.aclRefused, m.connsRefused, m.streamsRefused, m.divergence,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		gauge("zrpc_raft_leader", "1 if this agent is the Raft leader.", func() float64 { return b2f(store.Status().State == raftstore.Leader) }),
		gauge("zrpc_raft_has_leader", "1 if this agent knows a Raft leader.", func() float64 { return b2f(store.Status().LeaderAddr != "") }),
		gauge("zrpc_raft_applied_index", "Last Raft index applied to this replica.", func() float64 { return float64(store.Status().AppliedIndex) }),
		gauge("zrpc_raft_last_index", "Last Raft index in this agent's log.", func() float64 { return float64(store.Status().LastLogIndex) }),
		gauge("zrpc_raft_commit_index", "Last Raft index this agent knows committed (the leader's, as far as it has heard).",
			func() float64 { return float64(store.Status().CommitIndex) }),
		gauge("zrpc_raft_term", "This agent's current Raft term; it grows by one or more with each election.",
			func() float64 { return float64(store.Status().Term) }),
		gauge("zrpc_raft_last_contact_seconds", "Seconds since this follower heard from the leader (0 on the leader).", func() float64 {
			age, _ := store.Status().LastContactAge(time.Now())
			return age.Seconds()
		}),
		gauge("zrpc_raft_cut_off", "1 while this agent is cut off from the leader: no leader has reached it within stale_read_bound, or it knows no leader and has heard from too few voters for a quorum (a nonvoter asks them) for three heartbeat timeouts (or two election timeouts and one heartbeat timeout, if longer), or its replica has applied less than the commit index it knows (a leader's: its own) and has not moved for stale_read_bound; its writes fail at once, its watches that require a leader end, its sessions are told (its default reads refuse once stale_read_bound has passed).",
			func() float64 { return b2f(store.CutOff()) }),
		gauge("zrpc_registry_bytes", "Bytes of the instances in this replica as max_registry_bytes counts them: their encoded size, plus a fixed cost per instance and per service.",
			func() float64 { return float64(n.store.FSM().RegistryBytes()) }),
		gauge("zrpc_registry_revision", "Registry revision of this replica.", func() float64 { return float64(n.store.FSM().Revision()) }),
		gauge("zrpc_registry_watch_queued_bytes", "Encoded bytes of events queued for all Watch streams and not sent yet (limited by watch_queue_bytes).",
			func() float64 {
				if r := m.registry.Load(); r != nil {
					return float64(r.WatchQueuedBytes())
				}
				return 0
			}),
		gauge("zrpc_registry_session_streams", "Open Session streams served by this agent (limited by max_sessions).",
			func() float64 {
				if r := m.registry.Load(); r != nil {
					return float64(r.Streams().Sessions)
				}
				return 0
			}),
		&instanceCollector{n: n, desc: prometheus.NewDesc("zrpc_registry_instances",
			"Registered instances in this replica, by health.", []string{"health"}, nil)},
		&stateCollector{store: store, desc: prometheus.NewDesc("zrpc_raft_state",
			"1 for this agent's current Raft state. Shutdown on a running agent: it stopped its Raft node after a failed fsync of its log and is exiting (zrpcctl status says why).", []string{"state"}, nil)},
		&quorumCollector{n: n,
			voters: prometheus.NewDesc("zrpc_raft_voters",
				"Voters in this agent's Raft configuration; a leader needs a majority of them.", nil, nil),
			unreachable: prometheus.NewDesc("zrpc_raft_voters_unreachable",
				"Voters that cannot vote as this agent sees them: gossip does not see them alive (failed, left or unknown), they are alive without Raft state (a new or wiped data dir), or, on the leader, they do not answer its heartbeats; when fewer than a majority of zrpc_raft_voters remain, no leader can be elected.", nil, nil)},
		&memberCollector{n: n, desc: prometheus.NewDesc("zrpc_gossip_members",
			"Agents this agent's gossip knows, by status (alive, suspect, failed, left).", []string{"status"}, nil),
			clock: prometheus.NewDesc("zrpc_gossip_clock_offset_seconds",
				"How far each alive member's wall clock was from this agent's at gossip's last direct probe of it (positive: ahead), give or take half the probe's round trip. "+
					"Times an agent stamps while it leads (health_since, blob put leases) are off by its offset; past 1 s the log warns.", []string{"member"}, nil)},
		&certCollector{n: n, desc: prometheus.NewDesc("zrpc_tls_cert_expiry_timestamp_seconds",
			"When this agent's TLS certificate, or the CA that signed it if that is first, expires (Unix time); absent without TLS. "+
				"A certificate the agent signs from the cluster token is renewed with a third of its lifetime left; one from files is the operator's to renew.", nil, nil)},
		&refusalCollector{n: n, desc: prometheus.NewDesc("zrpc_gossip_refused_total",
			"Gossip messages and joins of agents this agent refused, by reason: other_cluster (an agent of another cluster), "+
				"state_before_recovery (an agent holding Raft state from before this cluster's outage recovery), "+
				"recovered_elsewhere (this agent holds that state: its cluster was recovered on another agent), "+
				"name_taken (joining, this agent found its name in use), "+
				"name_conflict (a member's name gossiped at a second address: an agent restarted at a new address, briefly, or two agents under one name, for as long as both run), "+
				"member_limit (a new member while gossip already knows 10,000: made up by someone reaching the gossip port of an unencrypted cluster). "+
				"The log names the agent.", []string{"reason"}, nil)},
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "zrpc_gossip_streams_refused_total",
			Help: "Streams to the gossip port (push/pulls, fallback pings, leave notices) closed as they came because their host held 128 open already: " +
				"a stranger, or a runaway agent, opening streams it does not finish; an agent of the cluster refused this way fails its push/pulls with this one. " +
				"The log's warning \"closed a gossip stream from a host that holds the most it may keep open\" names the host: block it, or restart that agent."},
			func() float64 {
				if g := n.gossip(); g != nil {
					return float64(g.StreamsRefused())
				}
				return 0
			}),
		gauge("zrpc_blob_shard_store_bytes", "Bytes of shard files on this agent.", func() float64 {
			b, _ := n.blobs.Shards().Usage()
			return float64(b)
		}),
		gauge("zrpc_blob_shard_store_shards", "Blocks of shards held on this agent (in its part files).", func() float64 {
			_, c := n.blobs.Shards().Usage()
			return float64(c)
		}),
		gauge("zrpc_blob_blobs", "Blobs in this replica's metadata.", func() float64 { return float64(n.store.FSM().BlobCount()) }),
		gauge("zrpc_blob_handoff_shards", "While this agent leaves the cluster (zrpcctl leave): the blob shards it still holds and hands to the others; 0 otherwise.",
			func() float64 { return float64(n.handoffShards.Load()) }),
		gauge("zrpc_health_checks_running", "gRPC health check runs in progress on this agent, of checks that answered last time (at most 128 at once).",
			func() float64 { return float64(n.health.Stats().ChecksRunning) }),
		gauge("zrpc_health_slow_checks_running", "gRPC health check runs in progress on this agent of checks whose last run timed out (at most 256 at once): servers that take the call and do not answer.",
			func() float64 { return float64(n.health.Stats().SlowChecksRunning) }),
		gauge("zrpc_health_check_results_unwritten", "gRPC checks on this agent whose last result could not be written to the registry (no leader took it): their instances' health is out of date.",
			func() float64 { return float64(n.health.Stats().ChecksUnwritten) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "zrpc_health_ttl_expired_total",
			Help: "Instances this agent, leading, wrote critical because their TTL ran out unrenewed."},
			func() float64 { return float64(n.health.Stats().TTLExpired) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "zrpc_health_critical_removed_total",
			Help: "Instances this agent, leading, removed because they stayed critical past their deregister_critical_after."},
			func() float64 { return float64(n.health.Stats().CriticalRemoved) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "zrpc_agent_stalled_seconds_total",
			Help: "Seconds this agent did not run since it started (stopped, its machine paused, starved of CPU), counted in stalls of 250 ms or more; " +
				"its peers may have taken it for failed meanwhile, and a leader moves its TTL deadlines by it."},
			func() float64 { return n.stalls.Lost().Seconds() }),
		&forwardCollector{n: n, desc: prometheus.NewDesc("zrpc_forward_failures_total",
			"Calls this agent ran on the leader for its clients and itself (writes, consistent reads, TTL renewals) that failed without the leader's answer, by reason: "+
				"no_leader (none known for leader_wait: an election, too few voters reachable, this agent cut off from the leader), "+
				"unreachable (the leader's gRPC API could not be reached), "+
				"deadline (the leader took the call and did not answer before leader_wait or the caller's deadline), "+
				"refused (the leader's gRPC server refused the call: this agent not taken for one of its cluster, a method it does not serve, a gRPC limit). "+
				"The log's warning \"a call this agent forwards to the leader failed\" names the leader and the error.", []string{"reason"}, nil)},
		&freeSpaceCollector{dir: n.dir.path, desc: prometheus.NewDesc("zrpc_data_dir_free_bytes",
			"Bytes still free for the agent on the file system of its data dir; at 0 the Raft log and the shard store refuse writes.", nil, nil)},
	)
	m.reg.MustRegister(n.blobs.Metrics().Collectors()...)
	m.dnsQueries = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "zrpc_dns_queries_total",
		Help: "DNS questions answered, by response code (NOERROR, NXDOMAIN, REFUSED, ...). " +
			"SERVFAIL: the question's records could not be built because other names' builds took every turn (4) for 2 s " +
			"(questions for many names of large services at once); the client asks again. Lasting, it means more such questions than the agent builds answers for: " +
			"spread them over more agents, or raise dns_ttl so that resolvers cache the answers.",
	}, []string{"rcode"})
	// SERVFAIL starts at zero, so that an alert on its increase sees the
	// first of them.
	m.dnsQueries.WithLabelValues("SERVFAIL")
	m.reg.MustRegister(m.dnsQueries)
	return m
}

// freeSpaceCollector reports the free bytes of the data dir's file
// system when scraped; a statfs that fails makes the scrape say why.
type freeSpaceCollector struct {
	dir  string
	desc *prometheus.Desc
}

func (c *freeSpaceCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *freeSpaceCollector) Collect(ch chan<- prometheus.Metric) {
	free, err := diskspace.Free(c.dir)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.desc, err)
		return
	}
	ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(free))
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func (m *metrics) observeApply(start time.Time, err error) {
	if m == nil {
		return
	}
	result := "ok"
	if err != nil {
		result = "error"
	}
	m.apply.WithLabelValues(result).Observe(time.Since(start).Seconds())
}

func (m *metrics) observeRPC(method string, code codes.Code, start time.Time) {
	m.rpcs.WithLabelValues(method, code.String()).Inc()
	m.rpcTime.WithLabelValues(method).Observe(time.Since(start).Seconds())
}

func (m *metrics) observePanic(method string) {
	m.panics.WithLabelValues(method).Inc()
}

func (m *metrics) observeACLRefusal(method string, code codes.Code) {
	m.aclRefused.WithLabelValues(method, code.String()).Inc()
}

// instanceCollector reports instances by health from the counts the
// replica keeps on apply: a scrape costs the same however many instances
// there are. The other collectors read O(1) Raft state or the gossip
// member list.
type instanceCollector struct {
	n    *Node
	desc *prometheus.Desc
}

func (c *instanceCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *instanceCollector) Collect(ch chan<- prometheus.Metric) {
	counts := c.n.store.FSM().HealthCounts()
	for _, h := range []pb.Health{pb.Health_PASSING, pb.Health_WARNING, pb.Health_CRITICAL} {
		v := counts[h]
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(v), healthName(h))
	}
}

func healthName(h pb.Health) string {
	switch h {
	case pb.Health_PASSING:
		return "passing"
	case pb.Health_WARNING:
		return "warning"
	case pb.Health_CRITICAL:
		return "critical"
	}
	return "unknown"
}

type stateCollector struct {
	store *raftstore.Store
	desc  *prometheus.Desc
}

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	cur := c.store.Status().State
	for _, s := range raftstore.States {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, b2f(s == cur), s.String())
	}
}

// quorumCollector reports the voters and how many of them this agent
// cannot reach, read from one look at the configuration and gossip.
type quorumCollector struct {
	n                   *Node
	voters, unreachable *prometheus.Desc
}

func (c *quorumCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.voters; ch <- c.unreachable }

func (c *quorumCollector) Collect(ch chan<- prometheus.Metric) {
	q, err := c.n.quorum()
	if err != nil {
		return // Raft is not running: no configuration to report
	}
	ch <- prometheus.MustNewConstMetric(c.voters, prometheus.GaugeValue, float64(q.Voters))
	ch <- prometheus.MustNewConstMetric(c.unreachable, prometheus.GaugeValue, float64(len(q.Unreachable)))
}

type memberCollector struct {
	n           *Node
	desc, clock *prometheus.Desc
}

func (c *memberCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc; ch <- c.clock }

func (c *memberCollector) Collect(ch chan<- prometheus.Metric) {
	counts := map[string]int{"alive": 0, "suspect": 0, "failed": 0, "left": 0}
	if g := c.n.gossip(); g != nil {
		for _, m := range g.Members() {
			counts[m.Status]++
			if d, ok := g.ClockOffset(m.Name); ok && m.Status == gossip.StatusAlive {
				ch <- prometheus.MustNewConstMetric(c.clock, prometheus.GaugeValue, d.Seconds(), m.Name)
			}
		}
	}
	for status, v := range counts {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(v), status)
	}
}

// certCollector reports when the agent's TLS certificate expires.
type certCollector struct {
	n    *Node
	desc *prometheus.Desc
}

func (c *certCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *certCollector) Collect(ch chan<- prometheus.Metric) {
	if c.n.tls == nil {
		return
	}
	if t := c.n.tls.NotAfter(); !t.IsZero() {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(t.Unix()))
	}
}

// refusalCollector reports the gossip's refusals of members by reason.
type refusalCollector struct {
	n    *Node
	desc *prometheus.Desc
}

func (c *refusalCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *refusalCollector) Collect(ch chan<- prometheus.Metric) {
	g := c.n.gossip()
	if g == nil {
		return
	}
	for reason, v := range g.Refused() {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.CounterValue, float64(v), reason.String())
	}
}

// forwardCollector reports the calls this agent's Forwarder failed to run
// on the leader, by reason, every reason from zero.
type forwardCollector struct {
	n    *Node
	desc *prometheus.Desc
}

func (c *forwardCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *forwardCollector) Collect(ch chan<- prometheus.Metric) {
	if c.n.forward == nil {
		return
	}
	failures := c.n.forward.Failures()
	for _, r := range raftstore.ForwardFailures {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.CounterValue, float64(failures[r]), r.String())
	}
}

// liveness is /healthz's answer: healthy unless the agent stopped its
// Raft node (stopped, Store.StoppedBy), a state it leaves only by a
// restart, which a supervisor probing /healthz (Kubernetes' liveness
// probe) then does.
func liveness(stopped string) (string, bool) {
	if stopped != "" {
		return "unhealthy: Raft node stopped: " + stopped, false
	}
	return "ok", true
}

// probe serves answer's text, with 503 when it is not ok.
func probe(answer func() (string, bool)) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		text, ok := answer()
		if !ok {
			http.Error(w, text, http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, text)
	}
}

// readiness is /readyz's answer: ready while the agent knows a leader;
// otherwise why not (its Raft node stopped, or no leader known and how
// many voters it reaches).
func readiness(st raftstore.Status, quorum func() (raftstore.Quorum, error)) (string, bool) {
	if st.Stopped != "" {
		return "not ready: Raft node stopped: " + st.Stopped, false
	}
	if st.LeaderAddr != "" {
		return "ok: leader " + st.LeaderID, true
	}
	why := "no Raft leader known"
	if q, err := quorum(); err == nil && q.Voters > 0 {
		why += " (" + q.String() + ")"
	}
	return "not ready: " + why, false
}

// startHTTP serves /metrics, /healthz (the process is up and its Raft
// node not stopped by a failure: liveness), /readyz (this
// agent knows a leader, so writes can succeed: readiness), /debug/pprof (its
// cmdline with secret flags redacted), /debug/zrpc/config (the settings,
// secrets redacted) and /debug/zrpc/logs (recent log lines); the /debug
// paths, with ACLs on, only to tokens with operator:read (httpauth.go);
// and the web UI at /ui/ (package ui). On a loopback bind every path
// answers only requests for a loopback name (loopbackOnly).
func (n *Node) startHTTP() error {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(n.metrics.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", probe(func() (string, bool) { return liveness(n.store.StoppedBy()) }))
	mux.HandleFunc("/readyz", probe(func() (string, bool) { return readiness(n.store.Status(), n.quorum) }))
	n.ui = n.newUI()
	mux.Handle(ui.Prefix, n.ui)
	debug := func(path string, h http.HandlerFunc) { mux.Handle(path, n.requireOperatorRead(h)) }
	debug("/debug/pprof/", pprof.Index)
	debug("/debug/pprof/cmdline", serveCmdline)
	debug("/debug/pprof/profile", (&oneProfile{what: "CPU profile", integer: true, serve: pprof.Profile}).ServeHTTP)
	debug("/debug/pprof/symbol", pprof.Symbol)
	debug("/debug/pprof/trace", (&oneProfile{what: "execution trace", serve: pprof.Trace}).ServeHTTP)
	debug("/debug/zrpc/config", n.serveConfig)
	debug("/debug/zrpc/logs", n.logs.serve)
	addr := net.JoinHostPort(n.cfg.HTTPBind, strconv.Itoa(n.cfg.HTTPPort))
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen for HTTP on %s (http_bind, http_port): %w", addr, err)
	}
	n.httpLn.Store(&ln)
	// Bounded as the gRPC port is: each connection holds a goroutine and
	// buffers until its timeouts (internal/httpserve) end it.
	bounded := connlimit.Wrap(ln, n.cfg.MaxConnsPerClient, newConnRefusals(n.log, "HTTP", nil).refused)
	n.http = httpserve.New(loopbackOnly(n.cfg.HTTPBind, mux), slog.NewLogLogger(n.log.Handler(), slog.LevelWarn))
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		if err := n.http.Serve(bounded); err != nil && !errors.Is(err, http.ErrServerClosed) {
			n.log.Error("HTTP server stopped", "err", err)
		}
	}()
	return nil
}
