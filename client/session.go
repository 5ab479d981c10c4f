package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/internal/monotime"
)

// DefaultSessionKeepAlive is how often a Session sends a keepalive message.
const DefaultSessionKeepAlive = 5 * time.Second

// SessionOption tunes a Session.
type SessionOption func(*sessionOptions)

type sessionOptions struct {
	keepAlive time.Duration
}

// WithKeepAliveInterval sets how often the session sends a keepalive message
// so that proxies and load balancers keep the idle stream open; zero or less
// sends none. The default is DefaultSessionKeepAlive.
func WithKeepAliveInterval(d time.Duration) SessionOption {
	return func(o *sessionOptions) { o.keepAlive = d }
}

// Session is an open Session stream to one agent. Instances registered through
// it live as long as the stream: when it ends, for any reason (Close, the
// agent or the connection failing), the agent removes them.
//
// A Session does not reconnect by itself: when Done is closed the caller
// opens a new one and registers its instances again (package rpc does so).
// That includes a session the cluster removed while its agent was
// unreachable (the leader reaped the agent): the agent then ends the
// stream, and Err wraps apierr.ErrSessionRequired.
// Its methods are safe for concurrent use.
type Session struct {
	id     string
	addr   string
	log    *slog.Logger
	stream zrpcpb.Registry_SessionClient
	ctx    context.Context // the stream's
	cancel context.CancelCauseFunc

	// out hands requests to writeLoop, the stream's only sender: a send
	// may wait as long as the agent reads nothing (its flow-control
	// window full), and a request must still end with its context, and
	// the keepalives go on checking the agent meanwhile.
	out chan *zrpcpb.SessionRequest

	mu      sync.Mutex
	seq     uint64
	pending map[uint64]chan *zrpcpb.SessionResponse

	done chan struct{}
	err  error // why the stream ended; written before done is closed
	wg   sync.WaitGroup

	// answered is when the agent last answered (a monotonic instant).
	// silent, set when the client has other endpoints to register
	// through, asks the agent's connection for a health check (see
	// keepAliveLoop), and when it goes unanswered moves the client's
	// current endpoint past this one.
	answered atomic.Int64
	silent   func(context.Context) bool

	// cutOff is closed, once (cutOffOnce), when the agent answers a
	// keepalive saying it is cut off from the Raft leader.
	cutOff     chan struct{}
	cutOffOnce sync.Once
}

// sessionAnswerWait is how long a keepalive may go unanswered before a
// session with other endpoints to go to checks whether its agent runs at
// all. A variable for tests.
var sessionAnswerWait = 2 * time.Second

// errSessionSilent ends a session whose agent answered neither a
// keepalive nor a health check.
var errSessionSilent = errors.New("the agent answered neither a keepalive nor a health check")

// Session opens a session stream on the first endpoint that accepts it.
// owner names the process for operators ("user-svc pid 4242"). ctx bounds the
// opening only; the session lives until Close, Client.Close or a failure.
func (c *Client) Session(ctx context.Context, owner string, opts ...SessionOption) (*Session, error) {
	o := sessionOptions{keepAlive: DefaultSessionKeepAlive}
	for _, opt := range opts {
		opt(&o)
	}
	var s *Session
	err := c.call(ctx, func(ctx context.Context, ep *endpoint) (err error) {
		s, err = c.openSession(ctx, ep, owner)
		return err
	})
	if err != nil {
		return nil, err
	}
	s.wg.Add(2)
	go s.readLoop()
	go s.writeLoop()
	if o.keepAlive > 0 {
		s.wg.Add(1)
		go s.keepAliveLoop(o.keepAlive)
	}
	c.log.Debug("session opened", "session", s.id, "endpoint", s.addr, "owner", owner)
	return s, nil
}

// openSession opens the stream on ep and waits for the answer to open.
func (c *Client) openSession(ctx context.Context, ep *endpoint, owner string) (*Session, error) {
	sctx, cancel := context.WithCancelCause(c.closing)
	stop := context.AfterFunc(ctx, func() { cancel(context.Cause(ctx)) })
	defer stop()
	stream, err := ep.registry.Session(sctx)
	if err != nil {
		cancel(err)
		return nil, err
	}
	// With other endpoints to go to, an agent cut off from the leader
	// refuses the session at once rather than after its leader_wait.
	open := &zrpcpb.SessionRequest{Seq: 1, Kind: &zrpcpb.SessionRequest_Open{Open: &zrpcpb.SessionOpen{
		Owner: owner, RequireLeader: len(c.endpoints) > 1}}}
	// On io.EOF the stream is broken and Recv reports why.
	if err := stream.Send(open); err != nil && !errors.Is(err, io.EOF) {
		cancel(err)
		return nil, err
	}
	resp, err := stream.Recv()
	if err == nil && resp.GetError() != nil {
		err = fromDetail(resp.GetError())
	}
	if err != nil {
		cancel(err)
		return nil, err
	}
	// From here the stream outlives ctx; when ctx ended first, the stream
	// ended with it, and so did the session.
	if !stop() {
		err := fmt.Errorf("session %s on agent %s ended as it opened: %w", resp.GetSession(), ep.addr, context.Cause(ctx))
		cancel(err)
		return nil, err
	}
	var silent func(context.Context) bool
	if len(c.endpoints) > 1 {
		silent = func(ctx context.Context) bool {
			if !ep.silent(ctx) {
				return false
			}
			// The next call (the new session) starts at the next endpoint.
			for i := range c.endpoints {
				if &c.endpoints[i] == ep {
					c.cur.CompareAndSwap(int64(i), int64((i+1)%len(c.endpoints)))
				}
			}
			return true
		}
	}
	return &Session{
		silent:  silent,
		id:      resp.GetSession(),
		addr:    ep.addr,
		log:     c.log,
		stream:  stream,
		ctx:     sctx,
		cancel:  cancel,
		seq:     1,
		pending: make(map[uint64]chan *zrpcpb.SessionResponse),
		out:     make(chan *zrpcpb.SessionRequest),
		done:    make(chan struct{}),
		cutOff:  make(chan struct{}),
	}, nil
}

// ID returns the session id the agent assigned.
func (s *Session) ID() string { return s.id }

// CutOff returns a channel closed when the session's agent answers a
// keepalive saying it is cut off from the Raft leader (on the minority
// side of a partition): the cluster then sees the agent failed and the
// session's instances critical, while the session goes on. An owner with
// other agents to go to opens a session there (Client.Session refuses
// agents that are cut off too), registers again, and closes this one
// (package rpc does so).
func (s *Session) CutOff() <-chan struct{} { return s.cutOff }

// Done is closed when the stream has ended.
func (s *Session) Done() <-chan struct{} { return s.done }

// Err returns why the stream ended (ErrClosed after Close), or nil while it
// is open.
func (s *Session) Err() error {
	select {
	case <-s.done:
		return s.err
	default:
		return nil
	}
}

// Close ends the stream; the agent then removes the session's instances. It
// waits for the session's goroutines and is safe to call more than once.
func (s *Session) Close() error {
	s.cancel(ErrClosed)
	s.wg.Wait()
	return nil
}

// Register registers inst bound to the session and returns it as stored. When
// ctx ends first, the agent may still apply the registration.
func (s *Session) Register(ctx context.Context, inst *zrpcpb.Instance) (*zrpcpb.Instance, error) {
	resp, err := s.request(ctx, &zrpcpb.SessionRequest{
		Kind: &zrpcpb.SessionRequest_Register{Register: &zrpcpb.RegisterRequest{Instance: inst}},
	})
	if err != nil {
		return nil, err
	}
	return resp.GetInstance(), nil
}

// Deregister removes an instance of the session.
func (s *Session) Deregister(ctx context.Context, service, id string) error {
	_, err := s.request(ctx, &zrpcpb.SessionRequest{
		Kind: &zrpcpb.SessionRequest_Deregister{Deregister: &zrpcpb.DeregisterRequest{Service: service, Id: id}},
	})
	return err
}

// request sends req with a fresh seq and waits for the response with that seq.
func (s *Session) request(ctx context.Context, req *zrpcpb.SessionRequest) (*zrpcpb.SessionResponse, error) {
	if err := s.Err(); err != nil {
		return nil, err
	}
	ch := make(chan *zrpcpb.SessionResponse, 1)
	s.mu.Lock()
	s.seq++
	req.Seq = s.seq
	s.pending[req.Seq] = ch
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.pending, req.Seq)
		s.mu.Unlock()
	}()
	select {
	case s.out <- req:
	case <-s.done:
		return nil, s.err
	case <-ctx.Done():
		return nil, fmt.Errorf("session %s on agent %s: %w (not sent: the agent has not read the requests before it)", s.id, s.addr, ctx.Err())
	}
	select {
	case resp := <-ch:
		return resp, fromDetail(resp.GetError())
	case <-s.done:
		select {
		case resp := <-ch: // answered just before the stream ended
			return resp, fromDetail(resp.GetError())
		default:
			return nil, s.err
		}
	case <-ctx.Done():
		return nil, fmt.Errorf("session %s on agent %s: %w (the agent may still apply the request)", s.id, s.addr, ctx.Err())
	}
}

// writeLoop is the only sender on the stream: it sends what request and
// keepAliveLoop hand it until the stream ends, which also ends a send
// that waits for the agent to read.
func (s *Session) writeLoop() {
	defer s.wg.Done()
	for {
		select {
		case req := <-s.out:
			// A failed Send means the stream is broken: readLoop
			// reports why.
			_ = s.stream.Send(req)
		case <-s.ctx.Done():
			return
		}
	}
}

// readLoop is the only reader of the stream: it hands each response to the
// request waiting for its seq and ends the session when the stream fails.
func (s *Session) readLoop() {
	defer s.wg.Done()
	for {
		resp, err := s.stream.Recv()
		if err != nil {
			s.finish(err)
			return
		}
		s.answered.Store(monotime.Now())
		if why := resp.GetCutOff(); why != "" {
			s.cutOffOnce.Do(func() {
				s.log.Warn("session's agent is cut off from the Raft leader", "session", s.id, "endpoint", s.addr, "why", why)
				close(s.cutOff)
			})
		}
		s.mu.Lock()
		ch, ok := s.pending[resp.GetSeq()]
		delete(s.pending, resp.GetSeq())
		s.mu.Unlock()
		if ok {
			ch <- resp // buffered; each seq is answered once
		}
	}
}

// finish records why the stream ended and closes done.
func (s *Session) finish(err error) {
	switch {
	case errors.Is(context.Cause(s.ctx), ErrClosed):
		err = ErrClosed
	case errors.Is(context.Cause(s.ctx), errSessionSilent):
		err = fmt.Errorf("session %s on agent %s: %w (within %s and %s)", s.id, s.addr, errSessionSilent, sessionAnswerWait, probeTimeout)
	case errors.Is(err, io.EOF):
		err = fmt.Errorf("session %s: agent %s ended the stream", s.id, s.addr)
	default:
		err = fmt.Errorf("session %s on agent %s: %w", s.id, s.addr, mapErr(err))
	}
	if !errors.Is(err, ErrClosed) {
		s.log.Info("session ended", "session", s.id, "endpoint", s.addr, "err", err)
	}
	s.err = err
	s.cancel(err)
	close(s.done)
}

// keepAliveLoop sends a keepalive every interval until the stream ends. A
// failed send is left to readLoop, which sees the same broken stream.
//
// An agent that is stopped, or cut off by a network that drops its
// packets, keeps the stream open: nothing fails until the connection's
// keepalive gives up (15 s), while the cluster marks the agent failed in
// about 5 s and the instances registered through it critical. So, with
// other endpoints to go to (silent set), a keepalive that nothing has
// answered within sessionAnswerWait has the agent asked for a health
// check on the same connection; unanswered too, the session ends
// (errSessionSilent), and its owner registers again elsewhere. The
// agent answers a session's requests in order, so a keepalive behind a
// registration that waits for an election is late without the agent
// being silent: the health check tells the two apart.
func (s *Session) keepAliveLoop(interval time.Duration) {
	defer s.wg.Done()
	t := time.NewTicker(interval)
	defer t.Stop()
	var check <-chan time.Time // a keepalive's answer is due
	var sentAt int64
	for {
		select {
		case <-s.done:
			return
		case <-t.C:
			s.mu.Lock()
			s.seq++
			seq := s.seq
			s.mu.Unlock()
			now := monotime.Now()
			// A send still waiting for the agent to read stands in for
			// this keepalive, and its answer is due all the same.
			select {
			case s.out <- &zrpcpb.SessionRequest{Seq: seq, Kind: &zrpcpb.SessionRequest_Keepalive{Keepalive: &zrpcpb.SessionKeepAlive{}}}:
			default:
			}
			if s.silent != nil && check == nil {
				sentAt, check = now, time.After(sessionAnswerWait)
			}
		case <-check:
			check = nil
			if s.answered.Load() >= sentAt || !s.silent(s.ctx) {
				continue
			}
			s.log.Info("session's agent answers neither keepalives nor health checks; ending the session so that it is opened elsewhere",
				"session", s.id, "endpoint", s.addr)
			s.cancel(errSessionSilent)
			return
		}
	}
}
