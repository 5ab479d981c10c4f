package node

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"google.golang.org/grpc"

	"github.com/zrpcio/zrpc/api/apierr"
	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/gossip"
	"github.com/zrpcio/zrpc/storage"
	"github.com/zrpcio/zrpc/storage/shardstore"
)

// openBlobs opens the shard files under the data dir and builds the blob
// store; its repair loop is registered as a leader hook, so this runs
// before Raft starts.
func (n *Node) openBlobs() error {
	shards, err := shardstore.Open(filepath.Join(n.dir.path, "shards"), shardstore.Options{
		Logger: n.log, MaxBytes: n.cfg.ShardMaxBytes, SyncDelay: n.opts.shardSyncDelay,
		WriteFault: n.opts.shardWriteFault, ReadFault: n.opts.shardReadFault,
	})
	if err != nil {
		return fmt.Errorf("open shard store: %w", err)
	}
	bc := n.cfg.blobConfig()
	bc.Now = n.opts.clock
	bc.Lost = n.stalls.Lost
	n.blobs = storage.New(bc, blobCluster{n}, shards, storage.NewMetrics(), n.log.With("component", "blobs"))
	return nil
}

// WithShardSyncDelay delays every fsync of a shard file by what delay
// returns (tests make a slow shard disk with it).
func WithShardSyncDelay(delay func() time.Duration) Option {
	return func(o *options) { o.shardSyncDelay = delay }
}

// WithShardWriteFault fails every write and fsync of a shard file with
// what fault returns, when it returns an error (tests make a full or
// failing shard disk with it: shardstore.Options.WriteFault).
func WithShardWriteFault(fault func() error) Option {
	return func(o *options) { o.shardWriteFault = fault }
}

// WithShardReadFault fails every read of a stored shard block for which
// fault returns an error (tests make unreadable blocks with it:
// shardstore.Options.ReadFault).
func WithShardReadFault(fault func(shardstore.ID) error) Option {
	return func(o *options) { o.shardReadFault = fault }
}

// Blobs is the agent's part of the blob store.
func (n *Node) Blobs() *storage.Store { return n.blobs }

// blobCluster is the agent as the blob store sees it.
type blobCluster struct{ n *Node }

func (c blobCluster) Self() string       { return c.n.cfg.Name }
func (c blobCluster) Meta() storage.Meta { return c.n.store.FSM() }
func (c blobCluster) IsLeader() bool     { return c.n.store.IsLeader() }

func (c blobCluster) ConfirmLeader(ctx context.Context) error {
	return c.n.store.CheckReadContext(ctx, pb.Consistency_CONSISTENT)
}

func (c blobCluster) Address(node string) string {
	return c.n.store.FSM().Node(node).GetGrpcAddress()
}

func (c blobCluster) Propose(ctx context.Context, cmd *pb.Command) (uint64, error) {
	return c.n.propose(ctx, cmd)
}

func (c blobCluster) LeaderRevision(ctx context.Context) (uint64, error) {
	var rev uint64
	err := c.n.forward.OnLeader(ctx,
		func() error { rev = c.n.store.FSM().Revision(); return nil },
		func(ctx context.Context, conn grpc.ClientConnInterface) error {
			resp, err := pb.NewStatusClient(conn).Status(ctx, &pb.StatusRequest{})
			rev = resp.GetCommitIndex()
			return err
		})
	return rev, err
}

func (c blobCluster) CutOff() error { return c.n.forward.CutOff() }

func (c blobCluster) GossipAlive() int {
	alive := 0
	if c.n.gossip() != nil {
		for _, m := range c.n.gossip().Members() {
			if m.Status == gossip.StatusAlive {
				alive++
			}
		}
	}
	return alive
}

func (c blobCluster) CheckRead(ctx context.Context, consistency pb.Consistency) error {
	return c.n.store.CheckReadContext(ctx, consistency)
}

func (c blobCluster) GossipDown(node string) bool {
	m, ok := c.lastKnown(node)
	return ok && (m.Status == gossip.StatusFailed || m.Status == gossip.StatusLeft)
}

func (c blobCluster) ShardsFull(node string) bool {
	if node == c.n.cfg.Name {
		return c.n.shardsFull.Load()
	}
	m, ok := c.lastKnown(node)
	return ok && m.Meta.ShardsFull
}

func (c blobCluster) ShardRoom(node string) int64 {
	if node == c.n.cfg.Name {
		return c.n.shardRoom.Load()
	}
	m, ok := c.lastKnown(node)
	if !ok {
		return 0
	}
	return m.Meta.ShardRoom
}

func (c blobCluster) Leaving(node string) bool {
	if node == c.n.cfg.Name {
		return c.n.leaving.Load()
	}
	m, ok := c.lastKnown(node)
	return ok && m.Meta.Leaving
}

// lastKnown is what this agent's gossip last knew of node, if anything.
func (c blobCluster) lastKnown(node string) (gossip.Member, bool) {
	g := c.n.gossip()
	if g == nil {
		return gossip.Member{}, false
	}
	return g.LastKnown(node)
}

func (c blobCluster) Shards(node string, waitReady bool) (pb.ShardsClient, error) {
	conn, err := c.n.PeerConn(node)
	if err != nil {
		return nil, err
	}
	if waitReady {
		return pb.NewShardsClient(waitReadyConn{conn}), nil
	}
	return pb.NewShardsClient(conn), nil
}

// waitReadyConn makes every call on its connection wait while the
// connection is not ready yet (grpc.WaitForReady).
type waitReadyConn struct{ *grpc.ClientConn }

func (c waitReadyConn) Invoke(ctx context.Context, method string, args, reply any, opts ...grpc.CallOption) error {
	return c.ClientConn.Invoke(ctx, method, args, reply, append(opts, grpc.WaitForReady(true))...)
}

func (c waitReadyConn) NewStream(ctx context.Context, desc *grpc.StreamDesc, method string, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	return c.ClientConn.NewStream(ctx, desc, method, append(opts, grpc.WaitForReady(true))...)
}

// PeerConn returns this agent's shared connection to the named agent's
// gRPC API, the one its own agent-to-agent calls use: calls of the
// agent-only services on it carry this agent's proof of membership. The
// connection belongs to the agent; callers must not close it.
func (n *Node) PeerConn(name string) (*grpc.ClientConn, error) {
	peer := n.store.FSM().Node(name)
	if peer == nil || peer.GrpcAddress == "" {
		return nil, fmt.Errorf("%w: agent %s is not in the cluster", apierr.ErrNotFound, name)
	}
	return n.peers.conn(peer.GrpcAddress)
}

func (c blobCluster) Leader() storage.LeaderAPI { return forwardedLeader(c) }

// forwardedLeader runs each call of the blob store's leader-only API on the
// leader: on this agent's own blob store when it leads, through the
// leader's Blobs and Shards APIs otherwise (raftstore.Forwarder).
type forwardedLeader struct{ n *Node }

// onLeader is how a call runs on the leader: raftstore.Forwarder's
// OnLeader for a read, its Write for a call that changes the leader's
// state (whose failure then says when it certainly went nowhere).
type onLeader func(ctx context.Context, local func() error, remote func(context.Context, grpc.ClientConnInterface) error) error

// read runs f, which only reads, on the leader's API with the context to
// call it in.
func (l forwardedLeader) read(ctx context.Context, f func(context.Context, storage.LeaderAPI) error) error {
	return l.call(ctx, l.n.forward.OnLeader, f)
}

// write is read for f that changes the leader's state.
func (l forwardedLeader) write(ctx context.Context, f func(context.Context, storage.LeaderAPI) error) error {
	return l.call(ctx, l.n.forward.Write, f)
}

func (l forwardedLeader) call(ctx context.Context, on onLeader, f func(context.Context, storage.LeaderAPI) error) error {
	return on(ctx,
		func() error { return f(ctx, l.n.blobs.LocalLeader()) },
		func(ctx context.Context, c grpc.ClientConnInterface) error {
			return f(ctx, storage.NewLeaderClient(pb.NewBlobsClient(c), pb.NewShardsClient(c)))
		})
}

func (l forwardedLeader) RepairStatus(ctx context.Context, req *pb.RepairStatusRequest) (out *pb.RepairStatusResponse, err error) {
	err = l.read(ctx, func(ctx context.Context, api storage.LeaderAPI) (err error) {
		out, err = api.RepairStatus(ctx, req)
		return err
	})
	return out, err
}

func (l forwardedLeader) ReportShards(ctx context.Context, req *pb.ReportShardsRequest) error {
	return l.write(ctx, func(ctx context.Context, api storage.LeaderAPI) error { return api.ReportShards(ctx, req) })
}

func (l forwardedLeader) Referenced(ctx context.Context, req *pb.ReferencedRequest) (out []bool, err error) {
	err = l.read(ctx, func(ctx context.Context, api storage.LeaderAPI) (err error) {
		out, err = api.Referenced(ctx, req)
		return err
	})
	return out, err
}
