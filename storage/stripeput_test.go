package storage

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/internal/testlog"
	"github.com/zrpcio/zrpc/internal/testwait"
	"github.com/zrpcio/zrpc/storage/codec"
	"github.com/zrpcio/zrpc/storage/shardstore"
)

// Striped is a blob encoded as a striping client encodes it: per shard
// index, the messages of its WriteShards stream, and the metadata
// CommitPut takes, naming BeginPut's targets as holders.
type Striped struct {
	Streams [][]*pb.WriteShardsRequest
	Blob    *pb.Blob
}

// StripeBlob encodes data for the put begin answered (tests of this
// package and of storage_test use it).
func StripeBlob(t testing.TB, begin *pb.BeginPutResponse, name string, data []byte) *Striped {
	t.Helper()
	k, m, bs := int(begin.DataShards), int(begin.ParityShards), int(begin.BlockSize)
	c, err := codec.New(k, m)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	blob := &pb.Blob{
		Name: name, Id: begin.BlobId, Size: uint64(len(data)), DataShards: uint32(k), ParityShards: uint32(m),
		BlockSize: uint32(bs), Sha256: sum[:],
	}
	st := &Striped{Streams: make([][]*pb.WriteShardsRequest, k+m), Blob: blob}
	for i := range k + m {
		st.Streams[i] = []*pb.WriteShardsRequest{{Header: &pb.WriteShardsHeader{
			Name: name, BlobId: begin.BlobId, Index: uint32(i), DataShards: uint32(k), ParityShards: uint32(m),
			BlockSize: uint32(bs), Revision: begin.Header.GetRevision(),
		}}}
	}
	for b := 0; b*bs < len(data); b++ {
		chunk := data[b*bs : min((b+1)*bs, len(data))]
		blk := c.NewBlock(bs)
		copy(blk.Data(), chunk)
		if err := c.Encode(blk, len(chunk)); err != nil {
			t.Fatal(err)
		}
		bb := &pb.BlobBlock{Len: uint32(len(chunk)), Sums: append([]uint32(nil), blk.Sums()...), Holders: make([]uint32, k+m)}
		for i, shard := range blk.Shards() {
			st.Streams[i] = append(st.Streams[i], &pb.WriteShardsRequest{
				Block: uint32(b), BlockLen: uint32(len(chunk)), Sum: bb.Sums[i], Payload: bytes.Clone(shard),
			})
			if node := begin.Targets[i].GetNode(); node != "" {
				bb.Holders[i] = blob.HolderRef(node)
			}
		}
		blk.Release()
		blob.Blocks = append(blob.Blocks, bb)
	}
	return st
}

// feed is a WriteShards stream that sends msgs, then err (io.EOF: the
// client closed its side).
func feed(msgs []*pb.WriteShardsRequest, err error) func() (*pb.WriteShardsRequest, [][]byte, error) {
	i := 0
	return func() (*pb.WriteShardsRequest, [][]byte, error) {
		if i == len(msgs) {
			return nil, nil, err
		}
		i++
		return msgs[i-1], nil, nil
	}
}

// feedInPieces is feed with every payload taken out of its message and
// given in pieces of at most n bytes, as the agent's gRPC server passes
// them (the frames they arrived in).
func feedInPieces(msgs []*pb.WriteShardsRequest, n int) func() (*pb.WriteShardsRequest, [][]byte, error) {
	i := 0
	return func() (*pb.WriteShardsRequest, [][]byte, error) {
		if i == len(msgs) {
			return nil, nil, io.EOF
		}
		msg := proto.Clone(msgs[i]).(*pb.WriteShardsRequest)
		i++
		var pieces [][]byte
		for p := msg.Payload; len(p) > 0; p = p[min(n, len(p)):] {
			pieces = append(pieces, p[:min(n, len(p))])
		}
		msg.Payload = nil
		return msg, pieces, nil
	}
}

// stripedStore is a one-agent store with 4 KiB blocks: puts are 1+0.
func stripedStore(t *testing.T) (*Store, *fakeCluster) {
	cfg := DefaultConfig()
	cfg.BlockSize = MinBlockSize
	cfg.InlineMax = 1024
	return newTestStore(t, cfg, "a", "a")
}

func beginPut(t *testing.T, s *Store, h *pb.BlobPutHeader) *pb.BeginPutResponse {
	t.Helper()
	begin, err := s.BeginPut(context.Background(), h, "")
	if err != nil {
		t.Fatalf("BeginPut: %v", err)
	}
	return begin
}

func randomData(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, seed))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func readBlob(t *testing.T, s *Store, name string) []byte {
	t.Helper()
	var out bytes.Buffer
	err := s.Get(context.Background(), &pb.BlobGetRequest{Name: name}, func(r *pb.BlobGetResponse) error {
		out.Write(r.Chunk)
		return nil
	})
	if err != nil {
		t.Fatalf("get %s: %v", name, err)
	}
	return out.Bytes()
}

// writeAll runs every WriteShards stream of st on s.
func writeAll(t *testing.T, s *Store, st *Striped) {
	t.Helper()
	for i, msgs := range st.Streams {
		resp, err := s.WriteShards(context.Background(), feed(msgs, io.EOF))
		if err != nil {
			t.Fatalf("WriteShards of index %d: %v", i, err)
		}
		if len(resp.Blocks) != len(msgs)-1 {
			t.Fatalf("WriteShards of index %d answers %d blocks held, want %d", i, len(resp.Blocks), len(msgs)-1)
		}
	}
}

func TestStripedPutRoundTrip(t *testing.T) {
	for _, size := range []int64{3*MinBlockSize + 100, 0} { // known, unknown
		s, fc := stripedStore(t)
		data := randomData(3*MinBlockSize+100, 1)
		begin := beginPut(t, s, &pb.BlobPutHeader{Name: "models/v1", Size: size})
		p := fc.fsm.PendingBlob(begin.BlobId)
		if begin.Inline || p == nil || p.LeaseExpires != begin.LeaseExpires || begin.LeaseTtlMs != 30000 {
			t.Fatalf("BeginPut = %v, pending %v: want a put under a 30 s lease", begin, p)
		}
		if len(begin.Targets) != 1 || begin.Targets[0].Node != "a" || begin.BlockSize != MinBlockSize {
			t.Fatalf("BeginPut targets %v, block size %d", begin.Targets, begin.BlockSize)
		}
		st := StripeBlob(t, begin, "models/v1", data)
		writeAll(t, s, st)
		if fc.fsm.Blob("models/v1") != nil {
			t.Fatal("the blob is visible before its commit")
		}
		res, err := s.CommitPut(context.Background(), &pb.CommitPutRequest{Blob: st.Blob}, "")
		if err != nil {
			t.Fatalf("CommitPut: %v", err)
		}
		if res.Missing != 0 || res.Blob.Id != begin.BlobId || fc.fsm.PendingBlob(begin.BlobId) != nil {
			t.Fatalf("CommitPut = %+v; the put should be committed whole", res)
		}
		if got := readBlob(t, s, "models/v1"); !bytes.Equal(got, data) {
			t.Fatalf("read back %d bytes, not the %d put", len(got), len(data))
		}
		// A retried commit answers the committed blob.
		again, err := s.CommitPut(context.Background(), &pb.CommitPutRequest{Blob: st.Blob}, "")
		if err != nil || again.Blob.Id != begin.BlobId || again.Revision != res.Revision {
			t.Fatalf("retried CommitPut = %+v, %v; want the committed blob at revision %d", again, err, res.Revision)
		}
	}
}

// Payloads that reach WriteShards in pieces (the frames they arrived in)
// are checked and stored as whole ones are; a piece changed on the way
// fails its shard's CRC32C.
func TestWriteShardsStoresPayloadsGivenInPieces(t *testing.T) {
	s, _ := stripedStore(t)
	data := randomData(3*MinBlockSize+100, 5)
	begin := beginPut(t, s, &pb.BlobPutHeader{Name: "pieces", Size: int64(len(data))})
	st := StripeBlob(t, begin, "pieces", data)
	bad := feedInPieces(st.Streams[0], 1000)
	bad() // the header
	msg, pieces, _ := bad()
	pieces[1] = append([]byte(nil), pieces[1]...)
	pieces[1][7] ^= 1
	i := 0
	corrupt := func() (*pb.WriteShardsRequest, [][]byte, error) {
		if i++; i == 1 {
			return st.Streams[0][0], nil, nil
		}
		return msg, pieces, nil
	}
	if _, err := s.WriteShards(context.Background(), corrupt); !errors.Is(err, ErrInvalidArgument) || !strings.Contains(err.Error(), "CRC32C") {
		t.Fatalf("WriteShards of a shard with a changed piece: %v, want InvalidArgument naming the CRC32C", err)
	}
	for idx, msgs := range st.Streams {
		resp, err := s.WriteShards(context.Background(), feedInPieces(msgs, 1000))
		if err != nil || len(resp.Blocks) != len(msgs)-1 {
			t.Fatalf("WriteShards of index %d in pieces = %v, %v; want its %d blocks held", idx, resp, err, len(msgs)-1)
		}
	}
	if _, err := s.CommitPut(context.Background(), &pb.CommitPutRequest{Blob: st.Blob}, ""); err != nil {
		t.Fatalf("CommitPut: %v", err)
	}
	if got := readBlob(t, s, "pieces"); !bytes.Equal(got, data) {
		t.Fatalf("read back %d bytes, not the %d put in pieces", len(got), len(data))
	}
}

func TestBeginPutOfASmallKnownSizeAnswersInline(t *testing.T) {
	s, fc := stripedStore(t)
	begin := beginPut(t, s, &pb.BlobPutHeader{Name: "small", Size: 1024})
	if !begin.Inline || begin.BlobId != "" || begin.InlineMax != 1024 || len(fc.fsm.PendingBlobs()) != 0 {
		t.Fatalf("BeginPut of 1 KiB = %v with %d puts pending; want inline and nothing started", begin, len(fc.fsm.PendingBlobs()))
	}
	// The checks Put makes come first.
	for _, h := range []*pb.BlobPutHeader{{Name: "a//b", Size: 1}, {Name: "big", Size: 1 << 62}} {
		if _, err := s.BeginPut(context.Background(), h, ""); err == nil {
			t.Errorf("BeginPut(%v) succeeded", h)
		}
	}
}

// TestWriteShardsRefusesBadInput: each stream breaks one rule after a good
// block; each is refused as invalid and leaves nothing staged or stored.
func TestWriteShardsRefusesBadInput(t *testing.T) {
	s, _ := stripedStore(t)
	data := randomData(3*MinBlockSize+100, 2)
	begin := beginPut(t, s, &pb.BlobPutHeader{Name: "models/v1", Size: int64(len(data))})
	other := beginPut(t, s, &pb.BlobPutHeader{Name: "models/other", Size: int64(len(data))})
	good := StripeBlob(t, begin, "models/v1", data).Streams[0]
	withHeader := func(f func(h *pb.WriteShardsHeader)) []*pb.WriteShardsRequest {
		h := proto.Clone(good[0]).(*pb.WriteShardsRequest)
		f(h.Header)
		return append([]*pb.WriteShardsRequest{h}, good[1:]...)
	}
	withBlock := func(f func(b *pb.WriteShardsRequest)) []*pb.WriteShardsRequest {
		b := proto.Clone(good[2]).(*pb.WriteShardsRequest)
		f(b)
		return []*pb.WriteShardsRequest{good[0], good[1], b}
	}
	for _, tc := range []struct {
		name string
		msgs []*pb.WriteShardsRequest
	}{
		{"bad CRC", withBlock(func(b *pb.WriteShardsRequest) { b.Sum ^= 1 })},
		{"flipped payload byte", withBlock(func(b *pb.WriteShardsRequest) { b.Payload[7] ^= 1 })},
		{"payload too short", withBlock(func(b *pb.WriteShardsRequest) { b.Payload = b.Payload[:len(b.Payload)-1] })},
		{"wrong block length", withBlock(func(b *pb.WriteShardsRequest) { b.BlockLen-- })},
		{"block past the size", withBlock(func(b *pb.WriteShardsRequest) { b.Block = 4 })},
		{"duplicate block", []*pb.WriteShardsRequest{good[0], good[1], good[2], good[1]}},
		{"second header", []*pb.WriteShardsRequest{good[0], good[1], good[0]}},
		{"unknown blob id", withHeader(func(h *pb.WriteShardsHeader) { h.BlobId = "00112233445566778899aabbccddeeff" })},
		{"another name's blob id", withHeader(func(h *pb.WriteShardsHeader) { h.BlobId = other.BlobId })},
		{"invalid blob id", withHeader(func(h *pb.WriteShardsHeader) { h.BlobId = "../../etc" })},
		{"index out of range", withHeader(func(h *pb.WriteShardsHeader) { h.Index = 1 })},
		{"scheme not the put's", withHeader(func(h *pb.WriteShardsHeader) { h.DataShards, h.ParityShards, h.Index = 2, 1, 1 })},
		{"too many shards", withHeader(func(h *pb.WriteShardsHeader) { h.DataShards, h.ParityShards = 200, 100 })},
		{"shard counts whose sum wraps", withHeader(func(h *pb.WriteShardsHeader) { h.DataShards, h.ParityShards = 258, 0xFFFFFF00 })},
		{"block size too small", withHeader(func(h *pb.WriteShardsHeader) { h.BlockSize = MinBlockSize - 1 })},
		{"no header", good[1:]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := s.WriteShards(context.Background(), feed(tc.msgs, io.EOF))
			if !errors.Is(err, ErrInvalidArgument) {
				t.Fatalf("WriteShards: %v, want ErrInvalidArgument", err)
			}
			assertNothingStored(t, s, begin.BlobId)
		})
	}
}

func assertNothingStored(t *testing.T, s *Store, id string) {
	t.Helper()
	if st := s.shards.Staged(); len(st) != 0 {
		t.Fatalf("%d shards left staged: %v", len(st), st)
	}
	if _, err := s.shards.Held(id, 0); !errors.Is(err, shardstore.ErrNotFound) {
		t.Fatalf("a part file was left: %v", err)
	}
	if bytes, shards := s.shards.Usage(); bytes != 0 || shards != 0 {
		t.Fatalf("shard store uses %d bytes in %d shards, want none", bytes, shards)
	}
}

func TestWriteShardsOfABrokenStreamAreDiscarded(t *testing.T) {
	s, _ := stripedStore(t)
	data := randomData(3*MinBlockSize, 3)
	begin := beginPut(t, s, &pb.BlobPutHeader{Name: "models/v1"})
	st := StripeBlob(t, begin, "models/v1", data)
	if _, err := s.WriteShards(context.Background(), feed(st.Streams[0][:3], context.Canceled)); !errors.Is(err, context.Canceled) {
		t.Fatalf("WriteShards of a cancelled stream: %v", err)
	}
	assertNothingStored(t, s, begin.BlobId)
	// The part is free for the client's next stream.
	writeAll(t, s, st)
}

// TestWriteShardsGivesUpOnADiskThatHangs: a stream whose commit hangs in
// fsync fails once the commit's bound passes, as a failure of this agent
// (DeadlineExceeded: the client counts the shards lost and goes on)
// naming the disk to check, instead of holding the client, whose lease
// renewals keep the put alive, for as long as the disk hangs. The part
// stays claimed until the commit returns, and is free again then.
func TestWriteShardsGivesUpOnADiskThatHangs(t *testing.T) {
	disk := newHungDisk()
	cfg := DefaultConfig()
	cfg.BlockSize, cfg.InlineMax, cfg.ShardTimeout = MinBlockSize, 1024, 200*time.Millisecond
	s, _ := newTestStoreOpts(t, cfg, testlog.New(t, "a"), disk.options(), "a", "a")
	t.Cleanup(disk.release) // before the store closes, which waits for the commit
	data := randomData(3*MinBlockSize, 9)
	begin := beginPut(t, s, &pb.BlobPutHeader{Name: "hung", Size: int64(len(data))})
	st := StripeBlob(t, begin, "hung", data)
	disk.hang()
	var err error
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, err = s.WriteShards(context.Background(), feed(st.Streams[0], io.EOF))
	}()
	testwait.For(t, 10*time.Second, "WriteShards to give up on this agent's disk, which hangs", func() bool {
		select {
		case <-done:
			return true
		default:
			return false
		}
	})
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), s.shards.Dir()) || !strings.Contains(err.Error(), "dmesg") {
		t.Fatalf("WriteShards on a disk that hangs: %v; want DeadlineExceeded naming %s and what to check", err, s.shards.Dir())
	}
	key := partKey{begin.BlobId, 0}
	if _, busy := s.writing.Load(key); !busy {
		t.Fatal("the part was freed while its commit still hangs")
	}
	disk.release()
	testwait.For(t, 10*time.Second, "the part to be freed once its commit returns", func() bool {
		_, busy := s.writing.Load(key)
		return !busy
	})
}

// TestWriteShardsGivesUpOnADiskThatHangsInReads: once its shards are
// durable, a stream answers what its part file holds, read from the
// disk; a disk that hangs in reads then fails the stream at ShardTimeout,
// naming the disk, instead of holding it for as long as it hangs.
func TestWriteShardsGivesUpOnADiskThatHangsInReads(t *testing.T) {
	disk := newStuckDisk()
	opts := shardstore.Options{ReadFault: func(shardstore.ID) error { disk.wait(); return nil }}
	cfg := DefaultConfig()
	cfg.BlockSize, cfg.InlineMax, cfg.ShardTimeout = MinBlockSize, 1024, 200*time.Millisecond
	s, _ := newTestStoreOpts(t, cfg, testlog.New(t, "a"), opts, "a", "a")
	t.Cleanup(disk.unhang) // before the store closes, which waits for the read
	data := randomData(3*MinBlockSize, 9)
	begin := beginPut(t, s, &pb.BlobPutHeader{Name: "hung", Size: int64(len(data))})
	st := StripeBlob(t, begin, "hung", data)
	disk.hang.Store(true)
	done := make(chan error, 1)
	go func() {
		_, err := s.WriteShards(context.Background(), feed(st.Streams[0], io.EOF))
		done <- err
	}()
	err := ended(t, done, "WriteShards to give up on this agent's disk, which hangs in reads")
	if !errors.Is(err, errReadAbandoned) || !strings.Contains(err.Error(), s.shards.Dir()) {
		t.Fatalf("WriteShards on a disk that hangs in reads: %v; want errReadAbandoned naming %s", err, s.shards.Dir())
	}
}

func TestWriteShardsRefusesAShortBlockThatIsNotTheLast(t *testing.T) {
	s, _ := stripedStore(t)
	begin := beginPut(t, s, &pb.BlobPutHeader{Name: "models/v1"}) // size unknown
	st := StripeBlob(t, begin, "models/v1", randomData(2*MinBlockSize+10, 4))
	msgs := st.Streams[0] // header, blocks 0, 1 (full) and 2 (short)
	past := proto.Clone(msgs[2]).(*pb.WriteShardsRequest)
	past.Block = 3
	for _, order := range [][]*pb.WriteShardsRequest{
		{msgs[0], msgs[3], past},             // a full block after the short one
		{msgs[0], past, msgs[3]},             // the short one before a full one
		{msgs[0], msgs[2], msgs[3], msgs[3]}, // the short one twice
	} {
		if _, err := s.WriteShards(context.Background(), feed(order, io.EOF)); !errors.Is(err, ErrInvalidArgument) {
			t.Fatalf("WriteShards: %v, want ErrInvalidArgument", err)
		}
		assertNothingStored(t, s, begin.BlobId)
	}
	short := StripeBlob(t, begin, "models/v1", randomData(MinBlockSize+10, 5)).Streams[0]
	if _, err := s.WriteShards(context.Background(), feed([]*pb.WriteShardsRequest{short[0], short[2], msgs[2]}, io.EOF)); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("a short block 1 before a full block 2: %v, want ErrInvalidArgument", err)
	}
	assertNothingStored(t, s, begin.BlobId)
}

// TestCommitPutRefusesShardsItsHolderDoesNotConfirm: a 1+0 blob needs
// its one shard of every block; a shard its holder does not hold, or
// holds with another checksum, refuses the commit and nothing is visible.
func TestCommitPutRefusesShardsItsHolderDoesNotConfirm(t *testing.T) {
	s, fc := stripedStore(t)
	data := randomData(3*MinBlockSize, 6)
	begin := beginPut(t, s, &pb.BlobPutHeader{Name: "models/v1", Size: int64(len(data))})
	st := StripeBlob(t, begin, "models/v1", data)
	msgs := st.Streams[0]
	if _, err := s.WriteShards(context.Background(), feed([]*pb.WriteShardsRequest{msgs[0], msgs[1], msgs[3]}, io.EOF)); err != nil {
		t.Fatal(err)
	}
	wrongSum := proto.Clone(st.Blob).(*pb.Blob)
	wrongSum.Blocks[0].Sums[0] ^= 1
	for _, tc := range []struct {
		name string
		blob *pb.Blob
	}{{"block 1 not written", st.Blob}, {"block 0 with another sum", wrongSum}} {
		_, err := s.CommitPut(context.Background(), &pb.CommitPutRequest{Blob: tc.blob}, "")
		if !errors.Is(err, ErrNotEnoughShards) {
			t.Fatalf("%s: CommitPut: %v, want ErrNotEnoughShards", tc.name, err)
		}
		if fc.fsm.Blob("models/v1") != nil || fc.fsm.PendingBlob(begin.BlobId) == nil {
			t.Fatalf("%s: the refused commit changed the registry", tc.name)
		}
	}
	// Once block 1 is written the client's retry commits.
	if _, err := s.WriteShards(context.Background(), feed([]*pb.WriteShardsRequest{msgs[0], msgs[2]}, io.EOF)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CommitPut(context.Background(), &pb.CommitPutRequest{Blob: st.Blob}, ""); err != nil {
		t.Fatalf("CommitPut once every shard is held: %v", err)
	}
	if got := readBlob(t, s, "models/v1"); !bytes.Equal(got, data) {
		t.Fatal("read back other bytes than put")
	}
}

func TestCommitPutChecksTheMetadata(t *testing.T) {
	s, fc := stripedStore(t)
	data := randomData(2*MinBlockSize+5, 7)
	begin := beginPut(t, s, &pb.BlobPutHeader{Name: "models/v1", Size: int64(len(data))})
	other := beginPut(t, s, &pb.BlobPutHeader{Name: "models/other"})
	st := StripeBlob(t, begin, "models/v1", data)
	writeAll(t, s, st)
	for _, tc := range []struct {
		name string
		edit func(b *pb.Blob)
		want error
	}{
		{"bad name", func(b *pb.Blob) { b.Name = "a//b" }, ErrInvalidArgument},
		{"another name", func(b *pb.Blob) { b.Name = "models/other" }, ErrInvalidArgument},
		{"another put's id", func(b *pb.Blob) { b.Id = other.BlobId }, ErrInvalidArgument},
		{"unknown id", func(b *pb.Blob) { b.Id = "00112233445566778899aabbccddeeff" }, ErrNotFound},
		{"other scheme", func(b *pb.Blob) { b.ParityShards = 1 }, ErrInvalidArgument},
		{"other block size", func(b *pb.Blob) { b.BlockSize *= 2 }, ErrInvalidArgument},
		{"other size", func(b *pb.Blob) { b.Size--; b.Blocks[2].Len-- }, ErrInvalidArgument},
		{"block lengths", func(b *pb.Blob) { b.Blocks[0].Len--; b.Blocks[2].Len++ }, ErrInvalidArgument},
		{"a block missing", func(b *pb.Blob) { b.Blocks = b.Blocks[:2] }, ErrInvalidArgument},
		{"holder past nodes", func(b *pb.Blob) { b.Blocks[1].Holders[0] = 2 }, ErrInvalidArgument},
		{"stranger agent", func(b *pb.Blob) { b.Nodes[0] = "x" }, ErrInvalidArgument},
		{"no holder", func(b *pb.Blob) { b.Blocks[1].Holders[0] = 0 }, ErrNotEnoughShards},
		{"short digest", func(b *pb.Blob) { b.Sha256 = b.Sha256[:16] }, ErrInvalidArgument},
		{"inline bytes", func(b *pb.Blob) { b.Inline = []byte("x") }, ErrInvalidArgument},
		{"holders of another scheme", func(b *pb.Blob) { b.Blocks[0].Holders = append(b.Blocks[0].Holders, 0) }, ErrInvalidArgument},
	} {
		b := proto.Clone(st.Blob).(*pb.Blob)
		tc.edit(b)
		_, err := s.CommitPut(context.Background(), &pb.CommitPutRequest{Blob: b}, "")
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: CommitPut: %v, want %v", tc.name, err, tc.want)
		}
	}
	if fc.fsm.Blob("models/v1") != nil || fc.fsm.Blob("models/other") != nil {
		t.Fatal("a refused commit made a blob visible")
	}
	if _, err := s.CommitPut(context.Background(), &pb.CommitPutRequest{Blob: st.Blob}, ""); err != nil {
		t.Fatalf("CommitPut of the good metadata: %v", err)
	}
	// A second put under the name needs overwrite, as Put does.
	begin2 := beginPut(t, s, &pb.BlobPutHeader{Name: "models/v1", Overwrite: true})
	st2 := StripeBlob(t, begin2, "models/v1", data[:MinBlockSize+1])
	writeAll(t, s, st2)
	if _, err := s.CommitPut(context.Background(), &pb.CommitPutRequest{Blob: st2.Blob}, ""); !errors.Is(err, ErrAlreadyExists) {
		t.Fatalf("commit over an existing blob without overwrite: %v, want ErrAlreadyExists", err)
	}
	if _, err := s.CommitPut(context.Background(), &pb.CommitPutRequest{Blob: st2.Blob, Overwrite: true}, ""); err != nil {
		t.Fatalf("commit with overwrite: %v", err)
	}
	if got := readBlob(t, s, "models/v1"); !bytes.Equal(got, data[:MinBlockSize+1]) {
		t.Fatal("read back other bytes than the overwrite put")
	}
}

// TestLeasedPutIsAbortedOnlyWhenItsLeasePasses: the leader judges a
// client-striped put by its lease, not by the agent that began it.
func TestLeasedPutIsAbortedOnlyWhenItsLeasePasses(t *testing.T) {
	s, fc := stripedStore(t)
	begin := beginPut(t, s, &pb.BlobPutHeader{Name: "models/v1"})
	lease := time.Unix(0, begin.LeaseExpires)
	// The agent that began it is gone: the client still owns the put.
	gone := map[string]string{}
	s.repair.abortStalePuts(context.Background(), gone, lease.Add(-time.Millisecond))
	if fc.fsm.PendingBlob(begin.BlobId) == nil {
		t.Fatal("a put was aborted before its lease passed")
	}
	// The client renews as its lease ends (the leader's clock says so).
	fc.intercept = func(_ context.Context, cmd *pb.Command, apply func() (uint64, error)) (uint64, error) {
		if cmd.GetBlobRenew() != nil {
			cmd.Time = lease.UnixNano()
		}
		return apply()
	}
	expires, _, err := s.RenewPut(context.Background(), "models/v1", begin.BlobId)
	if want := lease.Add(30 * time.Second).UnixNano(); err != nil || expires != want {
		t.Fatalf("RenewPut = %d, %v; want the lease to run from the renewal's time, to %d", expires, err, want)
	}
	s.repair.abortStalePuts(context.Background(), gone, lease.Add(time.Millisecond))
	if fc.fsm.PendingBlob(begin.BlobId) == nil {
		t.Fatal("a renewed put was aborted at its first lease's end")
	}
	s.repair.abortStalePuts(context.Background(), gone, time.Unix(0, expires).Add(time.Millisecond))
	if fc.fsm.PendingBlob(begin.BlobId) != nil {
		t.Fatal("a put whose lease passed is still pending")
	}
	if _, _, err := s.RenewPut(context.Background(), "models/v1", begin.BlobId); !errors.Is(err, ErrNotFound) {
		t.Fatalf("RenewPut of an aborted put: %v, want ErrNotFound", err)
	}
}

// TestNewLeaderCountsPutLeasesOnItsOwnClock: a put's start and lease are
// stamped by the clock of the agent that led when it began. A leader that
// takes over with a clock an hour ahead of that one's sees the lease
// passed an hour ago; it must give the put its lease's ttl from when it
// first saw it, not abort it at once.
func TestNewLeaderCountsPutLeasesOnItsOwnClock(t *testing.T) {
	s, fc := stripedStore(t)
	begin := beginPut(t, s, &pb.BlobPutHeader{Name: "models/v1"})
	took := time.Unix(0, begin.LeaseExpires).Add(time.Hour) // the new leader's clock as it takes over
	s.repair.mu.Lock()
	s.repair.putSeen, s.repair.leadSince = nil, took
	s.repair.mu.Unlock()
	gone := map[string]string{}
	for _, at := range []time.Duration{0, 29 * time.Second} {
		s.repair.abortStalePuts(context.Background(), gone, took.Add(at))
		if fc.fsm.PendingBlob(begin.BlobId) == nil {
			t.Fatalf("a leader %s into its leadership aborted a put begun before it, whose 30 s lease had not passed on its clock", at)
		}
	}
	s.repair.abortStalePuts(context.Background(), gone, took.Add(31*time.Second))
	if fc.fsm.PendingBlob(begin.BlobId) != nil {
		t.Fatal("a put whose lease passed on the new leader's clock is still pending")
	}
}

func TestAbortPut(t *testing.T) {
	s, fc := stripedStore(t)
	begin := beginPut(t, s, &pb.BlobPutHeader{Name: "models/v1"})
	st := StripeBlob(t, begin, "models/v1", randomData(2*MinBlockSize, 8))
	writeAll(t, s, st)
	if _, err := s.AbortPut(context.Background(), "models/other", begin.BlobId); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("AbortPut under another name: %v, want ErrInvalidArgument", err)
	}
	if _, err := s.AbortPut(context.Background(), "models/v1", begin.BlobId); err != nil {
		t.Fatalf("AbortPut: %v", err)
	}
	if fc.fsm.PendingBlob(begin.BlobId) != nil {
		t.Fatal("the put is still pending")
	}
	s.Close() // waits for the shards' deletion
	assertNothingStored(t, s, begin.BlobId)
	if _, err := s.CommitPut(context.Background(), &pb.CommitPutRequest{Blob: st.Blob}, ""); !errors.Is(err, ErrNotFound) {
		t.Fatalf("CommitPut of an aborted put: %v, want ErrNotFound", err)
	}
}

// TestPutsPlaceNoPartOnAnAgentWithoutRoomForIt: an agent that announces
// less room than one part of the blob (the blob's size over k, plus
// framing) gets no shard of it, as a target or a spare, while smaller
// blobs, and blobs of unknown size, still go there; with too few agents
// left with room the put is refused up front, saying so.
func TestPutsPlaceNoPartOnAnAgentWithoutRoomForIt(t *testing.T) {
	cfg := DefaultConfig()
	cfg.BlockSize = MinBlockSize
	cfg.InlineMax = 1024
	s, fc := newTestStore(t, cfg, "n1", "n1", "n2", "n3", "n4")
	fc.setShardRoom("n4", 1<<20) // 1 MiB
	part := shardstore.PartBytes(3<<20, cfg.BlockSize, 2)
	if part <= 1<<20 || part > 2<<20 {
		t.Fatalf("a 3 MiB blob's 2+1 part is %d bytes, want 1.5 MiB and its framing", part)
	}
	onN4 := func(begin *pb.BeginPutResponse) bool {
		for _, a := range append(begin.Targets, begin.Spares...) {
			if a.Node == "n4" {
				return true
			}
		}
		return false
	}
	small := 0
	for i := range 20 { // placement depends on the blob id: many ids
		begin := beginPut(t, s, &pb.BlobPutHeader{Name: fmt.Sprintf("big%d", i), Size: 3 << 20, DataShards: 2, ParityShards: 1})
		if onN4(begin) || len(begin.Targets) != 3 {
			t.Fatalf("put %d of 3 MiB: targets %v spares %v; want three, none on n4 (1 MiB of room)", i, begin.Targets, begin.Spares)
		}
		if onN4(beginPut(t, s, &pb.BlobPutHeader{Name: fmt.Sprintf("small%d", i), Size: 256 << 10, DataShards: 2, ParityShards: 1})) {
			small++
		}
		if !onN4(beginPut(t, s, &pb.BlobPutHeader{Name: fmt.Sprintf("unknown%d", i), DataShards: 2, ParityShards: 1})) {
			t.Fatalf("put %d of unknown size: n4 left out", i)
		}
	}
	if small == 0 {
		t.Fatal("no put of 256 KiB, whose part fits in n4's room, went to n4")
	}
	fc.setShardRoom("n3", 1<<20)
	_, err := s.BeginPut(context.Background(), &pb.BlobPutHeader{Name: "wide", Size: 3 << 20, DataShards: 2, ParityShards: 1}, "")
	if !errors.Is(err, ErrNotEnoughShards) || !strings.Contains(err.Error(), "2 more alive with too little room in their shard stores for this blob's part") {
		t.Fatalf("3 MiB 2+1 put with two of four agents short of room: %v, want not enough shards saying why", err)
	}
}

// TestPutsPlaceNoShardOnAFullOrLeavingAgent: an agent whose shard store
// says it is full, or that is leaving the cluster and hands its shards
// off, gets no shard of a new put, as a target or a spare, so a 2+1 put
// on four agents with one such is placed whole on the other three; with
// too few agents left to take shards, the put is refused saying why.
func TestPutsPlaceNoShardOnAFullOrLeavingAgent(t *testing.T) {
	for _, tc := range []struct {
		what string
		set  func(fc *fakeCluster, node string)
		says string
	}{
		{"full", func(fc *fakeCluster, node string) { fc.setShardsFull(node, true) }, "2 more alive with full shard stores"},
		{"leaving", func(fc *fakeCluster, node string) { fc.setLeaving(node, true) }, "2 more alive and leaving the cluster"},
	} {
		t.Run(tc.what, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.BlockSize = MinBlockSize
			cfg.InlineMax = 1024
			s, fc := newTestStore(t, cfg, "n1", "n1", "n2", "n3", "n4")
			tc.set(fc, "n4")
			for i := range 20 { // placement depends on the blob id: many ids
				begin := beginPut(t, s, &pb.BlobPutHeader{Name: fmt.Sprintf("b%d", i), Size: 1 << 20, DataShards: 2, ParityShards: 1})
				for _, a := range append(begin.Targets, begin.Spares...) {
					if a.Node == "n4" {
						t.Fatalf("put %d: the %s agent n4 is a target or spare: targets %v spares %v", i, tc.what, begin.Targets, begin.Spares)
					}
				}
				if len(begin.Targets) != 3 {
					t.Fatalf("put %d: targets %v, want three", i, begin.Targets)
				}
			}
			tc.set(fc, "n3")
			_, err := s.BeginPut(context.Background(), &pb.BlobPutHeader{Name: "wide", Size: 1 << 20, DataShards: 2, ParityShards: 1}, "")
			if !errors.Is(err, ErrNotEnoughShards) || !strings.Contains(err.Error(), tc.says) {
				t.Fatalf("2+1 put with two of four agents %s: %v, want not enough shards saying %q", tc.what, err, tc.says)
			}
		})
	}
}

// TestAPutIsStampedByTheAgentsClock: the put an agent begins carries its
// clock's time (Config.Now), which leaders compare with their own when
// they judge the put, and so does the lease estimate it answers with.
func TestAPutIsStampedByTheAgentsClock(t *testing.T) {
	cfg := DefaultConfig()
	cfg.BlockSize = MinBlockSize
	cfg.InlineMax = 1024
	ahead := time.Now().Add(time.Hour)
	cfg.Now = func() time.Time { return ahead }
	s, fc := newTestStore(t, cfg, "a", "a")
	begin := beginPut(t, s, &pb.BlobPutHeader{Name: "models/v1"})
	p := fc.fsm.PendingBlob(begin.BlobId)
	if p == nil {
		t.Fatal("the put is not pending")
	}
	if got := time.Unix(0, p.Started); !got.Equal(ahead) {
		t.Errorf("the put started at %s, want the agent's clock, %s", got, ahead)
	}
	if got, want := s.leaseExpires(context.Background(), "no such put", 0), ahead.Add(cfg.PutLease).UnixNano(); got != want {
		t.Errorf("the lease estimate of a put the replica lacks: %d, want %d (the agent's clock plus the lease)", got, want)
	}
}

// TestLeasedPutOutlivesItsLeadersStall: time the leader did not run
// (stopped, paused, starved) moves a put's lease as late: the renewals
// the client sent meanwhile wait unread in the leader's sockets.
func TestLeasedPutOutlivesItsLeadersStall(t *testing.T) {
	var lost time.Duration
	cfg := DefaultConfig()
	cfg.BlockSize, cfg.InlineMax = MinBlockSize, 1024
	cfg.Lost = func() time.Duration { return lost }
	s, fc := newTestStore(t, cfg, "a", "a")
	begin := beginPut(t, s, &pb.BlobPutHeader{Name: "models/v1"})
	lease := time.Unix(0, begin.LeaseExpires)
	gone := map[string]string{}
	s.repair.abortStalePuts(context.Background(), gone, lease.Add(-time.Millisecond))

	lost = 10 * time.Second // the leader was stopped across the lease's end
	s.repair.mu.Lock()
	s.repair.catchUp()
	s.repair.mu.Unlock()
	s.repair.abortStalePuts(context.Background(), gone, lease.Add(time.Millisecond))
	if fc.fsm.PendingBlob(begin.BlobId) == nil {
		t.Fatal("a put was aborted at its lease's end although the leader had not run for 10 s of it")
	}
	s.repair.abortStalePuts(context.Background(), gone, lease.Add(10*time.Second+time.Millisecond))
	if fc.fsm.PendingBlob(begin.BlobId) != nil {
		t.Fatal("a put is still pending past its lease moved by the time the leader lost")
	}
}
