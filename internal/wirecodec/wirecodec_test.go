package wirecodec

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"unsafe"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/experimental"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/internal/grpctest"
)

func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = seed + byte(i*7)
	}
	return b
}

// roundTrip marshals msg with the codec and decodes the bytes with
// protobuf itself: what a peer with grpc-go's own codec reads.
func roundTrip(t *testing.T, msg, into proto.Message) mem.BufferSlice {
	t.Helper()
	data, err := Codec{}.Marshal(msg)
	if err != nil {
		t.Fatal(err)
	}
	if err := proto.Unmarshal(data.Materialize(), into); err != nil {
		t.Fatalf("protobuf cannot read what the codec wrote: %v", err)
	}
	if !proto.Equal(msg, into) {
		t.Fatalf("read back %v, want %v", into, msg)
	}
	return data
}

func TestMessagesReadBackAsProtobufWroteThem(t *testing.T) {
	msgs := []proto.Message{
		&pb.PutShardRequest{Ref: &pb.ShardRef{BlobId: "ab12", Block: 3, Index: 1}, DataShards: 2, ParityShards: 1,
			BlockLen: 100, Sum: 7, Payload: pattern(300<<10, 1), Staged: true, BlockSize: 1 << 20},
		&pb.GetShardResponse{Sum: 9, Payload: pattern(200<<10, 2)},
		&pb.GetShardResponse{Sum: 9, Payload: []byte("small")},
		&pb.GetShardResponse{Sum: 9},
		&pb.BlobGetResponse{Blob: &pb.Blob{Name: "a/b", Size: 5}, Chunk: pattern(64<<10, 3)},
		&pb.BlobPutRequest{Msg: &pb.BlobPutRequest_Chunk{Chunk: pattern(512<<10, 4)}},
		&pb.BlobPutRequest{Msg: &pb.BlobPutRequest_Header{Header: &pb.BlobPutHeader{Name: "x", Size: 9}}},
	}
	for _, lend := range []bool{false, true} {
		for _, msg := range msgs {
			t.Run(fmt.Sprintf("%T/lent=%v", msg, lend), func(t *testing.T) {
				released := 0
				var reclaim func()
				if lend {
					var field protoreflect.Name = "payload"
					if _, ok := msg.(*pb.BlobGetResponse); ok {
						field = "chunk"
					}
					reclaim = Lend(msg, field, func() { released++ })
				}
				data := roundTrip(t, msg, msg.ProtoReflect().New().Interface())
				data.Free()
				if reclaim != nil {
					reclaim()
					if released != 1 {
						t.Fatalf("release called %d times, want once", released)
					}
				}
			})
		}
	}
}

func TestLentBytesAreReleasedWhenGRPCFreesThemNotBefore(t *testing.T) {
	payload := pattern(256<<10, 5)
	msg := &pb.BlobGetResponse{Chunk: payload}
	var released atomic.Int32
	reclaim := Lend(msg, "chunk", func() { released.Add(1) })
	data, err := Codec{}.Marshal(msg)
	if err != nil {
		t.Fatal(err)
	}
	reclaim() // Marshal took the loan: nothing to do
	if released.Load() != 0 {
		t.Fatal("released before gRPC freed the message")
	}
	if !bytes.Equal(msg.Chunk, payload) {
		t.Fatal("Marshal left the lent field changed")
	}
	var copied int
	for _, b := range data {
		if len(b.ReadOnlyData()) > 0 && &b.ReadOnlyData()[0] == &payload[0] {
			copied = -1
		}
	}
	if copied == 0 {
		t.Fatal("the lent bytes were copied, not written by reference")
	}
	data.Ref() // a second holder, as gRPC's retry buffer is
	data.Free()
	if released.Load() != 0 {
		t.Fatal("released while a reference was held")
	}
	data.Free()
	if released.Load() != 1 {
		t.Fatalf("released %d times once freed, want once", released.Load())
	}
}

func TestReclaimReleasesALoanNeverMarshalled(t *testing.T) {
	msg := &pb.PutShardRequest{Payload: pattern(8<<10, 6)}
	released := 0
	reclaim := Lend(msg, "payload", func() { released++ })
	reclaim()
	reclaim()
	if released != 1 {
		t.Fatalf("release called %d times, want once", released)
	}
	// The loan is gone: the next Marshal copies as usual.
	data, err := Codec{}.Marshal(msg)
	if err != nil {
		t.Fatal(err)
	}
	defer data.Free()
	if released != 1 {
		t.Fatal("a reclaimed loan was released again")
	}
}

func TestLendOfAFieldThatIsNotBytesCopies(t *testing.T) {
	msg := &pb.PutShardRequest{BlockLen: 4, Payload: pattern(8<<10, 7)}
	released := 0
	reclaim := Lend(msg, "block_len", func() { released++ })
	data := roundTrip(t, msg, &pb.PutShardRequest{})
	data.Free()
	reclaim()
	if released != 1 {
		t.Fatalf("release called %d times, want once", released)
	}
}

func TestBorrowedFieldPointsIntoTheReceivedBuffer(t *testing.T) {
	want := &pb.BlobPutRequest{Msg: &pb.BlobPutRequest_Chunk{Chunk: pattern(100<<10, 8)}}
	wire, err := proto.Marshal(want)
	if err != nil {
		t.Fatal(err)
	}
	// Two frames, as HTTP/2 delivers a large message.
	data := mem.BufferSlice{mem.Copy(wire[:1000], pool{}), mem.Copy(wire[1000:], pool{})}
	got := &pb.BlobPutRequest{}
	done := Borrow(got, "chunk")
	if err := (Codec{}).Unmarshal(data, got); err != nil {
		t.Fatal(err)
	}
	data.Free() // gRPC frees its frames after Unmarshal
	free := done()
	if !proto.Equal(got, want) {
		t.Fatal("borrowed message differs from the one sent")
	}
	free()

	// A header is not borrowed: nothing to free, and it reads right.
	hdr := &pb.BlobPutRequest{Msg: &pb.BlobPutRequest_Header{Header: &pb.BlobPutHeader{Name: "n"}}}
	wire, _ = proto.Marshal(hdr)
	got = &pb.BlobPutRequest{Msg: &pb.BlobPutRequest_Chunk{Chunk: []byte("stale")}}
	done = Borrow(got, "chunk")
	if err := (Codec{}).Unmarshal(mem.BufferSlice{mem.SliceBuffer(wire)}, got); err != nil {
		t.Fatal(err)
	}
	done()()
	if !proto.Equal(got, hdr) {
		t.Fatalf("got %v, want %v: a borrowed message must be reset first", got, hdr)
	}
}

// A borrowed field in a oneof is what protobuf makes of the wire: the
// field of the oneof that comes last wins, the borrowed one or another.
func TestBorrowedFieldInAOneofYieldsToTheFieldAfterIt(t *testing.T) {
	marshal := func(m proto.Message) []byte {
		b, err := proto.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	chunk := marshal(&pb.BlobPutRequest{Msg: &pb.BlobPutRequest_Chunk{Chunk: pattern(100<<10, 8)}})
	other := marshal(&pb.BlobPutRequest{Msg: &pb.BlobPutRequest_Chunk{Chunk: pattern(50<<10, 9)}})
	hdr := marshal(&pb.BlobPutRequest{Msg: &pb.BlobPutRequest_Header{Header: &pb.BlobPutHeader{Name: "n", Size: 9}}})
	for _, wire := range [][]byte{
		bytes.Join([][]byte{chunk, hdr}, nil), // a header after the chunk: a header
		bytes.Join([][]byte{hdr, chunk}, nil),
		bytes.Join([][]byte{chunk, hdr, other}, nil),
		bytes.Join([][]byte{chunk, other}, nil),
	} {
		want := &pb.BlobPutRequest{}
		if err := proto.Unmarshal(wire, want); err != nil {
			t.Fatal(err)
		}
		got := &pb.BlobPutRequest{}
		done := Borrow(got, "chunk")
		data := mem.BufferSlice{mem.Copy(wire[:1000], pool{}), mem.Copy(wire[1000:], pool{})}
		if err := (Codec{}).Unmarshal(data, got); err != nil {
			t.Fatal(err)
		}
		data.Free()
		free := done()
		if !proto.Equal(got, want) {
			t.Errorf("borrowed %s; protobuf reads %s", describe(got), describe(want))
		}
		free()
	}
}

// describe names what a BlobPutRequest holds.
func describe(m *pb.BlobPutRequest) string {
	if m.GetHeader() != nil {
		return "a header"
	}
	return fmt.Sprintf("a chunk of %d bytes", len(m.GetChunk()))
}

func TestBorrowedUnmarshalRefusesBadInput(t *testing.T) {
	for _, wire := range [][]byte{
		{0x12, 0x05, 'a'},  // chunk longer than the message
		{0x12},             // tag without a length
		{0x0a, 0x03, 0xff}, // header cut short
		{0xff, 0xff, 0xff}, // not a tag
		{0x1a, 0x02, 1, 2}, // unknown field: kept, not an error
	} {
		got := &pb.BlobPutRequest{}
		done := Borrow(got, "chunk")
		err := Codec{}.Unmarshal(mem.BufferSlice{mem.SliceBuffer(wire)}, got)
		done()()
		perr := proto.Unmarshal(wire, &pb.BlobPutRequest{})
		if (err == nil) != (perr == nil) {
			t.Errorf("% x: codec says %v, protobuf says %v", wire, err, perr)
		}
	}
}

// blobs streams chunks both ways over a real gRPC connection on loopback,
// the server lending chunks cut from two buffers it rewrites as soon as a
// loan comes back, the receivers borrowing: any byte written too early
// or read too late shows as a wrong chunk, or as a race under -race.
type blobs struct {
	pb.UnimplementedBlobsServer
	chunks, size int
	received     chan error
}

func chunkOf(i, size int) []byte { return pattern(size, byte(i)) }

func (s *blobs) Get(_ *pb.BlobGetRequest, stream grpc.ServerStreamingServer[pb.BlobGetResponse]) error {
	bufs := [2][]byte{make([]byte, s.size), make([]byte, s.size)}
	free := [2]chan struct{}{make(chan struct{}, 1), make(chan struct{}, 1)}
	free[0] <- struct{}{}
	free[1] <- struct{}{}
	for i := range s.chunks {
		j := i % 2
		<-free[j] // gRPC is done with this buffer's last chunk
		copy(bufs[j], chunkOf(i, s.size))
		msg := &pb.BlobGetResponse{Chunk: bufs[j]}
		reclaim := Lend(msg, "chunk", func() { free[j] <- struct{}{} })
		err := stream.Send(msg)
		reclaim()
		if err != nil {
			return err
		}
	}
	return nil
}

func (s *blobs) Put(stream grpc.ClientStreamingServer[pb.BlobPutRequest, pb.BlobPutResponse]) error {
	var err error
	for i := 0; ; i++ {
		msg := &pb.BlobPutRequest{}
		done := Borrow(msg, "chunk")
		rerr := stream.RecvMsg(msg)
		free := done()
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return rerr
		}
		if err == nil && !bytes.Equal(msg.GetChunk(), chunkOf(i, s.size)) {
			err = fmt.Errorf("chunk %d arrived wrong", i)
		}
		free()
	}
	s.received <- err
	return stream.SendAndClose(&pb.BlobPutResponse{})
}

// dial serves what register adds on 127.0.0.1, and returns a connection
// to it with opts, both with the Codec and its buffer pool.
func dial(t *testing.T, register func(*grpc.Server), opts ...grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	addr := grpctest.Serve(t, register, grpc.ForceServerCodecV2(Codec{}), experimental.BufferPool(BufferPool()))
	conn, err := grpc.NewClient(addr, append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.ForceCodecV2(Codec{})), experimental.WithBufferPool(BufferPool())}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func serve(t *testing.T, srv *blobs) pb.BlobsClient {
	t.Helper()
	return pb.NewBlobsClient(dial(t, func(s *grpc.Server) { pb.RegisterBlobsServer(s, srv) }))
}

func TestLentAndBorrowedChunksCrossGRPCIntact(t *testing.T) {
	srv := &blobs{chunks: 64, size: 100 << 10, received: make(chan error, 1)}
	c := serve(t, srv)
	ctx := context.Background()

	get, err := c.Get(ctx, &pb.BlobGetRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; ; i++ {
		msg := &pb.BlobGetResponse{}
		done := Borrow(msg, "chunk")
		err := get.RecvMsg(msg)
		free := done()
		if errors.Is(err, io.EOF) {
			if i != srv.chunks {
				t.Fatalf("got %d chunks, want %d", i, srv.chunks)
			}
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(msg.Chunk, chunkOf(i, srv.size)) {
			t.Fatalf("chunk %d arrived wrong", i)
		}
		free()
	}

	put, err := c.Put(ctx)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, srv.size)
	for i := range srv.chunks {
		copy(buf, chunkOf(i, srv.size))
		msg := &pb.BlobPutRequest{Msg: &pb.BlobPutRequest_Chunk{Chunk: buf}}
		if err := put.Send(msg); err != nil {
			t.Fatal(err)
		}
		// Not lent: the codec copied buf, which may change at once.
	}
	if _, err := put.CloseAndRecv(); err != nil {
		t.Fatal(err)
	}
	if err := <-srv.received; err != nil {
		t.Fatal(err)
	}
}

// shards checks that each PutShard request's payload is the pattern its
// sum names, at the start of the handler and again at its end: a payload
// freed (and its buffer reused by another request) before the handler
// returns shows as a mismatch, or a race under -race.
type shards struct {
	pb.UnimplementedShardsServer
	size int
}

func (s *shards) PutShard(_ context.Context, req *pb.PutShardRequest) (*pb.PutShardResponse, error) {
	want := pattern(s.size, byte(req.Sum))
	for range 2 {
		if !bytes.Equal(req.Payload, want) {
			return nil, fmt.Errorf("payload %d arrived wrong", req.Sum)
		}
		runtime.Gosched()
	}
	return &pb.PutShardResponse{}, nil
}

func TestBorrowedUnaryRequestsStayValidUntilTheHandlerReturns(t *testing.T) {
	srv := &shards{size: 64 << 10}
	c := pb.NewShardsClient(dial(t, func(s *grpc.Server) {
		s.RegisterService(BorrowIn(&pb.Shards_ServiceDesc, "PutShard", "payload"), srv)
	}))
	errs := make(chan error, 4)
	for g := range 4 {
		go func() {
			for i := range 30 {
				seed := uint32(g*30 + i)
				_, err := c.PutShard(context.Background(), &pb.PutShardRequest{Sum: seed, Payload: pattern(srv.size, byte(seed))})
				if err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	for range 4 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if got := BorrowIn(&pb.Shards_ServiceDesc, "PutShard", "payload"); &got.Methods[0] == &pb.Shards_ServiceDesc.Methods[0] {
		t.Fatal("BorrowIn changed the generated ServiceDesc instead of a copy")
	}
}

type shardReader struct {
	pb.UnimplementedShardsServer
	size int
}

func (s *shardReader) GetShard(_ context.Context, req *pb.GetShardRequest) (*pb.GetShardResponse, error) {
	seed := byte(req.GetRef().GetBlock())
	return &pb.GetShardResponse{Sum: uint32(seed), Payload: pattern(s.size, seed)}, nil
}

func TestReadIntoPutsAReplysBytesInTheCallersBuffer(t *testing.T) {
	srv := &shardReader{size: 96 << 10}
	c := pb.NewShardsClient(dial(t, func(s *grpc.Server) { pb.RegisterShardsServer(s, srv) }, grpc.WithChainUnaryInterceptor(ReadInto)))
	block := make([]byte, 4*srv.size)
	errs := make(chan error, 4)
	for i := range 4 {
		go func() {
			dst := block[i*srv.size : i*srv.size : (i+1)*srv.size]
			for round := range 10 {
				seed := uint32(i*10 + round)
				ctx := WithDestination(context.Background(), "payload", dst)
				resp, err := c.GetShard(ctx, &pb.GetShardRequest{Ref: &pb.ShardRef{Block: seed}})
				switch {
				case err != nil:
				case !bytes.Equal(resp.Payload, pattern(srv.size, byte(seed))):
					err = fmt.Errorf("shard %d arrived wrong", seed)
				case &resp.Payload[0] != &block[i*srv.size]:
					err = fmt.Errorf("shard %d was not read into its place in the block", seed)
				}
				if err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	for range 4 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	// Too small a destination, or none: a buffer of its own.
	for _, ctx := range []context.Context{
		WithDestination(context.Background(), "payload", make([]byte, 0, 10)),
		WithDestination(context.Background(), "sum", block),
		context.Background(),
	} {
		resp, err := c.GetShard(ctx, &pb.GetShardRequest{Ref: &pb.ShardRef{Block: 7}})
		if err != nil || !bytes.Equal(resp.Payload, pattern(srv.size, 7)) {
			t.Fatalf("GetShard: %v, or wrong payload", err)
		}
		if &resp.Payload[0] == &block[0] {
			t.Fatal("a reply was read into a destination it was not given")
		}
	}
}

// countingPool is a buffer pool that counts the buffers given back.
type countingPool struct{ put atomic.Int32 }

func (p *countingPool) Get(n int) *[]byte { b := make([]byte, n); return &b }
func (p *countingPool) Put(*[]byte)       { p.put.Add(1) }

// framesOf cuts wire into frames at cuts, each in a buffer of pl's, as
// gRPC hands a received message to the codec.
func framesOf(wire []byte, pl mem.BufferPool, cuts ...int) mem.BufferSlice {
	var data mem.BufferSlice
	at := 0
	for _, c := range append(cuts, len(wire)) {
		b := pl.Get(c - at)
		copy(*b, wire[at:c])
		data = append(data, mem.NewBuffer(b, pl))
		at = c
	}
	return data
}

func TestBorrowedPiecesStayInTheFramesTheyArrivedIn(t *testing.T) {
	payload := pattern(100<<10, 5)
	for _, want := range []*pb.ReadShardsResponse{
		{Shard: &pb.ShardPos{Block: 7, Index: 2}, Sum: 0xdeadbeef, Payload: payload},
		{Shard: &pb.ShardPos{Block: 1}, Payload: payload, Error: "after the payload"},
	} {
		wire, err := proto.Marshal(want)
		if err != nil {
			t.Fatal(err)
		}
		at := len(wire) - len(payload) // where the payload starts
		for _, cuts := range [][]int{
			nil,                                // one frame
			{16 << 10, 32 << 10, 48 << 10},     // frames of 16 KiB
			{1, 2, 3, 4, 5, 6, at - 1, at + 1}, // tags and lengths cut
			{at - 2, at, at + 5, at + 5},       // an empty frame
			{at + len(payload) - 3},            // the payload's end cut
		} {
			t.Run(fmt.Sprintf("error=%v/cuts=%v", want.Error != "", cuts), func(t *testing.T) {
				if want.Error != "" {
					for i := range cuts {
						cuts[i] = min(cuts[i], len(wire))
					}
				}
				var pl countingPool
				data := framesOf(wire, &pl, cuts...)
				pooled := pooledFrames(data)
				got := &pb.ReadShardsResponse{Payload: []byte("stale")}
				done := BorrowPieces(got, "payload")
				if err := (Codec{}).Unmarshal(data, got); err != nil {
					t.Fatal(err)
				}
				data.Free() // gRPC frees its frames after Unmarshal
				pieces, free := done()
				if got.Payload != nil {
					t.Fatalf("the field was set (%d bytes); want it left in the frames", len(got.Payload))
				}
				if !bytes.Equal(bytes.Join(pieces, nil), payload) {
					t.Fatal("the pieces are not the payload sent")
				}
				got.Payload = payload
				if !proto.Equal(got, want) {
					t.Fatalf("got %v, want %v", got, want)
				}
				for _, p := range pieces {
					if !inFrames(p, data) {
						t.Fatal("a piece is a copy, not a slice of the frame it arrived in")
					}
				}
				if n := pl.put.Load(); n != 0 {
					t.Fatalf("%d frames went back to the pool before free", n)
				}
				free()
				if n := pl.put.Load(); int(n) != pooled {
					t.Fatalf("%d of %d pooled frames went back to the pool after free", n, pooled)
				}
			})
		}
	}

	// A message without the field: nothing kept, nothing to free.
	wire, _ := proto.Marshal(&pb.ReadShardsResponse{Shard: &pb.ShardPos{Block: 3}, Error: "missing"})
	var pl countingPool
	data := framesOf(wire, &pl, 3)
	got := &pb.ReadShardsResponse{}
	done := BorrowPieces(got, "payload")
	if err := (Codec{}).Unmarshal(data, got); err != nil {
		t.Fatal(err)
	}
	data.Free()
	pieces, free := done()
	free()
	if pieces != nil || got.Error != "missing" || got.Shard.GetBlock() != 3 {
		t.Fatalf("pieces %d, message %v", len(pieces), got)
	}
}

// pooledFrames counts the buffers of data that go back to a pool: gRPC
// leaves buffers below its pooling threshold to the garbage collector.
func pooledFrames(data mem.BufferSlice) int {
	n := 0
	for _, b := range data {
		if !mem.IsBelowBufferPoolingThreshold(b.Len()) {
			n++
		}
	}
	return n
}

// inFrames reports whether p is a slice of one of data's buffers.
func inFrames(p []byte, data mem.BufferSlice) bool {
	for _, b := range data {
		f := b.ReadOnlyData()
		if len(f) > 0 && len(p) > 0 &&
			uintptr(unsafe.Pointer(&p[0])) >= uintptr(unsafe.Pointer(&f[0])) &&
			uintptr(unsafe.Pointer(&p[len(p)-1])) <= uintptr(unsafe.Pointer(&f[len(f)-1])) {
			return true
		}
	}
	return false
}

func TestBorrowedPiecesRefuseBadInputAsProtobufDoes(t *testing.T) {
	for _, wire := range [][]byte{
		{0x1a, 0x05, 'a'},                 // payload longer than the message
		{0x1a},                            // tag without a length
		{0x0a, 0x03, 0xff},                // shard position cut short
		{0xff, 0xff, 0xff},                // not a tag
		{0x15, 1, 2},                      // fixed32 cut short
		{0x10, 0x80},                      // varint cut short
		{0x2a, 0x02, 1, 2},                // unknown field: kept, not an error
		{0x1a, 0x01, 9, 0x15, 1, 2, 3, 4}, // payload, then the sum
	} {
		for cut := 0; cut <= len(wire); cut++ {
			got := &pb.ReadShardsResponse{}
			done := BorrowPieces(got, "payload")
			data := framesOf(wire, mem.DefaultBufferPool(), cut)
			err := Codec{}.Unmarshal(data, got)
			data.Free()
			pieces, free := done()
			want := &pb.ReadShardsResponse{}
			perr := proto.Unmarshal(wire, want)
			if (err == nil) != (perr == nil) {
				t.Errorf("% x cut at %d: codec says %v, protobuf says %v", wire, cut, err, perr)
			}
			if err == nil {
				got.Payload = bytes.Join(pieces, nil)
				if !proto.Equal(got, want) && !(len(got.Payload) == 0 && len(want.Payload) == 0) {
					t.Errorf("% x cut at %d: got %v, protobuf read %v", wire, cut, got, want)
				}
			}
			free()
		}
	}

	// Groups are not proto3's: refused with the field named.
	got := &pb.ReadShardsResponse{}
	done := BorrowPieces(got, "payload")
	err := Codec{}.Unmarshal(mem.BufferSlice{mem.SliceBuffer([]byte{0x2b, 0x2c})}, got)
	_, free := done()
	free()
	if err == nil || !strings.Contains(err.Error(), "field 5") {
		t.Fatalf("a group field: got %v, want an error naming field 5", err)
	}
}

func TestBorrowedPiecesCrossGRPCIntactUntilFreed(t *testing.T) {
	srv := &blobs{chunks: 64, size: 100 << 10, received: make(chan error, 1)}
	c := serve(t, srv)
	get, err := c.Get(context.Background(), &pb.BlobGetRequest{})
	if err != nil {
		t.Fatal(err)
	}
	// Every chunk is held until the last has arrived: a frame given back
	// to the pool too early is written over by a later chunk.
	var held [][][]byte
	var frees []func()
	for {
		msg := &pb.BlobGetResponse{}
		done := BorrowPieces(msg, "chunk")
		err := get.RecvMsg(msg)
		pieces, free := done()
		frees = append(frees, free)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, pieces)
	}
	if len(held) != srv.chunks {
		t.Fatalf("got %d chunks, want %d", len(held), srv.chunks)
	}
	for i, pieces := range held {
		if len(pieces) < 2 {
			t.Errorf("chunk %d came in %d piece(s); a chunk of %d bytes arrives in several frames", i, len(pieces), srv.size)
		}
		if !bytes.Equal(bytes.Join(pieces, nil), chunkOf(i, srv.size)) {
			t.Fatalf("chunk %d changed before it was freed", i)
		}
	}
	for _, free := range frees {
		free()
	}
}
