package storage

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/internal/testwait"
	"github.com/zrpcio/zrpc/internal/wirecodec"
	"github.com/zrpcio/zrpc/storage/codec"
	"github.com/zrpcio/zrpc/storage/shardstore"
)

// commitPlaced commits a blob of data in blocks of blockSize, each block
// k+m shards with shard i on nodes[i], as a put would have left it: the
// shards placed on s's agent are in its part files, the metadata is
// committed. It returns the blob and every block's shards.
func commitPlaced(t *testing.T, s *Store, fc *fakeCluster, name string, data []byte, blockSize, k, m int, nodes []string) (*pb.Blob, [][][]byte) {
	t.Helper()
	c, err := codec.New(k, m)
	if err != nil {
		t.Fatal(err)
	}
	var id [16]byte
	rand.Read(id[:])
	b := &pb.Blob{Name: name, Id: hex.EncodeToString(id[:]), Size: uint64(len(data)), DataShards: uint32(k), ParityShards: uint32(m),
		BlockSize: uint32(blockSize), Sha256: make([]byte, 32)}
	var all [][][]byte
	for off := 0; off < len(data); off += blockSize {
		n := min(blockSize, len(data)-off)
		blk := c.NewBlock(blockSize)
		copy(blk.Data(), data[off:off+n])
		if err := c.Encode(blk, n); err != nil {
			t.Fatal(err)
		}
		meta := &pb.BlobBlock{Len: uint32(n)}
		var shards [][]byte
		for i, shard := range blk.Shards() {
			meta.Holders = append(meta.Holders, b.HolderRef(nodes[i]))
			meta.Sums = append(meta.Sums, blk.Sums()[i])
			shards = append(shards, bytes.Clone(shard))
			if nodes[i] != s.cluster.Self() {
				continue
			}
			err := s.storeLocal(&pb.PutShardRequest{
				Ref:        &pb.ShardRef{BlobId: b.Id, Block: uint32(len(b.Blocks)), Index: uint32(i)},
				DataShards: uint32(k), ParityShards: uint32(m), BlockLen: uint32(n), BlockSize: uint32(blockSize),
				Sum: blk.Sums()[i], Payload: shard,
			}, false)
			if err != nil {
				t.Fatal(err)
			}
		}
		blk.Release()
		b.Blocks = append(b.Blocks, meta)
		all = append(all, shards)
	}
	if _, err := fc.apply(&pb.Command{Kind: &pb.Command_BlobPending{BlobPending: &pb.BlobPending{Id: b.Id, Name: name, Node: s.cluster.Self()}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := fc.apply(&pb.Command{Kind: &pb.Command_BlobCommit{BlobCommit: &pb.BlobCommit{Blob: b}}}); err != nil {
		t.Fatal(err)
	}
	return fc.fsm.Blob(name), all
}

// readShards calls ReadShards and collects what it sends.
func readShards(s *Store, name, id string, pos ...[2]uint32) ([]*pb.ReadShardsResponse, error) {
	req := &pb.ReadShardsRequest{Name: name, BlobId: id}
	for _, p := range pos {
		req.Shards = append(req.Shards, &pb.ShardPos{Block: p[0], Index: p[1]})
	}
	var got []*pb.ReadShardsResponse
	err := s.ReadShards(context.Background(), req, func(r *pb.ReadShardsResponse) error {
		// The payload's buffer is reused for the next shard.
		r.Payload = bytes.Clone(r.Payload)
		got = append(got, r)
		return nil
	})
	return got, err
}

// TestReadShardsSendsTheShardsAskedInTheOrderAsked: every shard comes
// with the bytes and checksum the put stored, in the order of the
// request, whatever it is.
func TestReadShardsSendsTheShardsAskedInTheOrderAsked(t *testing.T) {
	s, fc := newTestStore(t, Config{BlockSize: 4096}, "n1", "n1")
	data := make([]byte, 3*4096+100)
	rand.Read(data)
	b, shards := commitPlaced(t, s, fc, "a", data, 4096, 1, 0, []string{"n1"})
	got, err := readShards(s, "a", b.Id, [2]uint32{3, 0}, [2]uint32{0, 0}, [2]uint32{2, 0}, [2]uint32{0, 0})
	if err != nil {
		t.Fatal(err)
	}
	want := []uint32{3, 0, 2, 0}
	if len(got) != len(want) {
		t.Fatalf("%d shards sent, want %d", len(got), len(want))
	}
	for i, r := range got {
		blk := want[i]
		if r.Error != "" || r.Shard.GetBlock() != blk || !bytes.Equal(r.Payload, shards[blk][0]) || r.Sum != b.Blocks[blk].Sums[0] {
			t.Errorf("message %d: block %d error %q, %d bytes, sum %08x; want block %d's shard", i, r.Shard.GetBlock(), r.Error, len(r.Payload), r.Sum, blk)
		}
	}
}

// TestReadShardsLendsEachShardUntilGRPCHasWrittenIt: a shard goes to
// gRPC by reference and may be written after send has returned. send here
// marshals as the agent's gRPC server does and keeps every message
// unwritten until the last shard was sent: a buffer given back to the
// pool, and read into again, before gRPC is done with it shows as a
// wrong shard. Once gRPC frees the messages, the buffers go back.
func TestReadShardsLendsEachShardUntilGRPCHasWrittenIt(t *testing.T) {
	s, fc := newTestStore(t, Config{BlockSize: 64 << 10}, "n1", "n1")
	data := make([]byte, 16*(64<<10))
	rand.Read(data)
	b, shards := commitPlaced(t, s, fc, "lent", data, 64<<10, 1, 0, []string{"n1"})
	req := &pb.ReadShardsRequest{Name: "lent", BlobId: b.Id}
	for blk := range b.Blocks {
		req.Shards = append(req.Shards, &pb.ShardPos{Block: uint32(blk)})
	}
	var unwritten []mem.BufferSlice
	err := s.ReadShards(context.Background(), req, func(r *pb.ReadShardsResponse) error {
		data, err := wirecodec.Codec{}.Marshal(r)
		unwritten = append(unwritten, data)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	for blk, data := range unwritten {
		got := &pb.ReadShardsResponse{}
		if err := proto.Unmarshal(data.Materialize(), got); err != nil {
			t.Fatal(err)
		}
		if got.Error != "" || !bytes.Equal(got.Payload, shards[blk][0]) {
			t.Fatalf("shard of block %d changed before gRPC wrote it (error %q)", blk, got.Error)
		}
		if len(data) < 2 {
			t.Fatalf("shard of block %d was copied into its message, not lent", blk)
		}
	}
	for _, data := range unwritten {
		data.Free()
	}
}

// TestReadShardsRefusesWhatTheCallerMayNotAskFor: a blob id of another
// name than the one the caller's permission covers, a shard the metadata
// places on another agent, too many shards or shards outside the blob are
// refused before any shard is sent, naming what is wrong.
func TestReadShardsRefusesWhatTheCallerMayNotAskFor(t *testing.T) {
	s, fc := newTestStore(t, Config{BlockSize: 4096}, "n1", "n1", "n2")
	data := make([]byte, 2*4096)
	rand.Read(data)
	a, _ := commitPlaced(t, s, fc, "a", data, 4096, 1, 1, []string{"n1", "n2"})
	secret, _ := commitPlaced(t, s, fc, "secret", data, 4096, 1, 1, []string{"n1", "n2"})
	many := make([][2]uint32, MaxReadShards+1)
	for _, tc := range []struct {
		what     string
		id       string
		pos      [][2]uint32
		sentinel error
		says     string
	}{
		{"another name's blob id", secret.Id, [][2]uint32{{0, 0}}, ErrNotFound, "no version with id " + secret.Id},
		{"an unknown blob id", strings.Repeat("ab", 16), [][2]uint32{{0, 0}}, ErrNotFound, "no version"},
		{"a malformed blob id", "xyz", [][2]uint32{{0, 0}}, ErrInvalidArgument, "blob_id"},
		{"a shard on another agent", a.Id, [][2]uint32{{0, 0}, {1, 1}}, ErrInvalidArgument, "shards[1]: block 1 shard 1 of blob \"a\" is not placed on agent n1"},
		{"too many shards", a.Id, many, ErrInvalidArgument, "1025 asked for, at most 1024"},
		{"no shard", a.Id, nil, ErrInvalidArgument, "no shard asked for"},
		{"a block past the end", a.Id, [][2]uint32{{2, 0}}, ErrInvalidArgument, "blob \"a\" has 2 blocks of 2 shards"},
		{"an index past the scheme", a.Id, [][2]uint32{{0, 2}}, ErrInvalidArgument, "has 2 blocks of 2 shards"},
	} {
		got, err := readShards(s, "a", tc.id, tc.pos...)
		if !errors.Is(err, tc.sentinel) || !strings.Contains(err.Error(), tc.says) {
			t.Errorf("%s: %v; want %v saying %q", tc.what, err, tc.sentinel, tc.says)
		}
		if len(got) != 0 {
			t.Errorf("%s: %d shards sent before the refusal", tc.what, len(got))
		}
	}
}

// TestReadShardsReportsACorruptShardAndGoesOn: a shard whose bytes rotted
// on disk is sent with its error set and no payload, reported to the
// leader's repair, and the shards after it are still sent.
func TestReadShardsReportsACorruptShardAndGoesOn(t *testing.T) {
	s, fc := newTestStore(t, Config{BlockSize: 4096}, "n1", "n1")
	data := make([]byte, 3*4096)
	rand.Read(data)
	b, shards := commitPlaced(t, s, fc, "a", data, 4096, 1, 0, []string{"n1"})
	id := shardstore.ID{Blob: b.Id, Block: 1, Index: 0}
	off, err := s.shards.PayloadOffset(id)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(s.shards.Path(id), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte{^shards[1][0][10]}, off+10); err != nil {
		t.Fatal(err)
	}
	f.Close()

	got, err := readShards(s, "a", b.Id, [2]uint32{0, 0}, [2]uint32{1, 0}, [2]uint32{2, 0})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 {
		t.Fatalf("%d shards sent, want 3", len(got))
	}
	if got[1].Error == "" || !strings.Contains(got[1].Error, "corrupt") || got[1].Payload != nil {
		t.Errorf("corrupt shard sent with error %q and %d bytes; want an error saying corrupt and no payload", got[1].Error, len(got[1].Payload))
	}
	for _, i := range []int{0, 2} {
		if got[i].Error != "" || !bytes.Equal(got[i].Payload, shards[i][0]) {
			t.Errorf("shard of block %d: error %q; want its bytes", i, got[i].Error)
		}
	}
	testwait.For(t, 10*time.Second, "the leader's repair knows block 1's shard is corrupt", func() bool {
		for _, r := range s.RepairStatus(b.Id).Corrupt {
			if r.Block == 1 && r.Index == 0 && r.Node == "n1" {
				return true
			}
		}
		return false
	})
}

// TestLocateGivesTheAddressesOfAliveHolders: Locate answers the blob's
// whole metadata and, per agent it names, the agent's address, empty for
// one that is failed.
func TestLocateGivesTheAddressesOfAliveHolders(t *testing.T) {
	s, fc := newTestStore(t, Config{BlockSize: 4096}, "n1", "n1", "n2", "n3")
	data := make([]byte, 2*4096)
	rand.Read(data)
	commitPlaced(t, s, fc, "a", data, 4096, 2, 1, []string{"n1", "n2", "n3"})
	fc.setNodes(t, false, "n3")
	b, addrs, err := s.Locate(context.Background(), "a", 0, pb.Consistency_DEFAULT)
	if err != nil {
		t.Fatal(err)
	}
	if len(b.Blocks) != 2 || len(b.Blocks[1].Sums) != 3 {
		t.Fatalf("Locate answered %d blocks; want the whole metadata", len(b.Blocks))
	}
	want := map[string]string{"n1": "n1.test:8400", "n2": "n2.test:8400", "n3": ""}
	for i, node := range b.Nodes {
		if addrs[i] != want[node] {
			t.Errorf("address of %s: %q, want %q", node, addrs[i], want[node])
		}
	}
	if _, _, err := s.Locate(context.Background(), "missing", 0, pb.Consistency_DEFAULT); !errors.Is(err, ErrNotFound) {
		t.Errorf("Locate of a blob that does not exist: %v, want NotFound", err)
	}
}
