package client

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/zrpcio/zrpc/api/apierr"
	"github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/storage/codec"
)

// fakeBlobs is a cluster of in-process agents on loopback that serve the
// client-striped put calls (and the agent-coordinated Put) over maps: it
// records what the client asked and keeps the shards each agent was sent.
type fakeBlobs struct {
	k, m      uint32
	blockSize uint32
	inlineMax uint32
	leaseTTL  time.Duration
	// noStripes makes BeginPut answer Unimplemented, as an older agent.
	noStripes bool
	// commitErr, when set, is CommitPut's answer; commitHang makes it wait
	// for its caller to go away instead.
	commitErr  error
	commitHang bool
	// commitFails, while above 0, makes CommitPut answer commitFailErr
	// (counting down); -1 makes it do so always.
	commitFails   int
	commitFailErr error
	// renewDown makes RenewPut answer Unavailable, as when no agent can
	// reach the leader.
	renewDown bool

	agents []*fakeAgent

	mu       sync.Mutex
	pending  map[string]string // blob id → name
	renewed  map[string]int    // blob id → renewals
	aborted  []string
	commits  []*zrpcpb.CommitPutRequest
	broken   int               // WriteShards streams the client broke off
	opened   int               // WriteShards streams whose header was taken
	received int               // shards received
	putBytes map[string][]byte // the agent-coordinated Put: name → bytes
}

type fakeAgent struct {
	zrpcpb.UnimplementedBlobsServer
	f    *fakeBlobs
	name string
	addr string

	mu      sync.Mutex
	durable map[shardKey]fakeShard // shards whose stream was closed by the client

	// silent makes the agent leave health checks unanswered, as one
	// stopped or cut off would; holdClose makes it take a closed
	// WriteShards stream's shards without ever confirming them.
	silent, holdClose atomic.Bool
	// putRefusal, when set, is the answer of an agent-coordinated Put
	// once the header and a chunk have come (an agent cut off from the
	// leader); to the first putRefusals puts only, when that is above 0.
	putRefusal  error
	putRefusals int
	refused     atomic.Int32
}

// fakeHealth is a fake agent's gRPC health service.
type fakeHealth struct {
	healthpb.UnimplementedHealthServer
	a *fakeAgent
}

func (h fakeHealth) Check(ctx context.Context, _ *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	if h.a.silent.Load() {
		<-ctx.Done()
		return nil, status.FromContextError(ctx.Err()).Err()
	}
	return &healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING}, nil
}

type shardKey struct {
	id           string
	block, index uint32
}

type fakeShard struct {
	sum     uint32
	payload []byte
}

// newFakeBlobs starts n fake agents with a 2+1 scheme in 64 KiB blocks and a
// 4 KiB inline limit; the caller changes the fields before the first call.
func newFakeBlobs(t *testing.T, n int) *fakeBlobs {
	t.Helper()
	f := &fakeBlobs{
		k: 2, m: 1, blockSize: 64 << 10, inlineMax: 4 << 10, leaseTTL: 30 * time.Second,
		pending: map[string]string{}, renewed: map[string]int{}, putBytes: map[string][]byte{},
	}
	for i := range n {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		a := &fakeAgent{f: f, name: fmt.Sprintf("agent-%d", i), addr: lis.Addr().String(), durable: map[shardKey]fakeShard{}}
		f.agents = append(f.agents, a)
		srv := grpc.NewServer()
		zrpcpb.RegisterBlobsServer(srv, a)
		healthpb.RegisterHealthServer(srv, fakeHealth{a: a})
		served := make(chan struct{})
		go func() {
			defer close(served)
			srv.Serve(lis)
		}()
		t.Cleanup(func() {
			srv.Stop()
			<-served
		})
	}
	return f
}

// client returns a client whose endpoint is agent 0, with opts added to its
// connections' dial options.
func (f *fakeBlobs) client(t *testing.T, opts ...grpc.DialOption) *Client {
	t.Helper()
	c, err := New(Config{Endpoints: []string{f.agents[0].addr}, DialTimeout: time.Second, Logger: testLogger(t), dialOptions: opts})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func (f *fakeBlobs) byName(name string) *fakeAgent {
	for _, a := range f.agents {
		if a.name == name {
			return a
		}
	}
	return nil
}

func (a *fakeAgent) BeginPut(_ context.Context, req *zrpcpb.BeginPutRequest) (*zrpcpb.BeginPutResponse, error) {
	f := a.f
	if f.noStripes {
		return nil, status.Error(codes.Unimplemented, "unknown method BeginPut")
	}
	h := req.GetHeader()
	if h.GetSize() > 0 && h.GetSize() <= int64(f.inlineMax) {
		return &zrpcpb.BeginPutResponse{Inline: true, InlineMax: f.inlineMax}, nil
	}
	var b [8]byte
	rand.Read(b[:])
	id := hex.EncodeToString(b[:])
	f.mu.Lock()
	f.pending[id] = h.GetName()
	f.mu.Unlock()
	resp := &zrpcpb.BeginPutResponse{
		Header: &zrpcpb.ResponseHeader{Revision: 7}, InlineMax: f.inlineMax, BlobId: id,
		DataShards: f.k, ParityShards: f.m, BlockSize: f.blockSize,
		LeaseExpires: time.Now().Add(f.leaseTTL).UnixNano(), LeaseTtlMs: uint32(f.leaseTTL.Milliseconds()),
		MaxMetadataBytes: 8 << 20,
	}
	for i, ag := range f.agents {
		addr := &zrpcpb.AgentAddress{Node: ag.name, Address: ag.addr}
		if i < int(f.k+f.m) {
			resp.Targets = append(resp.Targets, addr)
		} else {
			resp.Spares = append(resp.Spares, addr)
		}
	}
	for len(resp.Targets) < int(f.k+f.m) {
		resp.Targets = append(resp.Targets, &zrpcpb.AgentAddress{})
	}
	return resp, nil
}

// openedStreams is how many WriteShards streams sent a valid header.
func (f *fakeBlobs) openedStreams() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.opened
}

func (f *fakeBlobs) isPending(id, name string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	n, ok := f.pending[id]
	return ok && n == name
}

func (a *fakeAgent) WriteShards(stream zrpcpb.Blobs_WriteShardsServer) error {
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	h := first.GetHeader()
	f := a.f
	switch {
	case h == nil:
		return status.Error(codes.InvalidArgument, "first message has no header")
	case !f.isPending(h.BlobId, h.Name):
		return status.Errorf(codes.NotFound, "no put %s of %q", h.BlobId, h.Name)
	case h.DataShards != f.k || h.ParityShards != f.m || h.BlockSize != f.blockSize || h.Revision != 7 || h.Index >= f.k+f.m:
		return status.Errorf(codes.InvalidArgument, "header %v does not match the placement", h)
	}
	f.mu.Lock()
	f.opened++
	f.mu.Unlock()
	staged := map[shardKey]fakeShard{}
	for {
		req, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			f.mu.Lock()
			f.broken++
			f.mu.Unlock()
			return err // the client went away: the staged shards go
		}
		key := shardKey{h.BlobId, req.Block, h.Index}
		switch {
		case len(req.Payload) != codec.ShardLen(int(req.BlockLen), int(f.k)):
			return status.Errorf(codes.InvalidArgument, "block %d: payload of %d bytes", req.Block, len(req.Payload))
		case codec.Checksum(req.Payload) != req.Sum:
			return status.Errorf(codes.InvalidArgument, "block %d: CRC32C does not match", req.Block)
		}
		if _, dup := staged[key]; dup {
			return status.Errorf(codes.InvalidArgument, "block %d sent twice", req.Block)
		}
		staged[key] = fakeShard{sum: req.Sum, payload: slices.Clone(req.Payload)}
		f.mu.Lock()
		f.received++
		f.mu.Unlock()
	}
	if a.holdClose.Load() {
		<-stream.Context().Done()
		return stream.Context().Err()
	}
	resp := &zrpcpb.WriteShardsResponse{}
	a.mu.Lock()
	for key, s := range staged {
		a.durable[key] = s
	}
	a.mu.Unlock()
	keys := slices.SortedFunc(func(yield func(shardKey) bool) {
		for k := range staged {
			if !yield(k) {
				return
			}
		}
	}, func(x, y shardKey) int { return int(x.block) - int(y.block) })
	for _, k := range keys {
		resp.Blocks = append(resp.Blocks, k.block)
		resp.Sums = append(resp.Sums, staged[k].sum)
	}
	return stream.SendAndClose(resp)
}

func (a *fakeAgent) RenewPut(_ context.Context, req *zrpcpb.RenewPutRequest) (*zrpcpb.RenewPutResponse, error) {
	f := a.f
	f.mu.Lock()
	down := f.renewDown
	f.mu.Unlock()
	if down {
		return nil, apierr.ToStatus(fmt.Errorf("%w: no leader to renew the put with", apierr.ErrNoLeader))
	}
	if !f.isPending(req.BlobId, req.Name) {
		return nil, apierr.ToStatus(fmt.Errorf("%w: put %s of %q is not pending", apierr.ErrNotFound, req.BlobId, req.Name))
	}
	f.mu.Lock()
	f.renewed[req.BlobId]++
	f.mu.Unlock()
	return &zrpcpb.RenewPutResponse{LeaseExpires: time.Now().Add(f.leaseTTL).UnixNano()}, nil
}

func (a *fakeAgent) CommitPut(ctx context.Context, req *zrpcpb.CommitPutRequest) (*zrpcpb.BlobPutResponse, error) {
	f := a.f
	f.mu.Lock()
	f.commits = append(f.commits, req)
	f.mu.Unlock()
	if f.commitHang {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	f.mu.Lock()
	failing := f.commitFails != 0
	if f.commitFails > 0 {
		f.commitFails--
	}
	f.mu.Unlock()
	if failing {
		return nil, apierr.ToStatus(f.commitFailErr)
	}
	if f.commitErr != nil {
		return nil, apierr.ToStatus(f.commitErr)
	}
	missing := 0
	for _, b := range req.Blob.Blocks {
		for _, h := range b.Holders {
			if h == 0 {
				missing++
			}
		}
	}
	f.mu.Lock()
	delete(f.pending, req.Blob.Id)
	f.mu.Unlock()
	return &zrpcpb.BlobPutResponse{Header: &zrpcpb.ResponseHeader{Revision: 9}, Blob: req.Blob, MissingShards: uint32(missing)}, nil
}

func (a *fakeAgent) AbortPut(_ context.Context, req *zrpcpb.AbortPutRequest) (*zrpcpb.AbortPutResponse, error) {
	f := a.f
	f.mu.Lock()
	defer f.mu.Unlock()
	f.aborted = append(f.aborted, req.BlobId)
	delete(f.pending, req.BlobId)
	return &zrpcpb.AbortPutResponse{}, nil
}

func (a *fakeAgent) Put(stream zrpcpb.Blobs_PutServer) error {
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	h := first.GetHeader()
	if a.putRefusal != nil && (a.putRefusals == 0 || int(a.refused.Add(1)) <= a.putRefusals) {
		// After the first chunk, or the end of a blob that fits in one.
		if _, err := stream.Recv(); err != nil && err != io.EOF {
			return err
		}
		return a.putRefusal
	}
	var data []byte
	for {
		req, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		data = append(data, req.GetChunk()...)
	}
	a.f.mu.Lock()
	a.f.putBytes[h.Name] = data
	a.f.mu.Unlock()
	return stream.SendAndClose(&zrpcpb.BlobPutResponse{Blob: &zrpcpb.Blob{Name: h.Name, Size: uint64(len(data))}})
}

// snapshot returns copies of what the client asked so far.
func (f *fakeBlobs) snapshot() (commits []*zrpcpb.CommitPutRequest, aborted []string, puts map[string][]byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	puts = map[string][]byte{}
	for k, v := range f.putBytes {
		puts[k] = v
	}
	return slices.Clone(f.commits), slices.Clone(f.aborted), puts
}

// streams returns how many shards the agents received and how many
// streams the client broke off.
func (f *fakeBlobs) streams() (received, broken int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.received, f.broken
}

func (f *fakeBlobs) renewals(id string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.renewed[id]
}

// pendingIDs returns the ids of the puts begun and neither committed nor
// aborted.
func (f *fakeBlobs) pendingIDs() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var ids []string
	for id := range f.pending {
		ids = append(ids, id)
	}
	return ids
}

// held returns the shards agent a holds durably.
func (a *fakeAgent) held() map[shardKey]fakeShard {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make(map[shardKey]fakeShard, len(a.durable))
	for k, v := range a.durable {
		out[k] = v
	}
	return out
}

// decodeFromHolders rebuilds the blob's bytes from the shards its metadata
// names, as a reader would: only the holders' shards count.
func (f *fakeBlobs) decodeFromHolders(t *testing.T, b *zrpcpb.Blob) []byte {
	t.Helper()
	cd, err := codec.New(int(b.DataShards), int(b.ParityShards))
	if err != nil {
		t.Fatal(err)
	}
	var out []byte
	for bi, blk := range b.Blocks {
		shards := make([][]byte, len(blk.Holders))
		for i := range blk.Holders {
			node := b.Holder(blk, i)
			if node == "" {
				continue
			}
			s, ok := f.byName(node).held()[shardKey{b.Id, uint32(bi), uint32(i)}]
			if !ok {
				t.Fatalf("block %d shard %d: metadata names %s, which does not hold it", bi, i, node)
			}
			if s.sum != blk.Sums[i] {
				t.Fatalf("block %d shard %d: %s holds CRC %08x, metadata says %08x", bi, i, node, s.sum, blk.Sums[i])
			}
			shards[i] = s.payload
		}
		dst := make([]byte, blk.Len)
		if _, err := cd.Decode(shards, int(blk.Len), dst); err != nil {
			t.Fatalf("decode block %d: %v", bi, err)
		}
		out = append(out, dst...)
	}
	return out
}

// cutLink makes the client's WriteShards streams to addr fail once they
// carried n shards (after their header), as when that agent dies mid-put:
// the stream's next Send fails and the agent sees it cancelled.
func cutLink(addr string, n int) grpc.DialOption {
	return grpc.WithChainStreamInterceptor(cutStreams(addr, n))
}

// cutStreams is cutLink's interceptor.
func cutStreams(addr string, n int) grpc.StreamClientInterceptor {
	return func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string,
		streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		if method != zrpcpb.Blobs_WriteShards_FullMethodName || cc.Target() != addr {
			return streamer(ctx, desc, cc, method, opts...)
		}
		ctx, cancel := context.WithCancel(ctx)
		cs, err := streamer(ctx, desc, cc, method, opts...)
		if err != nil {
			cancel()
			return nil, err
		}
		return &cutStream{ClientStream: cs, cancel: cancel, left: n + 1}, nil
	}
}

type cutStream struct {
	grpc.ClientStream
	cancel context.CancelFunc
	left   int
	cut    bool
}

var errLinkCut = status.Error(codes.Unavailable, "link to the agent cut by the test")

func (s *cutStream) SendMsg(m any) error {
	if s.left == 0 {
		s.cut = true
		s.cancel()
		return errLinkCut
	}
	s.left--
	return s.ClientStream.SendMsg(m)
}

// CloseSend of a cut link reaches no agent.
func (s *cutStream) CloseSend() error {
	if s.cut {
		return nil
	}
	return s.ClientStream.CloseSend()
}

func (s *cutStream) RecvMsg(m any) error {
	if s.cut {
		return errLinkCut
	}
	return s.ClientStream.RecvMsg(m)
}

// stallLink makes the client's WriteShards streams to addr take no more
// data once they carried n shards (after their header), as an agent whose
// disk hangs: the next Send blocks until the stream is cancelled.
func stallLink(addr string, n int) grpc.DialOption {
	return grpc.WithChainStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string,
		streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		cs, err := streamer(ctx, desc, cc, method, opts...)
		if err != nil || method != zrpcpb.Blobs_WriteShards_FullMethodName || cc.Target() != addr {
			return cs, err
		}
		return &stalledStream{ClientStream: cs, ctx: ctx, left: n + 1}, nil
	})
}

type stalledStream struct {
	grpc.ClientStream
	ctx  context.Context
	left int
}

func (s *stalledStream) SendMsg(m any) error {
	if s.left == 0 {
		<-s.ctx.Done()
		return status.FromContextError(s.ctx.Err()).Err()
	}
	s.left--
	return s.ClientStream.SendMsg(m)
}

// gatedReader yields data, but before passing offset at it waits (at most
// 10 s) until open reports true.
type gatedReader struct {
	data []byte
	off  int
	at   int
	open func() bool
}

func (r *gatedReader) Read(p []byte) (int, error) {
	if r.off >= len(r.data) {
		return 0, io.EOF
	}
	end := len(r.data)
	if r.off < r.at {
		end = r.at
	} else if r.open != nil {
		deadline := time.Now().Add(10 * time.Second)
		for !r.open() {
			if time.Now().After(deadline) {
				return 0, errors.New("gate did not open in 10 s")
			}
			time.Sleep(5 * time.Millisecond)
		}
		r.open = nil
	}
	n := copy(p, r.data[r.off:end])
	r.off += n
	return n, nil
}

// delayLink makes every message the client sends on a WriteShards stream
// to addr wait d first, as an agent whose disk is slow.
func delayLink(addr string, d time.Duration) grpc.DialOption {
	return grpc.WithChainStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string,
		streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		cs, err := streamer(ctx, desc, cc, method, opts...)
		if err != nil || method != zrpcpb.Blobs_WriteShards_FullMethodName || cc.Target() != addr {
			return cs, err
		}
		return &delayedStream{ClientStream: cs, d: d}, nil
	})
}

type delayedStream struct {
	grpc.ClientStream
	d time.Duration
}

func (s *delayedStream) SendMsg(m any) error {
	time.Sleep(s.d)
	return s.ClientStream.SendMsg(m)
}
