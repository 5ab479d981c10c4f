package client

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/experimental"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"

	"github.com/zrpcio/zrpc/api/apierr"
	"github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/internal/wirecodec"
)

// maxRecvMsgSize bounds one answer from an agent (a Get of a large service).
const maxRecvMsgSize = 64 << 20

// ErrClosed is returned by calls on a closed Client, WatchStream or Session.
var ErrClosed = errors.New("client: closed")

// Client talks to a set of agents. It is safe for concurrent use.
type Client struct {
	cfg       Config
	log       *slog.Logger
	endpoints []endpoint
	// agents are connections to agents reached by address (agentconns.go).
	agents agentConns
	// cur is the index of the last endpoint that answered.
	cur atomic.Int64

	// closing is cancelled by Close; streams stop with it.
	closing   context.Context
	stop      context.CancelCauseFunc
	closeOnce sync.Once
	closeErr  error
}

// endpoint is one agent and its connection.
type endpoint struct {
	addr     string
	conn     *grpc.ClientConn
	registry zrpcpb.RegistryClient
	status   zrpcpb.StatusClient
	// watches carries the client's watches of this endpoint (watchmany.go).
	watches *watchMux
}

// New validates cfg and returns a Client. It does no I/O: connections are
// made on the first call to each endpoint.
func New(cfg Config) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("validate client config: %w", err)
	}
	cfg = cfg.withDefaults()
	c := &Client{cfg: cfg, log: cfg.Logger}
	c.closing, c.stop = context.WithCancelCause(context.Background())
	for _, addr := range cfg.Endpoints {
		conn, err := grpc.NewClient(addr, dialOptions(cfg)...)
		if err != nil {
			c.Close()
			return nil, fmt.Errorf("create connection to %s: %w", addr, err)
		}
		registry := zrpcpb.NewRegistryClient(conn)
		c.endpoints = append(c.endpoints, endpoint{
			addr:     addr,
			conn:     conn,
			registry: registry,
			status:   zrpcpb.NewStatusClient(conn),
			watches:  newWatchMux(c, addr, registry),
		})
	}
	if len(c.endpoints) > 1 {
		for i := range c.endpoints {
			ep := &c.endpoints[i]
			ep.watches.probe = ep.silent
		}
	}
	return c, nil
}

// Flow-control windows the client grants every agent it connects to:
// what an agent may send ahead of the reader on one stream, and on the
// whole connection. Static, they spare both sides gRPC's dynamic windows:
// the ping by which gRPC measures the link after data arrives, which the
// agent answers (on a connection of registrations, one ping and its
// answer per call: twice the TCP segments of the call itself,
// docs/benchmarks.md), and the window updates of a small window (one per
// 16 KiB frame at gRPC's initial 64 KiB) while shards stream in. The
// agents grant their callers the same. Memory stays within what the
// dynamic windows may grow to: at most connWindow of unread data per
// connection. Variables for tests.
var (
	streamWindow int32 = 4 << 20
	connWindow   int32 = 16 << 20
)

// dialOptions are the options of every connection to an agent; the
// windows come first, so that a test's own dial options, last, may set
// others.
func dialOptions(cfg Config) []grpc.DialOption {
	var dialer []grpc.DialOption
	if cfg.Dialer != nil {
		dialer = append(dialer, grpc.WithContextDialer(cfg.Dialer))
	}
	return slices.Concat(dialer, []grpc.DialOption{
		grpc.WithInitialWindowSize(streamWindow), grpc.WithInitialConnWindowSize(connWindow),
		transportCredentials(cfg),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{
			Time:                10 * time.Second,
			Timeout:             5 * time.Second,
			PermitWithoutStream: true,
		}),
		// The agents' codec and buffer pool: frames are read into pooled
		// buffers that are not zeroed first, and striped puts and reads
		// lend and borrow shard payloads instead of copying them;
		// registrations are encoded and decoded as agents do it
		// (registrycodec.go).
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxRecvMsgSize), grpc.ForceCodecV2(registryCodec{})),
		grpc.WithChainUnaryInterceptor(markUnsent),
		experimental.WithBufferPool(wirecodec.BufferPool()),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff: backoff.Config{
				BaseDelay:  100 * time.Millisecond,
				Multiplier: 1.6,
				Jitter:     0.2,
				MaxDelay:   5 * time.Second,
			},
			MinConnectTimeout: cfg.DialTimeout,
		}),
	}, cfg.dialOptions)
}

// Endpoints returns the agent addresses the client was configured with.
func (c *Client) Endpoints() []string {
	return append([]string(nil), c.cfg.Endpoints...)
}

// Close ends every stream of the client, waits for the goroutines of its
// WatchMany streams and closes its connections. It is safe to call more
// than once; later calls return nil.
func (c *Client) Close() error {
	first := false
	c.closeOnce.Do(func() {
		first = true
		c.stop(ErrClosed)
		var errs []error
		for _, ep := range c.endpoints {
			ep.watches.close()
			if err := ep.conn.Close(); err != nil {
				errs = append(errs, fmt.Errorf("close connection to %s: %w", ep.addr, err))
			}
		}
		errs = append(errs, c.agents.close()...)
		c.closeErr = errors.Join(errs...)
	})
	if !first {
		return nil
	}
	return c.closeErr
}

// call runs fn against the current endpoint and, while it fails with a
// retryable error (see retryable), the agent turns silent or it does not
// answer within Config.AttemptTimeout (attempt), against each other
// endpoint once. The endpoint that answers becomes the current one, so
// the calls after it go there first. Errors are mapped with mapErr so
// that errors.Is works with the apierr sentinels.
//
// Every unary call is retried on Unavailable, writes included: each write
// request carries a request id minted once per call (newRequestID), so an
// agent applies a retried write once and answers it like the first attempt;
// RenewTTL is harmless to repeat, and the ACL writes that carry no id
// tell a retry that finds their write done (acl.go).
//
// A call whose ctx has no deadline ends after Config.CallTimeout, its
// failover included: an agent that takes it and never answers does not
// hold the caller for good.
func (c *Client) call(ctx context.Context, fn func(context.Context, *endpoint) error) error {
	return c.callWithin(ctx, c.cfg.AttemptTimeout, fn)
}

// callSlow is call for a call an agent may rightly hold longer than
// Config.AttemptTimeout (a keyring change waits for every agent, a
// RemovePeer for Raft's configuration change, a put's commit for the
// shards' holders): an attempt is left only when its agent turns silent.
func (c *Client) callSlow(ctx context.Context, fn func(context.Context, *endpoint) error) error {
	return c.callWithin(ctx, 0, fn)
}

// callWithin is call, each attempt bounded by limit (0: none).
func (c *Client) callWithin(ctx context.Context, limit time.Duration, fn func(context.Context, *endpoint) error) error {
	if _, ok := ctx.Deadline(); ok {
		return c.callEach(ctx, fn, c.attemptWithin(limit))
	}
	tctx, cancel := context.WithTimeout(ctx, c.cfg.CallTimeout)
	defer cancel()
	err := c.callEach(tctx, fn, c.attemptWithin(limit))
	if err != nil && ctx.Err() == nil && errors.Is(tctx.Err(), context.DeadlineExceeded) {
		return fmt.Errorf("%w: no answer within the client's call timeout, %s (client.Config.CallTimeout); "+
			"is the agent overloaded or stopped? a context with a deadline gives a call longer", err, c.cfg.CallTimeout)
	}
	return err
}

// callLong is call without Config.CallTimeout, for a call that streams
// data (a blob put, a snapshot) and so may take as long as its data does:
// only ctx bounds it, besides its stream's own checks.
func (c *Client) callLong(ctx context.Context, fn func(context.Context, *endpoint) error) error {
	return c.callEach(ctx, fn, c.attemptWithin(0))
}

// callOpen is call for fn that opens a stream which outlives it and runs
// in fn's context (a read through an agent): that context must not end when fn
// returns, so an agent that turns silent is not left for the next one
// (attempt); the stream's own bounds and the connection's keepalive
// apply.
func (c *Client) callOpen(ctx context.Context, fn func(context.Context, *endpoint) error) error {
	return c.callEach(ctx, fn, func(ctx context.Context, ep *endpoint, fn func(context.Context, *endpoint) error) error {
		return fn(ctx, ep)
	})
}

// callEach is call, running each attempt with try.
func (c *Client) callEach(ctx context.Context, fn func(context.Context, *endpoint) error,
	try func(context.Context, *endpoint, func(context.Context, *endpoint) error) error) error {
	if c.closing.Err() != nil {
		return ErrClosed
	}
	start := int(c.cur.Load())
	var lastErr error
	var lastAddr string
	// tried says what each endpoint left answered, for the error when
	// none answers.
	var tried []string
	// maybe: an attempt failed without saying its write was not applied
	// (apierr.NotApplied), so a later attempt's saying so is not the
	// whole truth.
	maybe := false
	for i := range c.endpoints {
		idx := (start + i) % len(c.endpoints)
		ep := &c.endpoints[idx]
		err := try(ctx, ep, fn)
		if err == nil {
			c.cur.Store(int64(idx))
			return nil
		}
		settle(ctx)
		if c.closing.Err() != nil {
			return ErrClosed
		}
		if ctx.Err() != nil {
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				// The caller's deadline passed while ep held the call
				// (shorter than the attempt's bound): the calls after
				// it go to the next endpoint first.
				c.cur.CompareAndSwap(int64(idx), int64((idx+1)%len(c.endpoints)))
			}
			if len(tried) > 0 {
				return fmt.Errorf("call agent %s: %w (before it: %s)", ep.addr, ctx.Err(), strings.Join(tried, "; "))
			}
			return fmt.Errorf("call agent %s: %w", ep.addr, ctx.Err())
		}
		err = mapErr(err)
		if maybe {
			err = apierr.MaybeApplied(err)
		}
		maybe = maybe || !apierr.IsNotApplied(err)
		if !retryable(err) {
			return err
		}
		c.log.Debug("agent unavailable, trying next", "endpoint", ep.addr, "err", err)
		tried = append(tried, ep.addr+": "+errText(err))
		lastErr, lastAddr = err, ep.addr
	}
	if apierr.Code(lastErr) != "" {
		// The agents answered, with an error of the API (no leader, a
		// stale replica): say what the last one said, not that none answered.
		return fmt.Errorf("agent %s: %w", lastAddr, lastErr)
	}
	return &unansweredError{tried: tried, last: lastErr}
}

// unansweredError is a call that no endpoint answered: it says what each
// attempt met, endpoint by endpoint, and wraps the last one's error (for
// status.Code and errors.Is).
type unansweredError struct {
	tried []string // "host:port: what happened"
	last  error
}

func (e *unansweredError) Error() string { return "no agent answered: " + strings.Join(e.tried, "; ") }

func (e *unansweredError) Unwrap() error { return e.last }

// errText is what err says, without gRPC's "rpc error: code = ... desc ="
// around an agent's or gRPC's message.
func errText(err error) string {
	if s, ok := status.FromError(err); ok {
		return s.Message()
	}
	return err.Error()
}

// settle waits for ctx to end when its deadline has passed. An agent
// whose copy of the deadline passed answers DeadlineExceeded, and that
// answer may come before ctx's own timer has ended it: settled, ctx says
// the deadline was its own, so the call tells it from an agent's error.
func settle(ctx context.Context) {
	if deadline, ok := ctx.Deadline(); ok && !time.Now().Before(deadline) {
		<-ctx.Done()
	}
}

// newRequestID returns the request id of one write call: 128 random bits,
// so that no two calls of any clients share one. Every attempt of the call
// sends it.
func newRequestID() string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// cancelOnClose calls cancel(ErrClosed) when c is closed, and stops watching c
// once ctx (which cancel ends) is done, so that nothing stays registered with c.
func (c *Client) cancelOnClose(ctx context.Context, cancel context.CancelCauseFunc) {
	unhook := context.AfterFunc(c.closing, func() { cancel(ErrClosed) })
	context.AfterFunc(ctx, func() { unhook() })
}
