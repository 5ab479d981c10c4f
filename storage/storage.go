// Package storage is the agent's erasure-coded blob store: it cuts a blob
// into blocks, encodes each block into k data and m parity shards
// (storage/codec), places the shards on k+m distinct agents
// (storage/placement), keeps them in each agent's shard files
// (storage/shardstore) and commits the blob's metadata through Raft. It
// reads blobs back (reconstructing from parity when shards are missing or
// corrupt), repairs lost shards in the background on the leader, scrubs
// local shards for bit rot and collects shards no blob refers to.
//
// storage is not the API layer: node registers its gRPC servers and maps its
// errors; storage sees the cluster only through the Cluster interface.
package storage

import (
	"context"
	"fmt"
	"log/slog"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/zrpcio/zrpc/api/apierr"
	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/internal/warnrate"
	"github.com/zrpcio/zrpc/storage/placement"
	"github.com/zrpcio/zrpc/storage/shardstore"
)

// Errors returned by the blob store; they are the API's sentinels.
var (
	ErrNotFound        = apierr.ErrNotFound
	ErrInvalidArgument = apierr.ErrInvalidArgument
	ErrAlreadyExists   = apierr.ErrAlreadyExists
	ErrNotEnoughShards = apierr.ErrNotEnoughShards
	ErrCorrupt         = apierr.ErrCorrupt
	ErrTooLarge        = apierr.ErrTooLarge
	// ErrStaleRead: this agent's replica cannot vouch for a read.
	ErrStaleRead = apierr.ErrStaleRead
	// ErrOutcomeUnknown: a put's commit was proposed but its outcome could
	// not be learned; Stat tells whether the blob was stored.
	ErrOutcomeUnknown = apierr.ErrOutcomeUnknown
)

// Member is one agent that can hold shards.
type Member struct {
	Name  string
	Zone  string
	Alive bool
	// Full: its shard store has no room for another block's shard; it
	// takes no new shard (puts and repair place none on it), and serves
	// the ones it holds.
	Full bool
	// Room is the room its shard store announces, in bytes (a power of
	// two, rounded down); 0 when not known.
	Room int64
	// Short: its announced room is less than one part of the blob being
	// put; that put places nothing on it (withRoomFor).
	Short bool
	// Leaving: it is leaving the cluster for good and hands its shards
	// off first. It takes no new shard, serves the ones it holds, and
	// repair moves each of them to another agent.
	Leaving bool
}

// Meta is the replicated blob metadata (the Raft state machine).
type Meta interface {
	Blob(name string) *pb.Blob
	BlobByID(id string) *pb.Blob
	Blobs(prefix string) ([]*pb.Blob, uint64)
	// BlobsPage is at most limit blobs under prefix after the name after
	// that keep accepts (nil: all), in name order, the count of all
	// those keep accepts, and the revision (raftstore.FSM.BlobsPage).
	BlobsPage(prefix, after string, limit int, keep func(name string) bool) ([]*pb.Blob, int, uint64)
	PendingBlob(id string) *pb.BlobPending
	PendingBlobs() []*pb.BlobPending
	Nodes() []*pb.Node
	Revision() uint64
	WaitRevision(ctx context.Context, rev uint64) error
}

// Cluster is what the blob store needs from its agent. Methods may be
// called from any goroutine.
type Cluster interface {
	// Self is this agent's name.
	Self() string
	// Address is the gRPC address of the named agent as the registry
	// records it, "" when it records none.
	Address(node string) string
	// Meta is the local replica of the registry.
	Meta() Meta
	// Propose commits a command through the leader and returns its revision.
	Propose(ctx context.Context, cmd *pb.Command) (uint64, error)
	// Shards returns the named agent's Shards API. With waitReady, its
	// calls wait for a connection still in reconnect backoff (the agent
	// just restarted) until their context ends, instead of failing at once.
	Shards(node string, waitReady bool) (pb.ShardsClient, error)
	// Leader returns the blob store's leader-only API as the current
	// leader serves it: each call runs on the leader (this agent's own
	// Store, through LocalLeader, when it leads), waiting for one and
	// following it when it moves, as writes do.
	Leader() LeaderAPI
	// IsLeader reports whether this agent leads.
	IsLeader() bool
	// ConfirmLeader returns nil once this agent is confirmed the leader and
	// its replica holds everything committed: a new leader's replica may
	// still lack entries of the old leader's term (a holder its repair
	// recorded) until its own first entry commits. The leader's answers
	// that let an agent delete data wait for it.
	ConfirmLeader(ctx context.Context) error
	// LeaderRevision asks the leader for the latest committed revision.
	LeaderRevision(ctx context.Context) (uint64, error)
	// CutOff returns the error a write through this agent fails with at
	// once while it is cut off from the leader (a minority side of a
	// partition), nil when it is not. Its gossip's view of which agents
	// are alive is then the minority's: a put asks first, so that the
	// client goes to another agent rather than being refused for too few
	// agents alive.
	CutOff() error
	// GossipAlive is how many agents, this one included, gossip sees
	// alive. The registry records agents a moment after gossip finds them
	// (the leader's reconcile writes them): while it knows fewer alive, the
	// cluster is still forming.
	GossipAlive() int
	// GossipDown reports whether this agent's gossip has declared the
	// named agent failed, or seen it leave. The registry records an
	// agent's failure only through the leader: without a quorum it goes
	// on saying the agent passes, and the blob store would send reads to
	// dead agents and call blobs healthy that cannot be read.
	GossipDown(node string) bool
	// ShardsFull reports whether the named agent says (this one: finds)
	// its shard store has no room for another block's shard.
	ShardsFull(node string) bool
	// ShardRoom is the room the named agent says (this one: finds) its
	// shard store has left, in bytes; 0 when it does not say.
	ShardRoom(node string) int64
	// Leaving reports whether the named agent says (this one: knows) it
	// is leaving the cluster and handing its shards off.
	Leaving(node string) bool
	// CheckRead reports whether this agent's replica may serve a read of
	// consistency c, as the registry's reads check it (raftstore
	// CheckReadContext).
	CheckRead(ctx context.Context, c pb.Consistency) error
}

// LeaderAPI is what only the leader answers, because repair runs there.
// Store.LocalLeader serves it on the leader; NewLeaderClient calls a remote
// leader through its Blobs and Shards APIs.
type LeaderAPI interface {
	// RepairStatus is the state of the leader's repair (see
	// Store.RepairStatus).
	RepairStatus(ctx context.Context, req *pb.RepairStatusRequest) (*pb.RepairStatusResponse, error)
	// ReportShards hands copies of shards found corrupt or lost to repair.
	ReportShards(ctx context.Context, req *pb.ReportShardsRequest) error
	// Referenced tells, for each shard, whether a blob or a pending put
	// refers to it in the leader's replica.
	Referenced(ctx context.Context, req *pb.ReferencedRequest) ([]bool, error)
}

// LocalLeader is this Store's LeaderAPI, for when its agent leads.
func (s *Store) LocalLeader() LeaderAPI { return localLeader{s} }

type localLeader struct{ s *Store }

func (l localLeader) RepairStatus(_ context.Context, req *pb.RepairStatusRequest) (*pb.RepairStatusResponse, error) {
	// LeaderRepairStatusOf, every caller's way here, bounded req.BlobIds.
	return l.s.repairStatus(append([]string{req.GetBlobId()}, req.GetBlobIds()...)), nil
}

func (l localLeader) ReportShards(_ context.Context, req *pb.ReportShardsRequest) error {
	l.s.repair.report(req.Corrupt, req.Reporter)
	return nil
}

func (l localLeader) Referenced(ctx context.Context, req *pb.ReferencedRequest) ([]bool, error) {
	// "Not referenced" lets the asking agent delete the shard: answer it
	// only from a replica that holds every committed holder.
	if err := l.s.cluster.ConfirmLeader(ctx); err != nil {
		return nil, fmt.Errorf("confirm leadership before telling which shards are referenced: %w", err)
	}
	return l.s.referenced(req), nil
}

// NewLeaderClient is the LeaderAPI of a remote leader, called through its
// Blobs and Shards APIs.
func NewLeaderClient(blobs pb.BlobsClient, shards pb.ShardsClient) LeaderAPI {
	return leaderClient{blobs: blobs, shards: shards}
}

type leaderClient struct {
	blobs  pb.BlobsClient
	shards pb.ShardsClient
}

func (c leaderClient) RepairStatus(ctx context.Context, req *pb.RepairStatusRequest) (*pb.RepairStatusResponse, error) {
	return c.blobs.RepairStatus(ctx, req)
}

func (c leaderClient) ReportShards(ctx context.Context, req *pb.ReportShardsRequest) error {
	_, err := c.shards.ReportShards(ctx, req)
	return err
}

func (c leaderClient) Referenced(ctx context.Context, req *pb.ReferencedRequest) ([]bool, error) {
	resp, err := c.shards.Referenced(ctx, req)
	return resp.GetReferenced(), err
}

// Store is one agent's part of the blob store.
type Store struct {
	cfg     Config
	cluster Cluster
	shards  *shardstore.Store
	log     *slog.Logger
	metrics *Metrics
	repair  *repairer

	// work bounds concurrent encoding and decoding, so that blob traffic
	// cannot starve the agent's Raft and gossip goroutines of CPU.
	work chan struct{}
	// formingWait bounds how long a put waits for the registry to record
	// the agents gossip sees alive.
	formingWait time.Duration
	// commitWait bounds how long a put waits for its commit's outcome.
	commitWait time.Duration
	// writing holds the parts (partKey) a WriteShards stream is writing.
	writing sync.Map
	// reported holds the copies this agent reported corrupt or lost lately
	// (peers.go).
	reported recentReports
	// ioWarned lets one warning a minute through about shard reads the
	// disk failed (mapReadErr).
	ioWarned *warnrate.Limiter
	// stuck counts the calls of the shard store that aside stopped
	// waiting for and that have not ended (diskwait.go).
	stuck atomic.Int64
	// passStuck counts the calls a background pass over the shards (the
	// scrubber's, the start-up check, orphan collection) gave up on that
	// have not ended (asideInPass): no pass starts while one has not, so
	// that a disk hung for good holds one of the stuck calls' places, not
	// one more each pass.
	passStuck atomic.Int64

	// wg holds the store's goroutines, its loops' and those a call
	// starts (track); closed, under closeMu, is set once Close has begun.
	wg      sync.WaitGroup
	closeMu sync.Mutex
	closed  bool
	ctx     context.Context
	cancel  context.CancelFunc
}

// New returns a blob store over the local shard files; Start runs its
// background loops.
func New(cfg Config, cluster Cluster, shards *shardstore.Store, metrics *Metrics, log *slog.Logger) *Store {
	cfg = cfg.withDefaults()
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if metrics == nil {
		metrics = NewMetrics()
	}
	s := &Store{
		cfg: cfg, cluster: cluster, shards: shards, log: log, metrics: metrics,
		work:        make(chan struct{}, max(1, runtime.GOMAXPROCS(0)-1)),
		formingWait: formingWait,
		commitWait:  commitWait,
		ioWarned:    warnrate.New(time.Minute, 1, time.Now),
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.repair = newRepairer(s)
	metrics.repair.Store(s.repair)
	return s
}

// Start runs the orphan collector and the scrubber on every agent, and
// once the check of the shards the metadata places here. The repair loop
// runs on the leader only: call RunRepair from the leader hook.
func (s *Store) Start() {
	s.goLoop(s.collectOrphans)
	s.goLoop(s.checkHeldAtStart)
	if s.cfg.ScrubRate > 0 {
		s.goLoop(s.scrub)
	}
}

// Close stops the background loops and waits for them, and for the
// goroutines calls started; a call still running (a request handler the
// agent's gRPC server did not wait for) starts none after it began.
func (s *Store) Close() {
	s.closeMu.Lock()
	s.closed = true
	s.closeMu.Unlock()
	s.cancel()
	s.wg.Wait()
}

// errClosed: a call needed a goroutine of the store after Close began.
var errClosed = fmt.Errorf("%w: this agent's blob store is closed; retry on another agent", apierr.ErrShuttingDown)

// track adds one goroutine to those Close waits for, and reports whether
// it did: once Close has begun it does not, and the caller does without
// the goroutine (errClosed).
func (s *Store) track() bool {
	s.closeMu.Lock()
	defer s.closeMu.Unlock()
	if s.closed {
		return false
	}
	s.wg.Add(1)
	return true
}

func (s *Store) goLoop(f func(ctx context.Context)) {
	if !s.track() {
		return
	}
	go func() {
		defer s.wg.Done()
		f(s.ctx)
	}()
}

// Metrics are the blob store's metrics.
func (s *Store) Metrics() *Metrics { return s.metrics }

// now is this agent's wall clock (Config.Now).
func (s *Store) now() time.Time {
	if s.cfg.Now != nil {
		return s.cfg.Now()
	}
	return time.Now()
}

// Shards is the agent's local shard files.
func (s *Store) Shards() *shardstore.Store { return s.shards }

// coding runs f, erasure coding work, in one of the bounded CPU slots.
func (s *Store) coding(ctx context.Context, f func() error) error {
	select {
	case s.work <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-s.work }()
	return f()
}

// waitRevision waits, at most d, until this replica has applied rev.
func (s *Store) waitRevision(ctx context.Context, rev uint64, d time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	return s.cluster.Meta().WaitRevision(ctx, rev)
}

// catchUp waits (at most 5 s) until this replica has applied what the
// leader has committed: a just-restarted agent's replica starts behind and
// would miss blobs that exist. It fails when no leader answers or the
// replica does not get there in time.
func (s *Store) catchUp(ctx context.Context) error {
	rev, err := s.cluster.LeaderRevision(ctx)
	if err != nil {
		return err
	}
	if err := s.waitRevision(ctx, rev, 5*time.Second); err != nil {
		return fmt.Errorf("%w: this agent's replica is at revision %d, the leader's at %d; retry",
			ErrStaleRead, s.cluster.Meta().Revision(), rev)
	}
	return nil
}

// current returns nil when this replica may answer a DEFAULT read that
// finds nothing, or lists: once it has caught up with the leader, or, with
// no leader to ask, when it passes the registry's DEFAULT read check (it
// has replayed its log and heard from a leader lately). Otherwise it says
// why not: a blob missing from it may well exist.
func (s *Store) current(ctx context.Context) error {
	if s.catchUp(ctx) == nil {
		return nil
	}
	return s.cluster.CheckRead(ctx, pb.Consistency_DEFAULT)
}

// validConsistency checks a read's consistency.
func validConsistency(c pb.Consistency) error {
	if _, ok := pb.Consistency_name[int32(c)]; !ok {
		return fmt.Errorf("%w: consistency %d: want DEFAULT (0), STALE (1) or CONSISTENT (2)", ErrInvalidArgument, c)
	}
	return nil
}

// placeable returns the members that can take new shards, alive, not
// full and not short of room for the put's parts, as placement
// candidates.
func placeable(members []Member) []placement.Node {
	var out []placement.Node
	for _, m := range members {
		if m.Alive && !m.Full && !m.Short && !m.Leaving {
			out = append(out, placement.Node{ID: m.Name, Zone: m.Zone})
		}
	}
	return out
}

// aliveMembers counts the alive members.
func aliveMembers(members []Member) int {
	n := 0
	for _, m := range members {
		if m.Alive {
			n++
		}
	}
	return n
}

// formingWait is how long a put waits at most for the registry to record
// the agents gossip sees alive: a cluster that has just formed records
// them within a second or so.
const formingWait = 5 * time.Second

// awaitMembers returns the members once the registry knows at least as
// many agents alive as gossip does, waiting at most s.formingWait for it:
// right after a cluster forms, gossip (and so `zrpcctl members`) sees
// agents the registry has not recorded yet, and a put would find too few
// agents, or choose its default k+m from too small a cluster. forming
// reports that the wait ran out with the registry still behind.
func (s *Store) awaitMembers(ctx context.Context) (members []Member, forming bool) {
	deadline := time.Now().Add(s.formingWait)
	meta := s.cluster.Meta()
	for {
		members = s.members()
		alive := 0
		for _, m := range members {
			if m.Alive {
				alive++
			}
		}
		if alive >= s.cluster.GossipAlive() {
			return members, false
		}
		left := time.Until(deadline)
		if left <= 0 || ctx.Err() != nil {
			return members, true
		}
		// Wake at the next registry change, or poll: gossip changes
		// do not show in the registry's revision.
		wctx, cancel := context.WithTimeout(ctx, min(left, 100*time.Millisecond))
		meta.WaitRevision(wctx, meta.Revision()+1)
		cancel()
	}
}

// members returns the agents that can hold shards, sorted by name. An
// agent is alive when the registry records it passing and this agent's
// gossip has not declared it failed since: the registry lags gossip by
// the leader's next write, and stops following it while the cluster has
// no leader.
func (s *Store) members() []Member {
	nodes := s.cluster.Meta().Nodes()
	self := s.cluster.Self()
	out := make([]Member, 0, len(nodes))
	for _, n := range nodes {
		alive := n.Health == pb.Health_PASSING && (n.Name == self || !s.cluster.GossipDown(n.Name))
		out = append(out, Member{Name: n.Name, Zone: n.Zone, Alive: alive, Full: s.cluster.ShardsFull(n.Name), Room: s.cluster.ShardRoom(n.Name),
			Leaving: s.cluster.Leaving(n.Name)})
	}
	return out
}
