package storage

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	"github.com/zrpcio/zrpc/api/apierr"
	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/internal/testlog"
	"github.com/zrpcio/zrpc/raftstore"
	"github.com/zrpcio/zrpc/storage/shardstore"
)

// fakeCluster is one agent's view of a cluster for unit tests: a real
// registry state machine fed in order by Propose (no Raft), this agent as
// the leader, and no peers to connect to.
type fakeCluster struct {
	self string
	fsm  *raftstore.FSM
	// store is the blob store over this cluster: the leader's API is its.
	store *Store

	mu   sync.Mutex
	next uint64
	// gossipAlive is what GossipAlive answers; 0 when unset.
	gossipAlive atomic.Int32
	// down holds the agents GossipDown reports, full those ShardsFull
	// does, leaving those Leaving does; guarded by mu.
	down, full, leaving map[string]bool
	// room holds what ShardRoom reports; guarded by mu.
	room map[string]int64
	// leaderless makes LeaderRevision fail as it does without a leader;
	// readCheck, when set, is what CheckRead answers for DEFAULT reads.
	leaderless atomic.Bool
	readCheck  atomic.Pointer[error]
	// cutOff, when set, is what CutOff answers.
	cutOff atomic.Pointer[error]
	// onGossip, when set, runs at each GossipAlive call.
	onGossip func()
	// intercept, when set, sees each command before it is applied and may
	// change what Propose does.
	intercept func(ctx context.Context, cmd *pb.Command, apply func() (uint64, error)) (uint64, error)
	// afterLeader, when set, runs after each call of the leader's API: what
	// happens on the leader between its answer and the caller acting on it.
	afterLeader func()
	// confirmLeader, when set, is ConfirmLeader: a new leader's barrier.
	confirmLeader func(ctx context.Context) error
	// peer, when set, is Shards: the connection to another agent.
	peer func(node string) (pb.ShardsClient, error)
}

func newFakeCluster(self string) *fakeCluster {
	return &fakeCluster{self: self, fsm: raftstore.NewFSM(64), next: 1}
}

func (f *fakeCluster) Self() string   { return f.self }
func (f *fakeCluster) Meta() Meta     { return f.fsm }
func (f *fakeCluster) IsLeader() bool { return true }
func (f *fakeCluster) CutOff() error {
	if err := f.cutOff.Load(); err != nil {
		return *err
	}
	return nil
}

func (f *fakeCluster) GossipAlive() int {
	if f.onGossip != nil {
		f.onGossip()
	}
	return int(f.gossipAlive.Load())
}

func (f *fakeCluster) GossipDown(node string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.down[node]
}

func (f *fakeCluster) ShardsFull(node string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.full[node]
}

func (f *fakeCluster) ShardRoom(node string) int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.room[node]
}

func (f *fakeCluster) Leaving(node string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.leaving[node]
}

// setLeaving makes Leaving report node as leaving (or not).
func (f *fakeCluster) setLeaving(node string, leaving bool) { f.setFlag(&f.leaving, node, leaving) }

// setShardRoom makes ShardRoom report room for node.
func (f *fakeCluster) setShardRoom(node string, room int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.room == nil {
		f.room = make(map[string]int64)
	}
	f.room[node] = room
}

// setShardsFull makes ShardsFull report node's shard store full (or not).
func (f *fakeCluster) setShardsFull(node string, full bool) { f.setFlag(&f.full, node, full) }

// setGossipDown makes GossipDown report node as failed (or not).
func (f *fakeCluster) setGossipDown(node string, down bool) { f.setFlag(&f.down, node, down) }

// setFlag sets node's entry of the map *m under mu.
func (f *fakeCluster) setFlag(m *map[string]bool, node string, v bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if *m == nil {
		*m = make(map[string]bool)
	}
	(*m)[node] = v
}

func (f *fakeCluster) ConfirmLeader(ctx context.Context) error {
	if f.confirmLeader != nil {
		return f.confirmLeader(ctx)
	}
	return nil
}

func (f *fakeCluster) LeaderRevision(context.Context) (uint64, error) {
	if f.leaderless.Load() {
		return 0, fmt.Errorf("%w: none elected (fake cluster)", apierr.ErrNoLeader)
	}
	return f.fsm.Revision(), nil
}

func (f *fakeCluster) CheckRead(_ context.Context, c pb.Consistency) error {
	if p := f.readCheck.Load(); p != nil && c == pb.Consistency_DEFAULT {
		return *p
	}
	return nil
}

// Address is a made-up address for every agent: the fake has no network.
func (f *fakeCluster) Address(node string) string { return node + ".test:8400" }

func (f *fakeCluster) Shards(node string, _ bool) (pb.ShardsClient, error) {
	if f.peer != nil {
		return f.peer(node)
	}
	return nil, fmt.Errorf("agent %s: this test has no peers", node)
}

// Leader is this agent's own store, as the leader.
func (f *fakeCluster) Leader() LeaderAPI { return fakeLeader{f} }

// fakeLeader is the store's LocalLeader, followed by afterLeader.
type fakeLeader struct{ f *fakeCluster }

func (l fakeLeader) after() {
	if l.f.afterLeader != nil {
		l.f.afterLeader()
	}
}

func (l fakeLeader) RepairStatus(ctx context.Context, req *pb.RepairStatusRequest) (*pb.RepairStatusResponse, error) {
	defer l.after()
	return l.f.store.LocalLeader().RepairStatus(ctx, req)
}

func (l fakeLeader) ReportShards(ctx context.Context, req *pb.ReportShardsRequest) error {
	defer l.after()
	return l.f.store.LocalLeader().ReportShards(ctx, req)
}

func (l fakeLeader) Referenced(ctx context.Context, req *pb.ReferencedRequest) ([]bool, error) {
	defer l.after()
	return l.f.store.LocalLeader().Referenced(ctx, req)
}

func (f *fakeCluster) Propose(ctx context.Context, cmd *pb.Command) (uint64, error) {
	f.mu.Lock()
	icpt := f.intercept
	f.mu.Unlock()
	apply := func() (uint64, error) { return f.apply(cmd) }
	if icpt != nil {
		return icpt(ctx, cmd, apply)
	}
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	return apply()
}

// apply applies cmd as the next committed entry.
func (f *fakeCluster) apply(cmd *pb.Command) (uint64, error) {
	if cmd.Time == 0 { // as the leader stamps its entries
		cmd.Time = time.Now().UnixNano()
	}
	data, err := proto.Marshal(cmd)
	if err != nil {
		return 0, err
	}
	f.mu.Lock()
	idx := f.next
	f.next++
	resp := f.fsm.Apply(&raft.Log{Index: idx, Term: 1, Type: raft.LogCommand, Data: data})
	f.mu.Unlock()
	switch r := resp.(type) {
	case nil:
		return idx, nil
	case error:
		return idx, r
	case raftstore.Duplicate:
		return r.Revision, r.Err
	}
	return idx, fmt.Errorf("unexpected FSM response %T", resp)
}

// setNodes records agents in the registry, alive or failed.
func (f *fakeCluster) setNodes(t testing.TB, alive bool, names ...string) {
	t.Helper()
	health := pb.Health_PASSING
	if !alive {
		health = pb.Health_CRITICAL
	}
	for _, n := range names {
		if _, err := f.apply(&pb.Command{Kind: &pb.Command_NodeUpsert{NodeUpsert: &pb.Node{Name: n, Health: health}}}); err != nil {
			t.Fatal(err)
		}
	}
}

// newTestStore returns a blob store over a fresh shard directory, as agent
// self of a fake cluster whose alive agents are nodes (self among them).
func newTestStore(t testing.TB, cfg Config, self string, nodes ...string) (*Store, *fakeCluster) {
	t.Helper()
	return newTestStoreLog(t, cfg, testlog.New(t, self), self, nodes...)
}

// newTestStoreLog is newTestStore logging to log.
func newTestStoreLog(t testing.TB, cfg Config, log *slog.Logger, self string, nodes ...string) (*Store, *fakeCluster) {
	t.Helper()
	return newTestStoreOpts(t, cfg, log, shardstore.Options{}, self, nodes...)
}

// newTestStoreOpts is newTestStoreLog over a shard store with opts (a
// faulty disk's).
func newTestStoreOpts(t testing.TB, cfg Config, log *slog.Logger, opts shardstore.Options, self string, nodes ...string) (*Store, *fakeCluster) {
	t.Helper()
	fc := newFakeCluster(self)
	fc.setNodes(t, true, nodes...)
	shards, err := shardstore.Open(t.TempDir(), opts)
	if err != nil {
		t.Fatal(err)
	}
	s := New(cfg, fc, shards, nil, log)
	fc.store = s
	t.Cleanup(s.Close)
	return s, fc
}

// errNoRead is what noRead returns: a put read its body although it should
// have been refused from its header alone.
var errNoRead = errors.New("the body was read")

type noRead struct{ t testing.TB }

func (r noRead) Read([]byte) (int, error) {
	r.t.Error("put read its body; it should have been refused from its header")
	return 0, errNoRead
}
