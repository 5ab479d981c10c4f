package resolver

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/resolver"

	"github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/client"
)

// DefaultAgent is the agent a "zrpc" target without agents uses when neither
// [WithAgents] nor the environment variable [AgentsEnv] names any.
const DefaultAgent = "127.0.0.1:8400"

// AgentsEnv names the environment variable holding the default agents, as a
// comma-separated list of host:port. It is read when a resolver is built.
const AgentsEnv = "ZRPC_ADDR"

// Backoff between attempts to re-open a failed watch.
const (
	watchRetryMin = 100 * time.Millisecond
	watchRetryMax = 5 * time.Second
)

// firstListWait bounds how long calls wait, silently, for the first
// instance list: past it the resolver reports an error, and calls fail
// with it (Unavailable) rather than wait for their deadlines, while the
// watch goes on. A watch that fails says why at once; this covers agents
// that take the watch and send nothing (hung, or ending it for a reason
// the client resumes from, again and again). A variable for tests.
var firstListWait = 5 * time.Second

// Option configures the "zrpc" Builder.
type Option func(*options)

type options struct {
	agents     []string
	client     *client.Client
	filter     Filter
	preferZone string
	logger     *slog.Logger
	tls        *tls.Config
	token      string
	routable   func(n int, why string)
}

// WithAgents sets the agents (host:port) of targets that name none. Without
// it they come from [AgentsEnv], else [DefaultAgent].
func WithAgents(agents []string) Option {
	agents = slices.Clone(agents)
	return func(o *options) { o.agents = agents }
}

// WithClient shares c between every resolver the Builder builds, for targets
// that name no agents; the resolvers never close it. Without it each resolver
// opens (and closes) its own client.
func WithClient(c *client.Client) Option {
	return func(o *options) { o.client = c }
}

// WithTLS secures the connections of the clients the resolvers open to
// the agents (see client.Config.TLS); without it they are plaintext.
func WithTLS(c *tls.Config) Option {
	return func(o *options) { o.tls = c }
}

// WithFilter keeps only the instances f accepts. Several filters must all
// accept an instance.
func WithFilter(f Filter) Option {
	return func(o *options) {
		if prev := o.filter; prev != nil {
			o.filter = func(in *zrpcpb.Instance) bool { return prev(in) && f(in) }
			return
		}
		o.filter = f
	}
}

// PreferZone sends calls only to instances in zone while at least one
// routable instance is there, and to all routable instances otherwise. It is
// a preference, not a filter: a zone without instances falls back.
func PreferZone(zone string) Option {
	return func(o *options) { o.preferZone = zone }
}

// WithLogger sets the logger of the resolvers and of the clients they open;
// nil (the default) discards.
func WithLogger(l *slog.Logger) Option {
	return func(o *options) { o.logger = l }
}

// OnRoutable calls f after each change the registry sends with how many
// instances are routable and, when none is, why ("the registry has no
// instance of user.rpc", or the first few instances' health and check
// output); before the first instance list, f is also told (0 routable)
// why none has come (the watch's error, or agents that send nothing).
// Calls of f are never concurrent. Several OnRoutable functions are all
// called. rpc.Dial uses it to say why WithWaitReady found no ready
// instance.
func OnRoutable(f func(n int, why string)) Option {
	return func(o *options) {
		if prev := o.routable; prev != nil {
			o.routable = func(n int, why string) { prev(n, why); f(n, why) }
			return
		}
		o.routable = f
	}
}

// WithToken sets the ACL token the clients the resolvers open send to the
// agents. Without it they send $ZRPC_TOKEN, if set.
func WithToken(token string) Option {
	return func(o *options) { o.token = token }
}

// zrpcBuilder builds resolvers of scheme "zrpc".
type zrpcBuilder struct{ opts options }

// NewBuilder returns the resolver.Builder of scheme [Scheme].
func NewBuilder(opts ...Option) resolver.Builder {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	if o.logger == nil {
		o.logger = slog.New(slog.DiscardHandler)
	}
	return &zrpcBuilder{opts: o}
}

func (b *zrpcBuilder) Scheme() string { return Scheme }

// Build starts watching the target's service. It fails only on a malformed
// target or agent list; an unreachable agent is retried in the background.
func (b *zrpcBuilder) Build(target resolver.Target, cc resolver.ClientConn, _ resolver.BuildOptions) (resolver.Resolver, error) {
	service := target.Endpoint()
	if service == "" || strings.Contains(service, "/") {
		return nil, fmt.Errorf("zrpc resolver: target %q: want zrpc:///<service> or zrpc://<agents>/<service>", target.URL.String())
	}
	c, owned, err := b.client(target.URL.Host)
	if err != nil {
		return nil, fmt.Errorf("zrpc resolver: target %q: %w", target.URL.String(), err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &zrpcResolver{
		cc:       cc,
		client:   c,
		owned:    owned,
		service:  service,
		sel:      selection{filter: b.opts.filter, preferZone: b.opts.preferZone},
		log:      b.opts.logger.With("resolver", Scheme, "service", service),
		routable: b.opts.routable,
		cancel:   cancel,
		done:     make(chan struct{}),
	}
	go r.run(ctx)
	return r, nil
}

// client returns the client for a target whose authority is authority, and
// whether the resolver owns (and must close) it.
func (b *zrpcBuilder) client(authority string) (*client.Client, bool, error) {
	var agents []string
	switch {
	case authority != "":
		agents = strings.Split(authority, ",")
	case b.opts.client != nil:
		return b.opts.client, false, nil
	case len(b.opts.agents) > 0:
		agents = b.opts.agents
	default:
		if agents = EnvAgents(); len(agents) == 0 {
			agents = []string{DefaultAgent}
		}
	}
	token := b.opts.token
	if token == "" {
		token = strings.TrimSpace(os.Getenv("ZRPC_TOKEN"))
	}
	c, err := client.New(client.Config{Endpoints: agents, Logger: b.opts.logger, Token: token, TLS: b.opts.tls})
	if err != nil {
		return nil, false, err
	}
	return c, true, nil
}

// zrpcResolver watches one service and pushes its routable instances to cc.
type zrpcResolver struct {
	cc      resolver.ClientConn
	client  *client.Client
	owned   bool
	service string
	sel     selection
	log     *slog.Logger
	// routable, if set, is told after each update how many instances are
	// routable and, when none is, why (OnRoutable).
	routable func(n int, why string)
	none     bool // the last update had no routable instance; run's goroutine only

	// listed: an instance list has reached cc. Guarded by listedMu, which
	// the first list and firstListWait's error take in turn, so that the
	// error never comes after a list.
	listedMu sync.Mutex
	listed   bool

	cancel    context.CancelFunc
	done      chan struct{}
	closeOnce sync.Once
}

// ResolveNow does nothing: the resolver is driven by the registry watch.
func (r *zrpcResolver) ResolveNow(resolver.ResolveNowOptions) {}

// Close stops the watch goroutine and waits for it. It is safe to call more
// than once.
func (r *zrpcResolver) Close() {
	r.closeOnce.Do(func() {
		r.cancel()
		<-r.done
		if r.owned {
			r.client.Close()
		}
	})
}

// run watches the service until ctx ends. The WatchStream reconnects across
// agents by itself; run re-opens the watch only when it fails for good, from
// the last revision seen, and never clears the addresses because agents are
// unreachable.
func (r *zrpcResolver) run(ctx context.Context) {
	defer close(r.done)
	// failing: the last watch failed (no agent took it): its error, already
	// reported, says why, not the agents' silence.
	var failing atomic.Bool
	silent := time.AfterFunc(firstListWait, func() {
		if ctx.Err() == nil && !failing.Load() {
			r.reportNoList(fmt.Sprintf("no instance list of service %s from the agents within %s: they take the watch but send nothing; calls fail until they do (see the agents' logs and `zrpcctl status`)",
				r.service, firstListWait))
		}
	})
	defer silent.Stop()
	set := newInstanceSet()
	var (
		rev      uint64 // last revision seen
		good     bool   // a registry answer has reached cc
		failures int    // consecutive failed watches, for backoff
	)
	for {
		w, err := r.client.Watch(ctx, r.service, rev)
		failing.Store(err != nil)
		if err == nil {
			err = r.consume(w, set, func() { good, failures = true, 0 })
			rev = max(rev, w.Revision())
			w.Close()
		}
		if ctx.Err() != nil {
			return
		}
		r.log.Warn("registry watch failed, keeping the last instance list", "from_revision", rev, "err", err)
		if !good {
			r.reportNoList(fmt.Sprintf("watch service %s: %v", r.service, err))
		}
		if !sleep(ctx, retryDelay(failures)) {
			return
		}
		failures++
	}
}

// reportNoList says why calls cannot be routed, to cc (calls fail with
// it) and to OnRoutable, while no instance list has reached cc: never
// after one (listedMu).
func (r *zrpcResolver) reportNoList(why string) {
	r.listedMu.Lock()
	defer r.listedMu.Unlock()
	if r.listed {
		return
	}
	r.cc.ReportError(fmt.Errorf("zrpc resolver: %s", why))
	if r.routable != nil {
		r.routable(0, why)
	}
}

// consume applies w's responses to set and sends each resulting address list
// to cc, calling onUpdate after each, until w fails.
func (r *zrpcResolver) consume(w *client.WatchStream, set *instanceSet, onUpdate func()) error {
	for {
		resp, err := w.Recv()
		if err != nil {
			return err
		}
		set.apply(resp)
		addrs := set.addresses(r.sel)
		r.listedMu.Lock()
		r.listed = true
		err = r.cc.UpdateState(resolver.State{Addresses: addrs})
		r.listedMu.Unlock()
		if err != nil {
			// The balancer refused the list (an empty one, say); grpc
			// fails calls meanwhile and the next response replaces it.
			r.log.Debug("update client conn state", "routable", len(addrs), "err", err)
		}
		why := ""
		if len(addrs) == 0 {
			// Calls then fail with Unavailable "last resolver error: ...":
			// say why, rather than grpc's "produced zero addresses".
			why = set.unroutable(r.service, r.sel)
			r.cc.ReportError(fmt.Errorf("zrpc resolver: %s", why))
			if !r.none {
				r.log.Warn("no routable instance: calls fail with Unavailable until one passes", "why", why)
			}
		} else if r.none {
			r.log.Info("routable instances again", "routable", len(addrs))
		}
		r.none = len(addrs) == 0
		if r.routable != nil {
			r.routable(len(addrs), why)
		}
		r.log.Debug("instances updated", "revision", w.Revision(), "routable", len(addrs), "known", len(set.byID))
		onUpdate()
	}
}

// retryDelay returns the wait before re-opening the watch after n
// consecutive failures: it doubles from watchRetryMin up to watchRetryMax and
// is jittered down by up to half, never below watchRetryMin.
func retryDelay(n int) time.Duration {
	d := min(watchRetryMin<<min(n, 16), watchRetryMax)
	return max(d/2+rand.N(d/2+1), watchRetryMin)
}

// sleep waits d and reports whether ctx is still alive.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// EnvAgents returns the agents $ZRPC_ADDR lists, comma-separated (spaces
// around each and empty entries dropped); nil when it lists none.
func EnvAgents() []string {
	var agents []string
	for a := range strings.SplitSeq(os.Getenv(AgentsEnv), ",") {
		if a = strings.TrimSpace(a); a != "" {
			agents = append(agents, a)
		}
	}
	return agents
}
