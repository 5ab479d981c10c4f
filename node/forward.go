package node

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"google.golang.org/grpc"
	grpcbackoff "google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"

	"github.com/zrpcio/zrpc/api/apierr"
	pb "github.com/zrpcio/zrpc/api/zrpcpb"
)

// forwarder sends what must run on the leader (writes, consistent reads, TTL
// renewals) to it, waiting a bounded time while there is none.
type forwarder struct {
	n     *Node
	mu    sync.Mutex
	conns map[string]*grpc.ClientConn // by gRPC address
}

func newForwarder(n *Node) *forwarder {
	return &forwarder{n: n, conns: make(map[string]*grpc.ClientConn)}
}

func (f *forwarder) close() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for addr, c := range f.conns {
		c.Close()
		delete(f.conns, addr)
	}
}

// leaderConn returns a connection to the current leader's gRPC API, or
// ErrNoLeader when the leader or its address is not known yet.
func (f *forwarder) leaderConn() (*grpc.ClientConn, error) {
	_, id := f.n.store.Leader()
	if id == "" {
		return nil, apierr.ErrNoLeader
	}
	node := f.n.store.FSM().Node(id)
	if node == nil || node.GrpcAddress == "" {
		return nil, fmt.Errorf("%w: gRPC address of leader %s not known yet", apierr.ErrNoLeader, id)
	}
	c, err := f.conn(node.GrpcAddress)
	if err != nil {
		return nil, fmt.Errorf("dial leader %s: %w", id, err)
	}
	return c, nil
}

// conn returns the shared connection to a peer's gRPC API.
func (f *forwarder) conn(addr string) (*grpc.ClientConn, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if c, ok := f.conns[addr]; ok {
		return c, nil
	}
	opts := []grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithPerRPCCredentials(peerCredentials{f.n}),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxRecvMessage), grpc.MaxCallSendMsgSize(maxRecvMessage)),
		// Peers restart: reconnect within a second, not after gRPC's
		// default backoff of up to two minutes. (ClientConn's
		// ResetConnectBackoff would do it at once when gossip sees the peer
		// again, but in grpc-go v1.85 it reads the subconn map unlocked: a
		// data race under -race.)
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           grpcbackoff.Config{BaseDelay: 50 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second},
			MinConnectTimeout: 2 * time.Second,
		}),
		// A peer that vanished without closing its connections (power
		// loss, a dropping firewall) is noticed in ~15 s instead of TCP's
		// ~15 min. 10 s is grpc-go's minimum and above the server's
		// EnforcementPolicy MinTime (node/grpcserver.go).
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 10 * time.Second, Timeout: 5 * time.Second, PermitWithoutStream: true}),
	}
	if d := f.n.opts.dialer; d != nil {
		opts = append(opts, grpc.WithContextDialer(d))
	}
	c, err := grpc.NewClient(addr, opts...)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	f.conns[addr] = c
	return c, nil
}

// peerCredentials proves to a peer that a call of its agent-to-agent API
// comes from an agent of the cluster (see checkPeer); other calls carry
// nothing.
type peerCredentials struct{ n *Node }

// GetRequestMetadata is called by gRPC for every call on a peer connection.
func (c peerCredentials) GetRequestMetadata(ctx context.Context, _ ...string) (map[string]string, error) {
	ri, ok := credentials.RequestInfoFromContext(ctx)
	if !ok || !peerOnly(ri.Method) {
		return nil, nil
	}
	secret := c.n.store.FSM().ClusterSecret()
	if secret == nil {
		// A new agent that has not applied the cluster's identity yet:
		// Unavailable, so that a forwarded write waits for it.
		return nil, status.Error(codes.Unavailable, "this agent has not received its cluster's identity yet")
	}
	return map[string]string{clusterAuthKey: clusterAuth(secret, ri.Method)}, nil
}

// RequireTransportSecurity is false: peers talk plaintext gRPC until mTLS.
func (peerCredentials) RequireTransportSecurity() bool { return false }

// onLeader runs local when this agent leads, remote with a connection to the
// leader otherwise. It retries while there is no leader or the leader moves,
// until leader_wait has passed or ctx ends, then returns Unavailable.
func (f *forwarder) onLeader(ctx context.Context, local func() error, remote func(*grpc.ClientConn) error) error {
	wait := f.n.cfg.LeaderWait
	deadline := time.Now().Add(wait)
	var last error
	for attempt := 0; ; attempt++ {
		var err error
		if f.n.store.IsLeader() {
			err = local()
		} else if conn, cerr := f.leaderConn(); cerr != nil {
			err = cerr
		} else {
			err = apierr.FromStatus(remote(conn))
		}
		if !retryOnLeader(err) {
			return err
		}
		last = err
		if time.Now().After(deadline) {
			return fmt.Errorf("%w: no leader answered within %s (last error: %v); is a majority of voters up? check `zrpcctl raft peers`",
				apierr.ErrNoLeader, wait, last)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for a leader: %w (last error: %v)", ctx.Err(), last)
		case <-f.n.ctx.Done():
			return apierr.ErrShuttingDown
		case <-time.After(backoff(attempt)):
		}
	}
}

func backoff(attempt int) time.Duration {
	d := 10 * time.Millisecond << min(attempt, 5)
	return min(d, 200*time.Millisecond)
}

// retryOnLeader reports whether err means "ask the (new) leader again".
func retryOnLeader(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, apierr.ErrNotLeader) || errors.Is(err, apierr.ErrNoLeader) {
		return true
	}
	// The leader's gRPC endpoint is unreachable (it may have just died).
	st, ok := status.FromError(err)
	return ok && st.Code() == codes.Unavailable && !errors.Is(err, apierr.ErrShuttingDown) && !errors.Is(err, apierr.ErrStaleRead)
}

// propose commits cmd through the leader and returns its revision.
//
// The command gets a request id first, the client's when ctx carries one
// (withRequestID): a retry after an ambiguous failure (the leader died after
// replicating it, or the client lost the answer and asked another agent) is
// then applied at most once. A forwarded attempt is bounded by what is left
// of leader_wait (at least a second): a leader that went silent without
// closing its connection fails the write with Unavailable then, not when
// the caller's deadline (if any) or keepalive ends it.
func (n *Node) propose(ctx context.Context, cmd *pb.Command) (uint64, error) {
	if cmd.RequestId == "" {
		cmd.RequestId = requestIDFrom(ctx)
	}
	if cmd.RequestId == "" {
		cmd.RequestId = n.cfg.Name + "-" + newSessionID()
	}
	var rev uint64
	deadline := time.Now().Add(n.cfg.LeaderWait)
	err := n.forward.onLeader(ctx,
		func() (err error) {
			rev, err = n.applyAsLeader(ctx, cmd)
			return err
		},
		func(c *grpc.ClientConn) error {
			// The last attempt gets at least a second, whatever is left.
			actx, cancel := context.WithDeadline(ctx, later(deadline, time.Now().Add(time.Second)))
			defer cancel()
			resp, err := pb.NewInternalClient(c).Apply(actx, cmd)
			if err == nil {
				rev = resp.Revision
			} else if actx.Err() != nil && ctx.Err() == nil {
				err = fmt.Errorf("%w: the leader did not answer within leader_wait (%s)", apierr.ErrNoLeader, n.cfg.LeaderWait)
			}
			return err
		})
	if err == nil && !n.store.IsLeader() {
		// Answer a forwarded write once this replica has applied it too (up
		// to a second), so the caller reads its own write from this agent.
		wctx, cancel := context.WithTimeout(ctx, time.Second)
		n.store.FSM().WaitRevision(wctx, rev)
		cancel()
	}
	return rev, err
}

// applyAsLeader proposes cmd on this agent, the leader. A registration
// carries this leader's registry limits, which every replica then applies.
func (n *Node) applyAsLeader(ctx context.Context, cmd *pb.Command) (uint64, error) {
	if _, ok := cmd.Kind.(*pb.Command_Register); ok {
		cmd.Quota = n.cfg.quota()
	} else {
		cmd.Quota = nil
	}
	start := time.Now()
	rev, err := n.store.Apply(ctx, cmd)
	n.metrics.observeApply(start, err)
	return rev, err
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
