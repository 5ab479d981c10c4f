package client

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"maps"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/zrpcio/zrpc/api/apierr"
	"github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/internal/pki/pkitest"
	"github.com/zrpcio/zrpc/internal/testlog"
	"github.com/zrpcio/zrpc/internal/tlsconf"
	"github.com/zrpcio/zrpc/node"
	"github.com/zrpcio/zrpc/storage/shardstore"
	"github.com/zrpcio/zrpc/testcluster"
)

// testBlockSize is the block size of the striped read tests: blobs of many
// blocks out of little data.
const testBlockSize = 64 << 10

// newStripeCluster starts three agents storing blobs in 64 KiB blocks
// (2+1 shards each) with quick repair, and waits until every agent's
// replica sees all three alive.
func newStripeCluster(t *testing.T, opts ...testcluster.Option) *testcluster.Cluster {
	t.Helper()
	c := testcluster.New(t, 3, append([]testcluster.Option{testcluster.WithConfig(func(cfg *node.Config) {
		cfg.BlobBlockSize = testBlockSize
		cfg.BlobRepairInterval = 200 * time.Millisecond
		cfg.BlobRepairDelay = 500 * time.Millisecond
		cfg.BlobScrubRate = 0
	})}, opts...)...)
	for i := range 3 {
		c.WaitFor(20*time.Second, "every agent sees three alive", func() bool {
			alive := 0
			for _, n := range c.Node(i).Store().FSM().Nodes() {
				if n.Health == zrpcpb.Health_PASSING {
					alive++
				}
			}
			return alive == 3
		})
	}
	return c
}

// callLog records the calls a client makes: how many of each method, and
// which shards ReadShards asked for. fail, when set, answers a call
// instead of the agent when it returns an error.
type callLog struct {
	mu    sync.Mutex
	calls map[string]int
	asked map[[2]uint32]int // by block and index
	fail  func(method string) error
	// hang and hangToo, when set, are agent addresses whose ReadShards
	// streams send nothing: agents that still answer pings but no longer
	// read.
	hang, hangToo string
}

func newCallLog() *callLog {
	return &callLog{calls: make(map[string]int), asked: make(map[[2]uint32]int)}
}

func (l *callLog) note(method string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.calls[method[strings.LastIndex(method, "/")+1:]]++
	if l.fail != nil {
		return l.fail(method)
	}
	return nil
}

func (l *callLog) count(method string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.calls[method]
}

func (l *callLog) options() []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithChainUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
			if err := l.note(method); err != nil {
				return err
			}
			return invoker(ctx, method, req, reply, cc, opts...)
		}),
		grpc.WithChainStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
			if err := l.note(method); err != nil {
				return nil, err
			}
			s, err := streamer(ctx, desc, cc, method, opts...)
			l.mu.Lock()
			hung := (l.hang != "" && cc.Target() == l.hang || l.hangToo != "" && cc.Target() == l.hangToo) &&
				method == zrpcpb.Blobs_ReadShards_FullMethodName
			l.mu.Unlock()
			if hung && err == nil {
				return hungStream{loggedStream{s, l}}, nil
			}
			return loggedStream{s, l}, err
		}),
	}
}

type loggedStream struct {
	grpc.ClientStream
	l *callLog
}

func (s loggedStream) SendMsg(m any) error {
	if req, ok := m.(*zrpcpb.ReadShardsRequest); ok {
		s.l.mu.Lock()
		for _, p := range req.Shards {
			s.l.asked[[2]uint32{p.Block, p.Index}]++
		}
		s.l.mu.Unlock()
	}
	return s.ClientStream.SendMsg(m)
}

// hungStream sends its request but never receives an answer.
type hungStream struct{ loggedStream }

func (s hungStream) RecvMsg(any) error {
	<-s.Context().Done()
	return s.Context().Err()
}

// loggedClient is a client of every agent of c whose calls l records.
func loggedClient(t *testing.T, c *testcluster.Cluster, l *callLog) *Client {
	t.Helper()
	var eps []string
	for i := range c.Size() {
		eps = append(eps, c.GRPCAddr(i))
	}
	return loggedTokenClient(t, eps, "", l)
}

// loggedTokenClient is a client of endpoints sending token, whose calls l
// records.
func loggedTokenClient(t *testing.T, eps []string, token string, l *callLog) *Client {
	t.Helper()
	cl, err := New(Config{Endpoints: eps, Token: token, Logger: testLogger(t), dialOptions: l.options()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	return cl
}

func stripeCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func randomBlob(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, seed+1))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// putStriped stores data as name and returns its metadata once every
// agent's replica has it.
func putStriped(t *testing.T, c *testcluster.Cluster, cl *Client, name string, data []byte) *zrpcpb.Blob {
	t.Helper()
	resp, err := cl.PutBlob(stripeCtx(t), name, bytes.NewReader(data), PutOptions{})
	if err != nil {
		t.Fatalf("put %s: %v", name, err)
	}
	for i := range c.Size() {
		if err := c.Node(i).Store().FSM().WaitRevision(stripeCtx(t), resp.Header.Revision); err != nil {
			t.Fatal(err)
		}
	}
	return c.Node(0).Store().FSM().Blob(name)
}

// agentOf is the index in c of the agent called name.
func agentOf(t *testing.T, c *testcluster.Cluster, name string) int {
	t.Helper()
	for i := range c.Size() {
		if c.Name(i) == name {
			return i
		}
	}
	t.Fatalf("no agent %s", name)
	return -1
}

// TestGetBlobReadsTheShardsFromTheirHolders: whole and ranged reads (the
// first, last and a middle block, a range inside one block, to the end)
// return the blob's bytes, read from the shards' holders: only the data
// shards holding the range, each once, and no agent's Get.
func TestGetBlobReadsTheShardsFromTheirHolders(t *testing.T) {
	c := newStripeCluster(t)
	l := newCallLog()
	cl := loggedClient(t, c, l)
	data := randomBlob(12*testBlockSize+777, 1) // 13 blocks, the last short
	putStriped(t, c, cl, "striped", data)
	for _, tc := range []struct {
		what        string
		off, length uint64
	}{
		{"whole", 0, 0},
		{"first block", 0, testBlockSize},
		{"last block", 12 * testBlockSize, 0},
		{"middle block", 5 * testBlockSize, testBlockSize},
		{"inside one block", 3*testBlockSize + 100, 1000},
		{"across blocks", 2*testBlockSize - 10, 3*testBlockSize + 20},
		{"to the end", 7*testBlockSize + 5, 0},
		{"past the end", 11 * testBlockSize, 10 * testBlockSize},
	} {
		l.mu.Lock()
		clear(l.asked)
		l.mu.Unlock()
		r, err := cl.GetBlob(stripeCtx(t), "striped", GetOptions{Offset: tc.off, Length: tc.length})
		if err != nil {
			t.Fatalf("%s: %v", tc.what, err)
		}
		got, err := io.ReadAll(r)
		r.Close()
		end := uint64(len(data))
		if tc.length > 0 {
			end = min(end, tc.off+tc.length)
		}
		if err != nil || !bytes.Equal(got, data[tc.off:end]) || r.Size() != end-tc.off {
			t.Fatalf("%s: %d bytes (size %d), %v; want bytes [%d, %d) of the blob", tc.what, len(got), r.Size(), err, tc.off, end)
		}
		want := make(map[[2]uint32]int) // the data shards holding the range
		for blk := tc.off / testBlockSize; blk <= (end-1)/testBlockSize; blk++ {
			start := blk * testBlockSize
			sl := (min(testBlockSize, uint64(len(data))-start) + 1) / 2
			lo, hi := max(tc.off, start)-start, min(end, start+testBlockSize)-start
			for idx := lo / sl; idx*sl < hi; idx++ {
				want[[2]uint32{uint32(blk), uint32(idx)}] = 1
			}
		}
		l.mu.Lock()
		if !maps.Equal(l.asked, want) {
			t.Errorf("%s: shards asked for (block, index: times) %v; want the data shards holding the range once, %v", tc.what, l.asked, want)
		}
		l.mu.Unlock()
	}
	if n := l.count("Get"); n != 0 {
		t.Errorf("%d reads went through an agent's Get", n)
	}
	if _, err := cl.GetBlob(stripeCtx(t), "striped", GetOptions{Offset: uint64(len(data)) + 1}); !errors.Is(err, apierr.ErrInvalidArgument) {
		t.Errorf("offset past the end: %v, want InvalidArgument", err)
	}
}

// TestGetBlobCompletesFromParityWhenAHolderIsKilledMidRead: an agent
// holding data shards is killed while a read is under way; the read
// goes on from parity shards of the other agents and returns the blob,
// its SHA-256 checked, without asking for any shard twice or going
// through an agent's Get.
func TestGetBlobCompletesFromParityWhenAHolderIsKilledMidRead(t *testing.T) {
	// gRPC's smallest window: the victim cannot have sent all its shards
	// before it is killed.
	defer func(w int32) { streamWindow = w }(streamWindow)
	streamWindow = 64 << 10
	c := newStripeCluster(t)
	l := newCallLog()
	cl := loggedClient(t, c, l)
	data := randomBlob(40*testBlockSize, 2)
	b := putStriped(t, c, cl, "kill", data)
	last := b.Blocks[len(b.Blocks)-1]
	victim := agentOf(t, c, b.Holder(last, 0))

	r, err := cl.GetBlob(stripeCtx(t), "kill", GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	head := make([]byte, 2*testBlockSize)
	if _, err := io.ReadFull(r, head); err != nil {
		t.Fatal(err)
	}
	c.Kill(victim)
	rest, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("read after killing %s: %v", c.Name(victim), err)
	}
	if !bytes.Equal(append(head, rest...), data) {
		t.Fatal("read with a holder killed returned different bytes")
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	parity := 0
	for pos, n := range l.asked {
		if n != 1 {
			t.Errorf("shard %d of block %d asked for %d times: the read started over", pos[1], pos[0], n)
		}
		if pos[1] == 2 {
			parity++
		}
	}
	if parity == 0 {
		t.Error("no parity shard was read, yet a data holder was killed")
	}
	if n := l.calls["Get"] + l.calls["Locate"]; n != 1 {
		t.Errorf("%d Locate and Get calls; want the one Locate", n)
	}
}

// TestGetBlobDecodesAroundACorruptShardAndItIsRebuiltAlone: one flipped
// byte in the data shard of block 7 in its holder's part file: the
// client's read returns the blob (block 7 decoded from parity, read only
// for that block), the holder reports the shard, and repair rewrites that
// block in place, leaving the rest of the file as it was.
func TestGetBlobDecodesAroundACorruptShardAndItIsRebuiltAlone(t *testing.T) {
	c := newStripeCluster(t)
	l := newCallLog()
	cl := loggedClient(t, c, l)
	data := randomBlob(12*testBlockSize, 3)
	b := putStriped(t, c, cl, "rot7", data)
	holder := agentOf(t, c, b.Holder(b.Blocks[7], 0))
	shards := c.Node(holder).Blobs().Shards()
	id := shardstore.ID{Blob: b.Id, Block: 7, Index: 0}
	path := shards.Path(id)
	good, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	before, _ := os.Stat(path)
	off, err := shards.PayloadOffset(id)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte{good[off+1000] ^ 0x10}, off+1000); err != nil {
		t.Fatal(err)
	}
	f.Close()

	readStriped(t, cl, "rot7", GetOptions{}, data, "read with block 7's data shard corrupt")
	l.mu.Lock()
	for pos := range l.asked {
		if pos[1] == 2 && pos[0] != 7 {
			t.Errorf("parity of block %d read; only block 7 needed it", pos[0])
		}
	}
	if l.asked[[2]uint32{7, 2}] != 1 {
		t.Error("block 7's parity shard was not read")
	}
	l.mu.Unlock()

	c.WaitFor(20*time.Second, "repair rewrites block 7", func() bool { return shards.Verify(id) == nil })
	after, err := os.Stat(path)
	if err != nil || !os.SameFile(before, after) {
		t.Fatalf("the part file was replaced (%v), not block 7 rewritten in it", err)
	}
	if now, err := os.ReadFile(path); err != nil || !bytes.Equal(now, good) {
		t.Fatalf("part file after repair differs from the one written by the put (%v)", err)
	}
}

// TestGetBlobReadsThroughAnAgentWhenTheHoldersCannotBeReached: when no
// holder answers ReadShards (the client cannot reach them), each block is
// read through an agent's Get, and the whole read still checks out.
func TestGetBlobReadsThroughAnAgentWhenTheHoldersCannotBeReached(t *testing.T) {
	c := newStripeCluster(t)
	l := newCallLog()
	cl := loggedClient(t, c, l)
	data := randomBlob(3*testBlockSize+5, 4)
	putStriped(t, c, cl, "far", data)
	l.mu.Lock()
	l.fail = func(method string) error {
		if method == zrpcpb.Blobs_ReadShards_FullMethodName {
			return status.Error(codes.Unavailable, "no route to host")
		}
		return nil
	}
	l.mu.Unlock()
	readStriped(t, cl, "far", GetOptions{}, data, "read with no holder reachable")
	if n := l.count("Get"); n != 4 {
		t.Errorf("%d Get calls, want one per block (4)", n)
	}
}

// TestGetBlobFallsBackToGetForAnAgentWithoutLocate: an agent that does not
// know Locate (an older one) is read through its Get, and an inline blob
// comes whole with the Locate answer; both check out.
func TestGetBlobFallsBackToGetForAnAgentWithoutLocate(t *testing.T) {
	c := newStripeCluster(t)
	l := newCallLog()
	cl := loggedClient(t, c, l)
	data := randomBlob(2*testBlockSize+9, 5)
	putStriped(t, c, cl, "old", data)
	small := randomBlob(1000, 6)
	putStriped(t, c, cl, "small", small)

	r, err := cl.GetBlob(stripeCtx(t), "small", GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(r)
	if err != nil || !bytes.Equal(got, small) || r.Blob().Size != 1000 {
		t.Fatalf("inline blob: %d bytes, %v", len(got), err)
	}
	r.Close()
	r, err = cl.GetBlob(stripeCtx(t), "small", GetOptions{Offset: 10, Length: 20})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if got, err := io.ReadAll(r); err != nil || !bytes.Equal(got, small[10:30]) {
		t.Fatalf("range of an inline blob: %d bytes, %v", len(got), err)
	}
	if n := l.count("Get") + l.count("ReadShards"); n != 0 {
		t.Errorf("inline reads made %d Get and ReadShards calls; the Locate answer carries the bytes", n)
	}

	l.mu.Lock()
	l.fail = func(method string) error {
		if method == zrpcpb.Blobs_Locate_FullMethodName {
			return status.Error(codes.Unimplemented, "unknown method Locate for service zrpc.v1.Blobs")
		}
		return nil
	}
	l.mu.Unlock()
	for _, opts := range []GetOptions{{}, {Offset: testBlockSize + 1, Length: 10}} {
		r, err := cl.GetBlob(stripeCtx(t), "old", opts)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(r)
		r.Close()
		want := data
		if opts.Length > 0 {
			want = data[opts.Offset : opts.Offset+opts.Length]
		}
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("read through Get (%+v): %d bytes, %v", opts, len(got), err)
		}
	}
	if n := l.count("Get"); n != 2 || l.count("ReadShards") != 0 {
		t.Errorf("%d Get and %d ReadShards calls against an agent without Locate; want 2 Get", n, l.count("ReadShards"))
	}
}

// TestCheckLocatedRefusesMetadataItCannotIndex: a Locate answer whose
// metadata does not add up is an error, never a panic later.
func TestCheckLocatedRefusesMetadataItCannotIndex(t *testing.T) {
	good := func() *zrpcpb.Blob {
		return &zrpcpb.Blob{Name: "a", Size: 10, DataShards: 1, ParityShards: 1, BlockSize: 8, Nodes: []string{"n1", "n2"},
			Blocks: []*zrpcpb.BlobBlock{{Len: 8, Holders: []uint32{1, 2}, Sums: []uint32{0, 0}}, {Len: 2, Holders: []uint32{2, 1}, Sums: []uint32{0, 0}}}}
	}
	addrs := []string{"a:1", "b:1"}
	if err := checkLocated(good(), addrs); err != nil {
		t.Fatalf("good metadata refused: %v", err)
	}
	for what, spoil := range map[string]func(b *zrpcpb.Blob){
		"no data shards":      func(b *zrpcpb.Blob) { b.DataShards = 0 },
		"holder out of range": func(b *zrpcpb.Blob) { b.Blocks[1].Holders[0] = 3 },
		"missing sums":        func(b *zrpcpb.Blob) { b.Blocks[0].Sums = nil },
		"short middle block":  func(b *zrpcpb.Blob) { b.Blocks[0].Len = 7; b.Size = 9 },
		"size off":            func(b *zrpcpb.Blob) { b.Size = 11 },
		"block over its size": func(b *zrpcpb.Blob) { b.Blocks[1].Len = 9; b.Size = 17 },
	} {
		b := good()
		spoil(b)
		if err := checkLocated(b, addrs); err == nil {
			t.Errorf("%s: accepted", what)
		}
	}
	if err := checkLocated(good(), addrs[:1]); err == nil {
		t.Error("fewer addresses than agents: accepted")
	}
}

// TestGetBlobFromTheHoldersUnderACLs: with ACLs on, a token that may read
// blobs under models/ reads one from its holders (each agent checks the
// token the client sends it), is refused a blob elsewhere, and cannot
// read another blob's shards by giving its id under a name it may read.
func TestGetBlobFromTheHoldersUnderACLs(t *testing.T) {
	c := newStripeCluster(t, testcluster.WithConfig(func(cfg *node.Config) { cfg.ACL = true }))
	ctx := stripeCtx(t)
	anon := newTestClient(t, c.GRPCAddr(0))
	_, mgmt, err := anon.ACLBootstrap(ctx)
	if err != nil {
		t.Fatal(err)
	}
	admin := loggedTokenClient(t, []string{c.GRPCAddr(0)}, mgmt, newCallLog())
	if _, err := admin.ACLPolicyCreate(ctx, "models-read", "", `blob "models/" { read }`); err != nil {
		t.Fatal(err)
	}
	_, secret, err := admin.ACLTokenCreate(ctx, "reader", "models-read")
	if err != nil {
		t.Fatal(err)
	}
	data := randomBlob(5*testBlockSize, 7)
	putStriped(t, c, admin, "models/a", data)
	other := putStriped(t, c, admin, "private/b", data)

	l := newCallLog()
	reader := loggedTokenClient(t, []string{c.GRPCAddr(0)}, secret, l)
	r, err := reader.GetBlob(ctx, "models/a", GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(r)
	r.Close()
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read of models/a with a models/ read token: %d bytes, %v", len(got), err)
	}
	if l.count("ReadShards") < 2 || l.count("Get") != 0 {
		t.Errorf("%d ReadShards and %d Get calls; want the shards read from their holders", l.count("ReadShards"), l.count("Get"))
	}
	if _, err := reader.GetBlob(ctx, "private/b", GetOptions{}); !errors.Is(err, apierr.ErrPermissionDenied) {
		t.Errorf("read of private/b with a models/ read token: %v, want PermissionDenied", err)
	}
	holder := agentOf(t, c, other.Holder(other.Blocks[0], 0))
	conn, err := reader.agentConn(c.GRPCAddr(holder))
	if err != nil {
		t.Fatal(err)
	}
	stream, err := zrpcpb.NewBlobsClient(conn).ReadShards(ctx, &zrpcpb.ReadShardsRequest{
		Name: "models/a", BlobId: other.Id, Shards: []*zrpcpb.ShardPos{{Block: 0, Index: 0}},
	})
	if err == nil {
		_, err = stream.Recv()
	}
	if !errors.Is(mapErr(err), apierr.ErrNotFound) {
		t.Errorf("ReadShards of private/b's id under the name models/a: %v, want NotFound", err)
	}
}

// TestGetBlobGivesUpOnAHolderThatStalls: a holder whose stream sends
// nothing (hung, while its connection is fine) is given up on after the
// stall bound, and the read completes from parity shards of the others.
func TestGetBlobGivesUpOnAHolderThatStalls(t *testing.T) {
	c := newStripeCluster(t)
	l := newCallLog()
	cl := loggedClient(t, c, l)
	data := randomBlob(6*testBlockSize, 8)
	b := putStriped(t, c, cl, "stall", data)
	defer func(d time.Duration) { shardStall = d }(shardStall)
	shardStall = 300 * time.Millisecond
	l.mu.Lock()
	l.hang = c.GRPCAddr(agentOf(t, c, b.Holder(b.Blocks[0], 0)))
	l.mu.Unlock()

	readStriped(t, cl, "stall", GetOptions{}, data, "read with a holder stalled")
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.asked[[2]uint32{0, 2}] != 1 {
		t.Error("block 0's parity shard was not read in place of the stalled holder's")
	}
	if l.calls["Get"] != 0 {
		t.Errorf("%d blocks read through an agent's Get; the other holders had every block", l.calls["Get"])
	}
	clear(l.asked)
	l.hang = c.GRPCAddr(agentOf(t, c, b.Holder(b.Blocks[3], 0)))
	l.mu.Unlock()

	// A range inside shard 0 of block 3 needs only that shard; with its
	// holder stalled, the block is decoded from the other two.
	off := uint64(3*testBlockSize + 10)
	readStriped(t, cl, "stall", GetOptions{Offset: off, Length: 100}, data[off:off+100], "range in a stalled holder's shard")
	l.mu.Lock()
	if want := map[[2]uint32]int{{3, 0}: 1, {3, 1}: 1, {3, 2}: 1}; !maps.Equal(l.asked, want) {
		t.Errorf("shards asked for %v; want %v: the one the range needs, then the other two", l.asked, want)
	}
}

// TestGetBlobReadsParityInPlaceOfAHolderThatLags: a data holder whose
// stream stays open and sends nothing (an agent stopped by SIGSTOP or a
// paused VM, whose kernel still holds the connection open) holds a read
// up for holderLag, not for the stall bound: once the other shards of the
// block it waits for are in, the read gives up on that holder and reads
// parity from the others, block after block, and says so in its log.
func TestGetBlobReadsParityInPlaceOfAHolderThatLags(t *testing.T) {
	c, l, logs, cl, data, b := lagTest(t, "lag", 20, time.Hour, 200*time.Millisecond)
	lagging := agentOf(t, c, b.Holder(b.Blocks[0], 0))
	l.mu.Lock()
	l.hang = c.GRPCAddr(lagging)
	l.mu.Unlock()

	// Without giving up on the laggard, this read waits for the stall
	// bound, an hour, and fails when its context ends.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r, err := cl.GetBlob(ctx, "lag", GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(r)
	r.Close()
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read with a holder that sends nothing: %d bytes, %v; want the %d bytes", len(got), err, len(data))
	}
	l.mu.Lock()
	for i := range b.Blocks {
		if n := l.asked[[2]uint32{uint32(i), 2}]; n != 1 {
			t.Errorf("block %d's parity shard asked for %d times; want once, in place of the lagging holder's", i, n)
		}
	}
	if l.calls["Get"] != 0 {
		t.Errorf("%d blocks read through an agent's Get; the other holders had every block", l.calls["Get"])
	}
	l.mu.Unlock()
	if want := "agent=" + c.Name(lagging); countLines(logs.String(), "sent none while the others sent theirs", want) != 1 {
		t.Errorf("the client's log does not say once that it gave up on %s:\n%s", c.Name(lagging), logs.String())
	}
}

// TestGetBlobWaitsForLaggingHoldersItCannotDoWithout: with both data
// holders of 2+1 silent, the parity holder alone cannot make a block:
// the read does not give up on them at holderLag, only at the stall
// bound, and then reads the blocks through an agent.
func TestGetBlobWaitsForLaggingHoldersItCannotDoWithout(t *testing.T) {
	c, l, logs, cl, data, b := lagTest(t, "both", 3, 2*time.Second, 100*time.Millisecond)
	first, second := c.GRPCAddr(agentOf(t, c, b.Holder(b.Blocks[0], 0))), c.GRPCAddr(agentOf(t, c, b.Holder(b.Blocks[0], 1)))
	l.mu.Lock()
	l.hang = first
	l.hangToo = second
	l.mu.Unlock()

	readStriped(t, cl, "both", GetOptions{}, data, "read with both data holders silent")
	if n := countLines(logs.String(), "sent none while the others sent theirs"); n != 0 {
		t.Errorf("the read gave up on %d lagging holders it could not do without:\n%s", n, logs.String())
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.calls["Get"] == 0 {
		t.Error("no block was read through an agent, yet no two holders could give one")
	}
}

// lagTest starts a stripe cluster and puts a blob of name of blocks test
// blocks with a client whose calls l records and whose log goes to logs;
// until the test ends, reads give up on a stalled holder after stall and
// on a lagging one after lag.
func lagTest(t *testing.T, name string, blocks int, stall, lag time.Duration) (
	c *testcluster.Cluster, l *callLog, logs *testlog.Buffer, cl *Client, data []byte, b *zrpcpb.Blob) {
	t.Helper()
	c = newStripeCluster(t)
	l, logs = newCallLog(), new(testlog.Buffer)
	cl = recordedClient(t, c, l, logs)
	data = randomBlob(blocks*testBlockSize, uint64(blocks))
	b = putStriped(t, c, cl, name, data)
	oldStall, oldLag := shardStall, holderLag
	t.Cleanup(func() { shardStall, holderLag = oldStall, oldLag })
	shardStall, holderLag = stall, lag
	return c, l, logs, cl, data, b
}

// countLines is how many lines of s hold every one of parts.
func countLines(s string, parts ...string) int {
	n := 0
	for _, line := range strings.Split(s, "\n") {
		all := line != ""
		for _, p := range parts {
			all = all && strings.Contains(line, p)
		}
		if all {
			n++
		}
	}
	return n
}

// recordedClient is loggedClient whose log also goes to logs.
func recordedClient(t *testing.T, c *testcluster.Cluster, l *callLog, logs io.Writer) *Client {
	t.Helper()
	var eps []string
	for i := range c.Size() {
		eps = append(eps, c.GRPCAddr(i))
	}
	tw := &testWriter{t: t}
	t.Cleanup(func() {
		tw.mu.Lock()
		tw.done = true
		tw.mu.Unlock()
	})
	w := io.MultiWriter(logs, tw)
	cl, err := New(Config{Endpoints: eps, Logger: slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug})),
		dialOptions: l.options()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	return cl
}

// TestGetBlobFromTheHoldersOverMutualTLS: on a cluster with TLS, a client
// with a client certificate reads a blob from its holders, each
// connection verifying the agent's certificate.
func TestGetBlobFromTheHoldersOverMutualTLS(t *testing.T) {
	kit := pkitest.New(t)
	c := newStripeCluster(t, testcluster.WithTLS(func(agent string) (string, string, string) {
		f := kit.Agent(agent)
		return f.CA, f.Cert, f.Key
	}))
	opsTLS, err := tlsconf.Client(tlsconf.Files(kit.Client("ops")), "", tlsconf.RequireAgent())
	if err != nil {
		t.Fatal(err)
	}
	l := newCallLog()
	cl, err := New(Config{Endpoints: []string{c.GRPCAddr(0)}, TLS: opsTLS, Logger: testLogger(t), dialOptions: l.options()})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	data := randomBlob(4*testBlockSize+3, 9)
	putStriped(t, c, cl, "tls", data)
	r, err := cl.GetBlob(stripeCtx(t), "tls", GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(r)
	r.Close()
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read over TLS: %d bytes, %v", len(got), err)
	}
	if l.count("ReadShards") < 2 || l.count("Get") != 0 {
		t.Errorf("%d ReadShards and %d Get calls; want the shards read from their holders", l.count("ReadShards"), l.count("Get"))
	}
}

// TestGetBlobReceivedShardsReturnToThePoolOnlyAfterTheReaderReadThem: a
// shard's bytes stay in the buffer gRPC received them in, which goes back
// to the pool once the reader has moved past its block. A reader that
// takes its bytes slowly, while later shards keep arriving into pooled
// buffers, gets the blob's bytes: a buffer given back early would be
// overwritten under it. A read closed half-way gives back its buffers
// without disturbing the next read.
func TestGetBlobReceivedShardsReturnToThePoolOnlyAfterTheReaderReadThem(t *testing.T) {
	c := newStripeCluster(t)
	cl := loggedClient(t, c, newCallLog())
	data := randomBlob(40*testBlockSize+321, 7)
	putStriped(t, c, cl, "borrowed", data)

	half, err := cl.GetBlob(stripeCtx(t), "borrowed", GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	part := make([]byte, 20*testBlockSize+5)
	if _, err := io.ReadFull(half, part); err != nil || !bytes.Equal(part, data[:len(part)]) {
		t.Fatalf("first half of a read: %v, or not the blob's bytes", err)
	}
	half.Close()

	for range 2 {
		r, err := cl.GetBlob(stripeCtx(t), "borrowed", GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		var got []byte
		buf := make([]byte, 1000)
		for {
			n, err := r.Read(buf)
			got = append(got, buf[:n]...)
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("read after %d bytes: %v", len(got), err)
			}
		}
		r.Close()
		if !bytes.Equal(got, data) {
			t.Fatalf("read %d bytes that are not the blob's %d", len(got), len(data))
		}
	}
}

// TestGetBlobReadFillsTheBufferFromTheBytesAtHand: a shard arrives in
// HTTP/2 frames of 16 KiB and stays in them; a Read with room for a whole
// block still gets the whole block in one call, not one frame's worth,
// and waits for more only when it has nothing.
func TestGetBlobReadFillsTheBufferFromTheBytesAtHand(t *testing.T) {
	c := newStripeCluster(t)
	cl := loggedClient(t, c, newCallLog())
	data := randomBlob(3*testBlockSize+100, 8)
	putStriped(t, c, cl, "filled", data)
	r, err := cl.GetBlob(stripeCtx(t), "filled", GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var got []byte
	buf := make([]byte, 2*testBlockSize)
	for {
		n, err := r.Read(buf)
		got = append(got, buf[:n]...)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		// A block's bytes are at hand together: a read ends at a block's end.
		if want := min(testBlockSize, len(data)-(len(got)-n)); n != want {
			t.Fatalf("read at offset %d returned %d bytes, want the rest of the block, %d", len(got)-n, n, want)
		}
	}
	if !bytes.Equal(got, data) {
		t.Fatal("the bytes read are not the blob's")
	}
}

// TestGetBlobChecksEveryShardAgainstTheMetadataItWasGiven: the client
// checks each shard's bytes, as received, against the CRC32C in the
// metadata Locate gave it, not only the agent against its own copy: with
// one checksum altered in the answer (block 5, shard 0), that shard is
// refused, and block 5 alone is decoded from its parity shard.
func TestGetBlobChecksEveryShardAgainstTheMetadataItWasGiven(t *testing.T) {
	c := newStripeCluster(t)
	l := newCallLog()
	cl := loggedClient(t, c, l)
	data := randomBlob(8*testBlockSize+10, 9)
	putStriped(t, c, cl, "sums", data)

	var eps []string
	for i := range c.Size() {
		eps = append(eps, c.GRPCAddr(i))
	}
	alter := grpc.WithChainUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		err := invoker(ctx, method, req, reply, cc, opts...)
		if loc, ok := reply.(*zrpcpb.LocateResponse); ok && err == nil {
			loc.Blob.Blocks[5].Sums[0] ^= 1
		}
		return err
	})
	altered, err := New(Config{Endpoints: eps, Logger: testLogger(t), dialOptions: append(l.options(), alter)})
	if err != nil {
		t.Fatal(err)
	}
	defer altered.Close()
	readStriped(t, altered, "sums", GetOptions{}, data, "read")
	l.mu.Lock()
	defer l.mu.Unlock()
	for pos, n := range l.asked {
		if pos[1] == 2 && pos[0] != 5 && n > 0 {
			t.Errorf("parity of block %d read; only block 5's data shard 0 failed its check", pos[0])
		}
	}
	if l.asked[[2]uint32{5, 2}] != 1 {
		t.Error("block 5's data shard 0 passed the client's check against an altered checksum: its parity was not read")
	}
}

// readStriped reads name with opts through cl to its end and fails the
// test unless the bytes are want; what says how the read was made.
func readStriped(t *testing.T, cl *Client, name string, opts GetOptions, want []byte, what string) {
	t.Helper()
	r, err := cl.GetBlob(stripeCtx(t), name, opts)
	if err != nil {
		t.Fatalf("%s: GetBlob: %v", what, err)
	}
	got, err := io.ReadAll(r)
	r.Close()
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("%s: %d bytes, %v; want the %d bytes", what, len(got), err, len(want))
	}
}
