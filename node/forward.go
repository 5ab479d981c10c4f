package node

import (
	"context"
	"fmt"
	"sync"
	"time"

	"google.golang.org/grpc"
	grpcbackoff "google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/experimental"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/zrpcio/zrpc/acl"
	"github.com/zrpcio/zrpc/api/apierr"
	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/internal/wirecodec"
	"github.com/zrpcio/zrpc/node/grpcapi"
)

// peerConns are this agent's shared connections to its peers' gRPC APIs,
// by address; calls of the agent-to-agent API on them carry this agent's
// proof of membership (peerCredentials). Leader forwarding
// (raftstore.Forwarder) dials through them.
type peerConns struct {
	n      *Node
	mu     sync.Mutex
	conns  map[string]*grpc.ClientConn // by gRPC address
	closed bool                        // close was called: no new connection
}

func newPeerConns(n *Node) *peerConns {
	return &peerConns{n: n, conns: make(map[string]*grpc.ClientConn)}
}

func (f *peerConns) close() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	for addr, c := range f.conns {
		c.Close()
		delete(f.conns, addr)
	}
}

// errPeerConnsClosed: the agent is shutting down and makes no new
// connection to a peer.
var errPeerConnsClosed = fmt.Errorf("%w: no new connection to a peer", apierr.ErrShuttingDown)

// dial is conn as raftstore.Forwarder's Dialer.
func (f *peerConns) dial(_ context.Context, addr string) (grpc.ClientConnInterface, error) {
	return f.conn(addr)
}

// conn returns the shared connection to a peer's gRPC API.
func (f *peerConns) conn(addr string) (*grpc.ClientConn, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if c, ok := f.conns[addr]; ok {
		return c, nil
	}
	if f.closed {
		// A connection made now would be closed by no one.
		return nil, errPeerConnsClosed
	}
	opts := []grpc.DialOption{
		f.n.peerTransport(),
		grpc.WithPerRPCCredentials(peerCredentials{n: f.n, callee: addr}),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxRecvMessage), grpc.MaxCallSendMsgSize(maxRecvMessage)),
		// Shards go to peers by reference and come back into pooled buffers.
		grpc.WithDefaultCallOptions(grpc.ForceCodecV2(peerCodec{})),
		experimental.WithBufferPool(wirecodec.BufferPool()),
		grpc.WithChainUnaryInterceptor(wirecodec.ReadInto),
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
	// Shards a peer answers stream in static windows, the server's.
	opts = append(opts, grpcapi.PeerWindows()...)
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

// peerCredentials proves to the peer at callee that a call comes from an
// agent of the cluster (grpcapi/agentproof.go; with ACLs on it also grants
// the caller acl.AgentAuthorizer's permissions), and passes on the ACL
// token of the client a call is made for (a forwarded read or
// remove-peer), so that the peer authorizes the client, not this agent.
type peerCredentials struct {
	n      *Node
	callee string // the peer's gRPC address, as dialled
}

// registryOverheadsVersion is the state machine version that brought
// Quota.registry_overheads: registrations carry it once every Raft server
// counts max_registry_bytes so.
const registryOverheadsVersion = 5

// boundProofVersion is the state machine version (raftstore.FSMVersion)
// of the first builds that send and check agent proofs bound to the
// agent called.
const boundProofVersion = 5

// unboundProofs reports whether an agent proof of older builds, the same
// for every callee, is still sent and accepted: while a Raft server's
// build predates boundProofVersion (a rolling upgrade).
func (n *Node) unboundProofs() bool { return !n.store.ClusterAt(boundProofVersion) }

// GetRequestMetadata is called by gRPC for every call on a peer connection.
func (c peerCredentials) GetRequestMetadata(ctx context.Context, _ ...string) (map[string]string, error) {
	ri, ok := credentials.RequestInfoFromContext(ctx)
	if !ok {
		return nil, nil
	}
	md := make(map[string]string, 3)
	if tok := metadata.ValueFromIncomingContext(ctx, acl.AuthorizationKey); len(tok) == 1 {
		md[acl.AuthorizationKey] = tok[0]
	}
	secret := c.n.store.FSM().ClusterSecret()
	if secret == nil {
		if peerOnly(ri.Method) {
			// A new agent that has not applied the cluster's identity yet:
			// Unavailable, so that a forwarded write waits for it.
			return nil, status.Error(codes.Unavailable, "this agent has not received its cluster's identity yet")
		}
		return md, nil
	}
	md[agentProofKey] = agentProof(secret, ri.Method, c.callee)
	if c.n.unboundProofs() {
		md[clusterAuthKey] = clusterAuth(secret, ri.Method)
	}
	return md, nil
}

// RequireTransportSecurity is false: peers talk plaintext gRPC until mTLS.
func (peerCredentials) RequireTransportSecurity() bool { return false }

// propose commits cmd through the leader (raftstore.Forwarder.Apply) and
// returns its revision.
//
// The command gets a request id first, the client's when ctx carries one
// (withRequestID): a retry after an ambiguous failure (the leader died after
// replicating it, or the client lost the answer and asked another agent) is
// then applied at most once.
func (n *Node) propose(ctx context.Context, cmd *pb.Command) (uint64, error) {
	if cmd.RequestId == "" {
		cmd.RequestId = requestIDFrom(ctx)
	}
	if cmd.RequestId == "" {
		cmd.RequestId = n.cfg.Name + "-" + newSessionID()
	}
	n.store.DropUnsupported(cmd) // the leader may be of an older build
	return n.forward.Apply(ctx, cmd)
}

// healthOutputsVersion is the state machine version that brought
// Quota.health_outputs: health changes carry the limits once every Raft
// server bounds health outputs by them.
const healthOutputsVersion = 6

// applyAsLeader proposes cmd on this agent, the leader. A registration
// and a health change carry this leader's registry limits, which every
// replica then applies (a health change's output is cut to what they
// leave room for, raftstore/quota.go).
func (n *Node) applyAsLeader(ctx context.Context, cmd *pb.Command) (uint64, error) {
	switch cmd.Kind.(type) {
	case *pb.Command_Register:
		cmd.Quota = n.cfg.quota()
		cmd.Quota.RegistryOverheads = n.store.ClusterAt(registryOverheadsVersion)
	case *pb.Command_SetHealth:
		if healthOutputs := n.store.ClusterAt(healthOutputsVersion); healthOutputs {
			cmd.Quota = n.cfg.quota()
			cmd.Quota.RegistryOverheads = n.store.ClusterAt(registryOverheadsVersion)
			cmd.Quota.HealthOutputs = true
		} else {
			cmd.Quota = nil
		}
	default:
		cmd.Quota = nil
	}
	start := time.Now()
	rev, err := n.store.Apply(ctx, cmd)
	n.metrics.observeApply(start, err)
	return rev, err
}
