package storage

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/status"

	"github.com/zrpcio/zrpc/api/apierr"
	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/internal/testlog"
	"github.com/zrpcio/zrpc/internal/testwait"
	"github.com/zrpcio/zrpc/storage/codec"
	"github.com/zrpcio/zrpc/storage/shardstore"
)

// lagPeers are the other agents of a read test: each answers GetShard
// with the shards it holds, except the ones in hang, which answer nothing
// until the call ends (a stopped agent whose kernel still holds the
// connection open). asked counts the calls by agent.
type lagPeers struct {
	shards map[string]map[[2]uint32][]byte // by agent, then block and index
	hang   map[string]bool

	mu    sync.Mutex
	asked map[string]int
}

type lagPeer struct {
	pb.ShardsClient // only GetShard is called
	node            string
	all             *lagPeers
}

func (p lagPeer) GetShard(ctx context.Context, req *pb.GetShardRequest, _ ...grpc.CallOption) (*pb.GetShardResponse, error) {
	p.all.mu.Lock()
	p.all.asked[p.node]++
	p.all.mu.Unlock()
	if p.all.hang[p.node] {
		<-ctx.Done()
		return nil, status.FromContextError(ctx.Err()).Err()
	}
	payload, ok := p.all.shards[p.node][[2]uint32{req.Ref.Block, req.Ref.Index}]
	if !ok {
		return nil, fmt.Errorf("%w: agent %s holds no shard %d of block %d", apierr.ErrNotFound, p.node, req.Ref.Index, req.Ref.Block)
	}
	return &pb.GetShardResponse{Payload: payload}, nil
}

func (l *lagPeers) count(node string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.asked[node]
}

// lagBlob encodes blocks random blocks of 4 KiB with k+m shards, shard
// index i of every block on nodes[i], and returns the blob's metadata,
// its bytes, and the peers serving its shards.
func lagBlob(t *testing.T, k, m, blocks int, nodes ...string) (*pb.Blob, []byte, *lagPeers) {
	t.Helper()
	const bs = 4096
	c, err := codec.New(k, m)
	if err != nil {
		t.Fatal(err)
	}
	b := &pb.Blob{Name: "lag", Id: "0123456789abcdef0123456789abcdef", DataShards: uint32(k), ParityShards: uint32(m),
		BlockSize: bs, Size: uint64(blocks * bs), Nodes: nodes}
	peers := &lagPeers{shards: make(map[string]map[[2]uint32][]byte), hang: make(map[string]bool), asked: make(map[string]int)}
	r := rand.New(rand.NewPCG(7, 8))
	var data []byte
	for i := range blocks {
		blk := c.NewBlock(bs)
		for j := range blk.Data() {
			blk.Data()[j] = byte(r.Uint32())
		}
		data = append(data, blk.Data()...)
		if err := c.Encode(blk, bs); err != nil {
			t.Fatal(err)
		}
		meta := &pb.BlobBlock{Len: bs}
		for idx, shard := range blk.Shards() {
			meta.Holders = append(meta.Holders, uint32(idx+1))
			meta.Sums = append(meta.Sums, blk.Sums()[idx])
			if peers.shards[nodes[idx]] == nil {
				peers.shards[nodes[idx]] = make(map[[2]uint32][]byte)
			}
			peers.shards[nodes[idx]][[2]uint32{uint32(i), uint32(idx)}] = bytes.Clone(shard)
		}
		b.Blocks = append(b.Blocks, meta)
		blk.Release()
	}
	return b, data, peers
}

// readAll reads every block of b as a Get does: the blocks share one
// view of the holders.
func readAll(t *testing.T, s *Store, b *pb.Blob) ([]byte, error) {
	t.Helper()
	c, err := codec.New(int(b.DataShards), int(b.ParityShards))
	if err != nil {
		t.Fatal(err)
	}
	view := newHolderView(s.aliveSet())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out []byte
	for i := range b.Blocks {
		buf, n, err := s.readBlock(ctx, b, c, i, view)
		if err != nil {
			return out, err
		}
		out = append(out, buf.Bytes()[:n]...)
		buf.Release()
	}
	return out, nil
}

// TestReadGivesUpOnAHolderThatLags: a data holder that answers nothing
// holds an agent's read of a block for HolderLag, not ShardTimeout (an
// hour here): the read takes parity from the others in its place, and the
// next blocks ask the others first.
func TestReadGivesUpOnAHolderThatLags(t *testing.T) {
	var logs testlog.Buffer
	s, fc := newTestStoreLog(t, Config{ShardTimeout: time.Hour, HolderLag: 100 * time.Millisecond},
		slog.New(slog.NewTextHandler(&logs, nil)), "n1", "n1", "n2", "n3", "n4", "n5")
	b, data, peers := lagBlob(t, 2, 2, 4, "n2", "n3", "n4", "n5")
	peers.hang["n2"] = true
	fc.peer = func(node string) (pb.ShardsClient, error) { return lagPeer{node: node, all: peers}, nil }

	got, err := readAll(t, s, b)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read with a holder that answers nothing: %d bytes, %v; want the %d bytes", len(got), err, len(data))
	}
	if n := peers.count("n2"); n != 1 {
		t.Errorf("the lagging holder was asked %d times; want once, for the first block only", n)
	}
	if n := peers.count("n4"); n != len(b.Blocks) {
		t.Errorf("the first parity holder was asked %d times; want once per block, %d", n, len(b.Blocks))
	}
	if n := strings.Count(logs.String(), "sent none while the others sent theirs"); n != 1 || !strings.Contains(logs.String(), "agent=n2") {
		t.Errorf("the log says %d times that the read gave up on a holder; want once, naming n2:\n%s", n, logs.String())
	}
}

// TestReadWaitsForLaggingHoldersItCannotDoWithout: with both data holders
// of 2+1 silent, the parity holder alone cannot make a block: the read
// does not give up on them for lagging, and fails at ShardTimeout.
func TestReadWaitsForLaggingHoldersItCannotDoWithout(t *testing.T) {
	s, fc := newTestStore(t, Config{ShardTimeout: time.Second, HolderLag: 50 * time.Millisecond}, "n1", "n1", "n2", "n3", "n4")
	b, _, peers := lagBlob(t, 2, 1, 1, "n2", "n3", "n4")
	peers.hang["n2"], peers.hang["n3"] = true, true
	fc.peer = func(node string) (pb.ShardsClient, error) { return lagPeer{node: node, all: peers}, nil }

	_, err := readAll(t, s, b)
	if !errors.Is(err, ErrNotEnoughShards) || strings.Contains(err.Error(), errHolderLagged.Error()) {
		t.Fatalf("read with both data holders of 2+1 silent: %v; want not enough shards after the shard timeout, not given up on for lagging", err)
	}
	if n := peers.count("n4"); n != 1 {
		t.Errorf("the parity holder was asked %d times; want once, after the data holders timed out", n)
	}
}

// TestReadGivesUpOnThisAgentsDiskThatLags: a read of a shard from this
// agent's own disk that keeps a get waiting for HolderLag, once the other
// holders sent theirs, is given up on like a silent peer (ShardTimeout is
// an hour here): the block is made from parity. The read given up on goes
// on aside and may still write into the buffer it was reading into; the
// block handed out is not that buffer, so a late read (of a shard
// damaged meanwhile, here) does not change the bytes sent.
func TestReadGivesUpOnThisAgentsDiskThatLags(t *testing.T) {
	var armed atomic.Bool
	hung, release := make(chan struct{}, 1), make(chan struct{})
	var once sync.Once
	opts := shardstore.Options{ReadFault: func(id shardstore.ID) error {
		if id.Block == 0 && id.Index == 0 && armed.CompareAndSwap(true, false) {
			hung <- struct{}{}
			<-release
		}
		return nil
	}}
	var logs testlog.Buffer
	s, fc := newTestStoreOpts(t, Config{BlockSize: 4096, ShardTimeout: time.Hour, HolderLag: 100 * time.Millisecond},
		slog.New(slog.NewTextHandler(&logs, nil)), opts, "n1", "n1", "n2", "n3", "n4")
	unhang := func() { once.Do(func() { close(release) }) }
	t.Cleanup(unhang) // before the store closes, which waits for the read
	data := make([]byte, 4096)
	for i := range data {
		data[i] = byte(i * 7)
	}
	nodes := []string{"n1", "n2", "n3", "n4"}
	b, shards := commitPlaced(t, s, fc, "a", data, 4096, 2, 2, nodes)
	peers := &lagPeers{shards: make(map[string]map[[2]uint32][]byte), hang: make(map[string]bool), asked: make(map[string]int)}
	for idx, node := range nodes[1:] {
		peers.shards[node] = map[[2]uint32][]byte{{0, uint32(idx + 1)}: shards[0][idx+1]}
	}
	fc.peer = func(node string) (pb.ShardsClient, error) { return lagPeer{node: node, all: peers}, nil }
	c, err := codec.New(2, 2)
	if err != nil {
		t.Fatal(err)
	}

	armed.Store(true)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	buf, n, err := s.readBlock(ctx, b, c, 0, newHolderView(s.aliveSet()))
	if err != nil {
		t.Fatalf("read of a block whose shard on this agent's disk lags: %v; want it made from parity after HolderLag", err)
	}
	defer buf.Release()
	got := buf.Bytes()[:n]
	if !bytes.Equal(got, data) {
		t.Fatalf("read of a block whose shard on this agent's disk lags: %d bytes, not the block's", n)
	}
	if !strings.Contains(logs.String(), "this agent's shard disk read none of its shards") || !strings.Contains(logs.String(), s.shards.Dir()) {
		t.Errorf("the log does not say that the read gave up on this agent's disk, naming it:\n%s", logs.String())
	}

	<-hung
	damage(t, s.shards, shardstore.ID{Blob: b.Id, Block: 0, Index: 0})
	unhang()
	testwait.For(t, 10*time.Second, "the read given up on to end once the disk answers", func() bool { return s.stuck.Load() == 0 })
	if !bytes.Equal(got, data) {
		t.Fatal("a read of this agent's disk given up on wrote into the block handed out after it was decoded")
	}
}

// damage overwrites the first bytes of shard id's payload in its part
// file.
func damage(t *testing.T, shards *shardstore.Store, id shardstore.ID) {
	t.Helper()
	off, err := shards.PayloadOffset(id)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(shards.Path(id), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt([]byte("damaged"), off); err != nil {
		t.Fatal(err)
	}
}
