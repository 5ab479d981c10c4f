package storage

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/status"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
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
