package storage

import (
	"context"
	"errors"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"

	"github.com/zrpcio/zrpc/api/apierr"
	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/internal/testlog"
	"github.com/zrpcio/zrpc/internal/testwait"
	"github.com/zrpcio/zrpc/storage/codec"
	"github.com/zrpcio/zrpc/storage/shardstore"
)

// hangingPeer answers PutShard, SyncShards and HeldShards after delay, or, with
// delay < 0, not until the call ends (a stopped agent whose kernel still
// holds the connection open).
type hangingPeer struct {
	pb.ShardsClient // only PutShard, SyncShards and HeldShards are called
	delay           time.Duration
}

func (p hangingPeer) wait(ctx context.Context) error {
	if p.delay < 0 {
		<-ctx.Done()
		return status.FromContextError(ctx.Err()).Err()
	}
	select {
	case <-time.After(p.delay):
		return nil
	case <-ctx.Done():
		return status.FromContextError(ctx.Err()).Err()
	}
}

func (p hangingPeer) PutShard(ctx context.Context, _ *pb.PutShardRequest, _ ...grpc.CallOption) (*pb.PutShardResponse, error) {
	return &pb.PutShardResponse{}, p.wait(ctx)
}

func (p hangingPeer) SyncShards(ctx context.Context, _ *pb.SyncShardsRequest, _ ...grpc.CallOption) (*pb.SyncShardsResponse, error) {
	return &pb.SyncShardsResponse{Shards: 1}, p.wait(ctx)
}

func (p hangingPeer) HeldShards(ctx context.Context, _ *pb.HeldShardsRequest, _ ...grpc.CallOption) (*pb.HeldShardsResponse, error) {
	return &pb.HeldShardsResponse{}, p.wait(ctx)
}

func gossipPollFor(t *testing.T, d time.Duration) {
	old := gossipPoll
	gossipPoll = d
	t.Cleanup(func() { gossipPoll = old })
}

// A shard put, sync or held-shards question waiting on a peer that answers nothing ends when
// gossip declares the peer failed, not at ShardTimeout (an hour here).
func TestPeerCallsEndWhenGossipDeclaresThePeerFailed(t *testing.T) {
	gossipPollFor(t, 20*time.Millisecond)
	s, fc := newTestStore(t, Config{ShardTimeout: time.Hour}, "n1", "n1", "n2")
	fc.peer = func(string) (pb.ShardsClient, error) { return hangingPeer{delay: -1}, nil }
	ref := &pb.ShardRef{BlobId: "0123456789abcdef0123456789abcdef", Block: 0, Index: 1}
	calls := map[string]func(context.Context) error{
		"put": func(ctx context.Context) error {
			return s.putShard(ctx, "n2", ref, Scheme{K: 2, M: 1}, 4096, 4096, 0, make([]byte, 2048), true)
		},
		"sync": func(ctx context.Context) error {
			_, err := s.syncShards(ctx, "n2", ref.BlobId, nil)
			return err
		},
		"held": func(ctx context.Context) error {
			_, err := s.heldShards(ctx, "n2", ref.BlobId, []uint32{1})
			return err
		},
	}
	for name, call := range calls {
		fc.setGossipDown("n2", false)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		done := make(chan error, 1)
		go func() { done <- call(ctx) }()
		time.Sleep(100 * time.Millisecond)
		select {
		case err := <-done:
			t.Fatalf("%s: returned %v while the peer was still thought alive", name, err)
		default:
		}
		fc.setGossipDown("n2", true)
		err := <-done
		if ctx.Err() != nil {
			t.Fatalf("%s: waited for its deadline: %v", name, err)
		}
		if !errors.Is(err, errPeerDown) {
			t.Fatalf("%s: %v, want errPeerDown", name, err)
		}
		cancel()
	}
}

// A slow peer that gossip sees alive is waited for.
func TestPeerCallsWaitForASlowPeerGossipSeesAlive(t *testing.T) {
	gossipPollFor(t, 20*time.Millisecond)
	s, fc := newTestStore(t, Config{ShardTimeout: time.Hour}, "n1", "n1", "n2")
	fc.peer = func(string) (pb.ShardsClient, error) { return hangingPeer{delay: 300 * time.Millisecond}, nil }
	ref := &pb.ShardRef{BlobId: "0123456789abcdef0123456789abcdef", Block: 0, Index: 1}
	if err := s.putShard(context.Background(), "n2", ref, Scheme{K: 2, M: 1}, 4096, 4096, 0, make([]byte, 2048), true); err != nil {
		t.Fatalf("put to a slow peer: %v", err)
	}
	if _, err := s.syncShards(context.Background(), "n2", ref.BlobId, nil); err != nil {
		t.Fatalf("sync on a slow peer: %v", err)
	}
	if _, err := s.heldShards(context.Background(), "n2", ref.BlobId, []uint32{1}); err != nil {
		t.Fatalf("held shards of a slow peer: %v", err)
	}
}

// syncCounter is a peer's Shards API that answers each SyncShards as
// if every shard it names was staged, and records how many it named.
type syncCounter struct {
	pb.ShardsClient // only SyncShards is called
	sizes           []int
}

func (p *syncCounter) SyncShards(_ context.Context, req *pb.SyncShardsRequest, _ ...grpc.CallOption) (*pb.SyncShardsResponse, error) {
	p.sizes = append(p.sizes, len(req.Shards))
	return &pb.SyncShardsResponse{Shards: uint32(len(req.Shards))}, nil
}

// A sync naming more shards than one request carries (a put's of a blob
// of many small blocks) goes to a peer in several, and counts what they
// all made durable; one naming none still asks for every staged shard.
func TestASyncOfMoreShardsThanOneRequestCarriesGoesInSeveral(t *testing.T) {
	s, fc := newTestStore(t, Config{}, "n1", "n1", "n2")
	peer := &syncCounter{}
	fc.peer = func(string) (pb.ShardsClient, error) { return peer, nil }
	id := "0123456789abcdef0123456789abcdef"
	refs := make([]*pb.ShardRef, 2*maxSyncShardRefs+3)
	for b := range refs {
		refs[b] = &pb.ShardRef{BlobId: id, Block: uint32(b)}
	}
	if n, err := s.syncShards(context.Background(), "n2", id, refs); err != nil || n != len(refs) {
		t.Fatalf("sync of %d shards = %d, %v; want all of them", len(refs), n, err)
	}
	if want := []int{maxSyncShardRefs, maxSyncShardRefs, 3}; !slices.Equal(peer.sizes, want) {
		t.Fatalf("SyncShards requests of %v shards, want %v", peer.sizes, want)
	}
	peer.sizes = nil
	if _, err := s.syncShards(context.Background(), "n2", id, nil); err != nil || !slices.Equal(peer.sizes, []int{0}) {
		t.Fatalf("sync of every staged shard: %v, requests of %v shards; want one naming none", err, peer.sizes)
	}
}

// deleteWatcher is a peer's Shards API whose DeleteShards hangs until
// the call ends (hang) or counts the request (delivered).
type deleteWatcher struct {
	pb.ShardsClient // only DeleteShards is called
	hang            bool
	delivered       *atomic.Int32
}

func (p deleteWatcher) DeleteShards(ctx context.Context, _ *pb.DeleteShardsRequest, _ ...grpc.CallOption) (*pb.DeleteShardsResponse, error) {
	if p.hang {
		<-ctx.Done()
		return nil, status.FromContextError(ctx.Err()).Err()
	}
	p.delivered.Add(1)
	return &pb.DeleteShardsResponse{}, nil
}

// A shard delete reaches the agents after one that hangs (a stopped
// agent gossip has not declared failed yet) while that one is still
// waited for: one hung agent does not use up the others' budget.
func TestShardDeleteReachesAgentsAfterAHungOne(t *testing.T) {
	s, fc := newTestStore(t, Config{ShardTimeout: time.Hour}, "n1", "n1", "n2", "n3")
	var delivered atomic.Int32
	fc.peer = func(node string) (pb.ShardsClient, error) {
		return deleteWatcher{hang: node == "n2", delivered: &delivered}, nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.deleteShardsOn(ctx, []string{"n2", "n3"}, []string{"0123456789abcdef0123456789abcdef"}, 0)
	}()
	t.Cleanup(func() { cancel(); <-done })
	testwait.For(t, 10*time.Second, "the delete to reach n3 while n2 hangs", func() bool { return delivered.Load() == 1 })
}

// A shard this agent stages on its own disk while the disk hangs (in a
// write, a directory fsync) fails once its caller stops waiting, rather
// than holding the put or repair for as long as the disk hangs; and once
// the disk answers, nothing of that shard stays staged or counted.
func TestOwnShardStagingEndsWhenItsCallerStopsWaiting(t *testing.T) {
	release := make(chan struct{})
	var released atomic.Bool
	opts := shardstore.Options{WriteFault: func() error {
		if !released.Load() {
			<-release
		}
		return nil
	}}
	s, _ := newTestStoreOpts(t, Config{ShardTimeout: time.Hour}, testlog.New(t, "n1"), opts, "n1", "n1", "n2")
	t.Cleanup(func() {
		if released.CompareAndSwap(false, true) {
			close(release)
		}
	})
	ref := &pb.ShardRef{BlobId: "0123456789abcdef0123456789abcdef", Block: 0, Index: 1}
	payload := make([]byte, 2048)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- s.putShard(ctx, "n1", ref, Scheme{K: 2, M: 1}, 4096, 4096, codec.Checksum(payload), payload, true)
	}()
	cancel()
	var err error
	testwait.For(t, 10*time.Second, "the staging to end while the disk hangs", func() bool {
		select {
		case err = <-done:
			return true
		default:
			return false
		}
	})
	if !errors.Is(err, errStoreAbandoned) || !errors.Is(err, context.Canceled) {
		t.Fatalf("staging on a hung disk: %v, want errStoreAbandoned naming the caller's end", err)
	}
	released.Store(true)
	close(release)
	s.Close() // waits for the write, answered late
	if bytes, shards := s.shards.Usage(); bytes != 0 || shards != 0 || len(s.shards.Staged()) != 0 {
		t.Fatalf("once the disk answered: %d bytes, %d shards counted, staged %v; want nothing", bytes, shards, s.shards.Staged())
	}
}

// A call still running once the store is closed (a request handler the
// gRPC server did not wait for, as when the agent halts) starts no more
// work on the shard disk: it is refused as the agent shutting down, and
// nothing is written.
func TestStoreRefusesDiskWorkOnceClosed(t *testing.T) {
	s, _ := newTestStore(t, Config{}, "n1", "n1", "n2")
	s.Close()
	ref := &pb.ShardRef{BlobId: "0123456789abcdef0123456789abcdef", Block: 0, Index: 1}
	payload := make([]byte, 2048)
	err := s.putShard(context.Background(), "n1", ref, Scheme{K: 2, M: 1}, 4096, 4096, codec.Checksum(payload), payload, true)
	if !errors.Is(err, apierr.ErrShuttingDown) {
		t.Fatalf("shard put on a closed store: %v, want ErrShuttingDown", err)
	}
	if _, err := s.commitAside(context.Background(), func() (int, error) { return s.commitStaged(ref.BlobId, nil) }, nil); !errors.Is(err, apierr.ErrShuttingDown) {
		t.Fatalf("commit on a closed store: %v, want ErrShuttingDown", err)
	}
	if bytes, shards := s.shards.Usage(); bytes != 0 || shards != 0 || len(s.shards.Staged()) != 0 {
		t.Fatalf("a closed store wrote: %d bytes, %d shards counted, staged %v", bytes, shards, s.shards.Staged())
	}
}

// A delete of a blob's shards on this agent, while a write of that blob
// hangs on its disk (and holds the blob), ends when its caller stops
// waiting: an aborted put is not held by its own agent's hung disk.
func TestOwnShardDeleteEndsWhenItsCallerStopsWaiting(t *testing.T) {
	release, entered := make(chan struct{}), make(chan struct{}, 1)
	var hang, released atomic.Bool
	opts := shardstore.Options{WriteFault: func() error {
		if hang.Load() {
			select {
			case entered <- struct{}{}:
			default:
			}
			<-release
		}
		return nil
	}}
	s, _ := newTestStoreOpts(t, Config{ShardTimeout: time.Hour}, testlog.New(t, "n1"), opts, "n1", "n1", "n2")
	t.Cleanup(func() {
		if released.CompareAndSwap(false, true) {
			close(release)
		}
	})
	ref := &pb.ShardRef{BlobId: "0123456789abcdef0123456789abcdef", Block: 0, Index: 1}
	payload := make([]byte, 2048)
	hang.Store(true)
	sctx, stopStage := context.WithCancel(context.Background())
	stopStage()
	_ = s.putShard(sctx, "n1", ref, Scheme{K: 2, M: 1}, 4096, 4096, codec.Checksum(payload), payload, true)
	select { // the write holds the blob now
	case <-entered:
	case <-time.After(10 * time.Second):
		t.Fatal("timed out after 10s waiting for the shard's write to reach the disk")
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.deleteShardsOn(ctx, []string{"n1"}, []string{ref.BlobId}, 0)
	}()
	cancel()
	testwait.For(t, 10*time.Second, "the delete on this agent to end with its caller while the disk hangs", func() bool {
		select {
		case <-done:
			return true
		default:
			return false
		}
	})
}

// diskWaitsAbandoned reads zrpc_blob_shard_disk_waits_abandoned_total's
// series of op.
func diskWaitsAbandoned(t *testing.T, s *Store, op string) float64 {
	t.Helper()
	var m dto.Metric
	if err := s.metrics.diskWaitsAbandoned.WithLabelValues(op).Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// Each wait for this agent's own shard disk that its deadline ends (a
// shard write, a commit, a delete, while the disk hangs) is counted by
// op, so that a hung shard disk shows in /metrics; a caller that goes
// away says nothing of the disk and is not counted.
func TestAbandonedShardDiskWaitsAreCounted(t *testing.T) {
	release := make(chan struct{})
	var released atomic.Bool
	opts := shardstore.Options{WriteFault: func() error {
		if !released.Load() {
			<-release
		}
		return nil
	}}
	s, _ := newTestStoreOpts(t, Config{ShardTimeout: 50 * time.Millisecond}, testlog.New(t, "n1"), opts, "n1", "n1", "n2")
	t.Cleanup(func() {
		if released.CompareAndSwap(false, true) {
			close(release)
		}
	})
	for _, op := range []string{"write", "commit", "delete"} {
		if n := diskWaitsAbandoned(t, s, op); n != 0 {
			t.Fatalf("op %s counted %v before any wait, want 0", op, n)
		}
	}
	ref := &pb.ShardRef{BlobId: "0123456789abcdef0123456789abcdef", Block: 0, Index: 1}
	payload := make([]byte, 2048)
	put := func(ctx context.Context) error {
		return s.putShard(ctx, "n1", ref, Scheme{K: 2, M: 1}, 4096, 4096, codec.Checksum(payload), payload, true)
	}
	gone, cancel := context.WithCancel(context.Background())
	cancel()
	if err := put(gone); !errors.Is(err, errStoreAbandoned) {
		t.Fatalf("staging for a caller gone, on a hung disk: %v, want errStoreAbandoned", err)
	}
	if n := diskWaitsAbandoned(t, s, "write"); n != 0 {
		t.Fatalf("a write its caller stopped waiting for counted %v, want 0", n)
	}
	if err := put(context.Background()); !errors.Is(err, errStoreAbandoned) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("staging on a hung disk: %v, want errStoreAbandoned at the shard timeout", err)
	}
	if n := diskWaitsAbandoned(t, s, "write"); n != 1 {
		t.Fatalf("a write given up at its deadline counted %v, want 1", n)
	}

	ctx, stop := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer stop()
	if _, err := s.commitAside(ctx, func() (int, error) { <-release; return 0, nil }, nil); !errors.Is(err, errCommitAbandoned) {
		t.Fatalf("commit on a hung disk: %v, want errCommitAbandoned", err)
	}
	if n := diskWaitsAbandoned(t, s, "commit"); n != 1 {
		t.Fatalf("a commit given up at its deadline counted %v, want 1", n)
	}

	// The hung writes hold the blob: its delete waits for them.
	if err := s.deleteShardsAt(context.Background(), "n1", []string{ref.BlobId}, 0); !errors.Is(err, errDeleteAbandoned) {
		t.Fatalf("delete on a hung disk: %v, want errDeleteAbandoned", err)
	}
	if n := diskWaitsAbandoned(t, s, "delete"); n != 1 {
		t.Fatalf("a delete given up at its deadline counted %v, want 1", n)
	}
}
