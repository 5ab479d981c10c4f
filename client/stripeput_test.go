package client

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/zrpcio/zrpc/api/apierr"
	"github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/storage/codec"
)

func randomBytes(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// encodeBlocks is what the shards of data are, block by block.
func encodeBlocks(t *testing.T, data []byte, k, m, blockSize int) (shards [][][]byte, sums [][]uint32) {
	t.Helper()
	cd, err := codec.New(k, m)
	if err != nil {
		t.Fatal(err)
	}
	for off := 0; off < len(data); off += blockSize {
		n := min(blockSize, len(data)-off)
		blk := cd.NewBlock(blockSize)
		copy(blk.Data(), data[off:off+n])
		if err := cd.Encode(blk, n); err != nil {
			t.Fatal(err)
		}
		var bs [][]byte
		for _, s := range blk.Shards() {
			bs = append(bs, bytes.Clone(s))
		}
		shards = append(shards, bs)
		sums = append(sums, append([]uint32(nil), blk.Sums()...))
		blk.Release()
	}
	return shards, sums
}

// onlyCommit returns the one commit the client sent.
func onlyCommit(t *testing.T, f *fakeBlobs) *zrpcpb.CommitPutRequest {
	t.Helper()
	commits, _, _ := f.snapshot()
	if len(commits) != 1 {
		t.Fatalf("client sent %d CommitPut, want 1", len(commits))
	}
	return commits[0]
}

func TestStripedPutSendsEachShardIndexToItsTargetAndCommitsWhatTheyHold(t *testing.T) {
	for _, tc := range []struct {
		name      string
		sizeKnown bool
	}{{"size given", true}, {"size unknown", false}} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeBlobs(t, 3)
			c := f.client(t)
			data := randomBytes(t, 5*int(f.blockSize)+12345) // the last block is short
			opts := PutOptions{Overwrite: true}
			if tc.sizeKnown {
				opts.Size = int64(len(data))
			}
			var mu sync.Mutex
			var progress []int64
			opts.Progress = func(n int64) {
				mu.Lock()
				progress = append(progress, n)
				mu.Unlock()
			}
			resp, err := c.PutBlob(testContext(t), "models/a.bin", bytes.NewReader(data), opts)
			if err != nil {
				t.Fatalf("PutBlob: %v", err)
			}
			req := onlyCommit(t, f)
			b := req.Blob
			sum := sha256.Sum256(data)
			switch {
			case b.Name != "models/a.bin" || b.Size != uint64(len(data)) || !bytes.Equal(b.Sha256, sum[:]):
				t.Fatalf("commit of %q, %d bytes, sha256 %x; want models/a.bin, %d, %x", b.Name, b.Size, b.Sha256, len(data), sum)
			case b.DataShards != 2 || b.ParityShards != 1 || b.BlockSize != f.blockSize || len(b.Blocks) != 6:
				t.Fatalf("commit of %d+%d in %d-byte blocks, %d blocks; want 2+1, %d, 6", b.DataShards, b.ParityShards, b.BlockSize, len(b.Blocks), f.blockSize)
			case !req.Overwrite || req.RequestId == "":
				t.Fatalf("commit overwrite %v, request id %q: want the put's overwrite and a request id", req.Overwrite, req.RequestId)
			case resp.GetHeader().GetRevision() != 9:
				t.Fatalf("PutBlob answered %v, want the commit's answer", resp)
			}
			shards, sums := encodeBlocks(t, data, 2, 1, int(f.blockSize))
			for bi, blk := range b.Blocks {
				if want := min(len(data)-bi*int(f.blockSize), int(f.blockSize)); blk.Len != uint32(want) {
					t.Errorf("block %d len %d, want %d", bi, blk.Len, want)
				}
				for i := range 3 {
					if blk.Sums[i] != sums[bi][i] {
						t.Errorf("block %d shard %d: sum %08x, want %08x", bi, i, blk.Sums[i], sums[bi][i])
					}
					// Shard i of every block goes to target i.
					if got := b.Holder(blk, i); got != f.agents[i].name {
						t.Errorf("block %d shard %d held by %q, want %s", bi, i, got, f.agents[i].name)
					}
					s := f.agents[i].held()[shardKey{b.Id, uint32(bi), uint32(i)}]
					if !bytes.Equal(s.payload, shards[bi][i]) || s.sum != sums[bi][i] {
						t.Errorf("block %d shard %d on %s is not the encoded shard", bi, i, f.agents[i].name)
					}
				}
			}
			if got := f.decodeFromHolders(t, b); !bytes.Equal(got, data) {
				t.Fatal("the shards the metadata names do not decode to the blob")
			}
			mu.Lock()
			defer mu.Unlock()
			if len(progress) == 0 || progress[len(progress)-1] != int64(len(data)) {
				t.Fatalf("progress %v, want it to end at %d", progress, len(data))
			}
			for i := 1; i < len(progress); i++ {
				if progress[i] < progress[i-1] {
					t.Fatalf("progress went backwards: %v", progress)
				}
			}
			if _, aborted, puts := f.snapshot(); len(aborted) != 0 || len(puts) != 0 {
				t.Fatalf("aborted %v, agent-coordinated puts %d: want neither", aborted, len(puts))
			}
		})
	}
}

// firstReadWaits is a blob source whose first Read returns only once
// ready says so, or fails after a while.
type firstReadWaits struct {
	r       io.Reader
	ready   func() bool
	waited  bool
	timeout time.Duration
}

func (w *firstReadWaits) Read(p []byte) (int, error) {
	if !w.waited {
		w.waited = true
		for deadline := time.Now().Add(w.timeout); !w.ready(); time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				return 0, errors.New("no stream was open to every target while the first block was read")
			}
		}
	}
	return w.r.Read(p)
}

func TestStripedPutOpensItsStreamsWhileTheFirstBlockIsRead(t *testing.T) {
	f := newFakeBlobs(t, 3)
	c := f.client(t)
	data := randomBytes(t, 3*int(f.blockSize))
	src := &firstReadWaits{r: bytes.NewReader(data), timeout: 10 * time.Second,
		ready: func() bool { return f.openedStreams() == 3 }}
	if _, err := c.PutBlob(testContext(t), "a.bin", src, PutOptions{Size: int64(len(data))}); err != nil {
		t.Fatalf("PutBlob: %v", err)
	}
	if b := onlyCommit(t, f).Blob; len(b.Blocks) != 3 {
		t.Fatalf("committed %d blocks, want 3", len(b.Blocks))
	}
}

func TestStripedPutMovesAFailedTargetsLaterBlocksToASpare(t *testing.T) {
	for _, tc := range []struct {
		name  string
		fault func(addr string, n int) grpc.DialOption
	}{
		{"link cut", cutLink},
		{"agent takes no more data", stallLink},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeBlobs(t, 5) // 2+2 on agents 0-3, agent 4 the spare
			f.k, f.m = 2, 2
			c := f.client(t, tc.fault(f.agents[1].addr, 3))
			c.cfg.shardStall = 200 * time.Millisecond
			data := randomBytes(t, 8*int(f.blockSize))
			resp, err := c.PutBlob(testContext(t), "a", bytes.NewReader(data), PutOptions{Size: int64(len(data))})
			if err != nil {
				t.Fatalf("PutBlob: %v", err)
			}
			b := onlyCommit(t, f).Blob
			for bi, blk := range b.Blocks {
				want := "agent-4" // the spare took shard 1 from block 3 on
				if bi < 3 {
					want = "" // sent to agent-1 before it failed: lost
				}
				if got := b.Holder(blk, 1); got != want {
					t.Errorf("block %d shard 1 held by %q, want %q", bi, got, want)
				}
				for _, i := range []int{0, 2, 3} {
					if got := b.Holder(blk, i); got != f.agents[i].name {
						t.Errorf("block %d shard %d held by %q, want %s", bi, i, got, f.agents[i].name)
					}
				}
			}
			if resp.MissingShards != 3 {
				t.Errorf("missing shards %d, want 3", resp.MissingShards)
			}
			if held := f.agents[1].held(); len(held) != 0 {
				t.Errorf("the failed agent holds %d shards durably, want none", len(held))
			}
			if got := f.decodeFromHolders(t, b); !bytes.Equal(got, data) {
				t.Fatal("the shards the metadata names do not decode to the blob")
			}
		})
	}
}

func TestStripedPutFailsAndAbortsWhenABlockWouldKeepTooFewShards(t *testing.T) {
	f := newFakeBlobs(t, 3) // 2+1 needs all 3 shards of each block; no spare
	c := f.client(t, cutLink(f.agents[1].addr, 2))
	data := randomBytes(t, 6*int(f.blockSize))
	// A pipe: PutBlob cannot start it over.
	_, err := c.PutBlob(testContext(t), "a", io.MultiReader(bytes.NewReader(data)), PutOptions{Size: int64(len(data))})
	if !errors.Is(err, apierr.ErrNotEnoughShards) || !strings.Contains(err.Error(), "agent-1") {
		t.Fatalf("PutBlob: %v; want ErrNotEnoughShards naming agent-1", err)
	}
	commits, aborted, _ := f.snapshot()
	if len(commits) != 0 || len(aborted) != 1 {
		t.Fatalf("commits %d, aborts %v: want no commit and the put aborted", len(commits), aborted)
	}
	if ids := f.pendingIDs(); len(ids) != 0 {
		t.Fatalf("puts still pending: %v", ids)
	}
}

func TestStripedPutRenewsItsLeaseWhileItRuns(t *testing.T) {
	f := newFakeBlobs(t, 3)
	f.leaseTTL = 150 * time.Millisecond
	c := f.client(t)
	data := randomBytes(t, 4*int(f.blockSize))
	// The reader stalls after its first block until the put was renewed
	// three times.
	r := &gatedReader{data: data, at: int(f.blockSize), open: func() bool {
		for _, id := range f.pendingIDs() {
			if f.renewals(id) >= 3 {
				return true
			}
		}
		return false
	}}
	if _, err := c.PutBlob(testContext(t), "slow", r, PutOptions{Size: int64(len(data))}); err != nil {
		t.Fatalf("PutBlob: %v", err)
	}
	if b := onlyCommit(t, f).Blob; f.renewals(b.Id) < 3 {
		t.Fatalf("put renewed %d times, want at least 3", f.renewals(b.Id))
	}
}

func TestStripedPutFailsWhenTheClusterEndedItsLease(t *testing.T) {
	f := newFakeBlobs(t, 3)
	f.leaseTTL = 150 * time.Millisecond
	c := f.client(t)
	data := randomBytes(t, 4*int(f.blockSize))
	var once sync.Once
	// Once the agents have the first block, the cluster aborts the put
	// behind the client's back; the reader stalls until the client has
	// given up its shard streams.
	r := &gatedReader{data: data, at: int(f.blockSize), open: func() bool {
		received, broken := f.streams()
		if received == 3 {
			once.Do(func() {
				f.mu.Lock()
				clear(f.pending)
				f.mu.Unlock()
			})
		}
		return broken == 3
	}}
	_, err := c.PutBlob(testContext(t), "gone", r, PutOptions{Size: int64(len(data))})
	if !errors.Is(err, apierr.ErrNotFound) || !strings.Contains(err.Error(), "lease") {
		t.Fatalf("PutBlob: %v; want ErrNotFound saying the lease ended", err)
	}
	if commits, _, _ := f.snapshot(); len(commits) != 0 {
		t.Fatalf("client committed a put whose lease had ended")
	}
}

func TestStripedPutFailsWhenItsLeaseCannotBeRenewedForLongerThanTheLease(t *testing.T) {
	f := newFakeBlobs(t, 3)
	f.leaseTTL = 150 * time.Millisecond
	f.renewDown = true
	c := f.client(t)
	data := randomBytes(t, 4*int(f.blockSize))
	// The reader stalls after the first block until the client has given
	// up its shard streams.
	r := &gatedReader{data: data, at: int(f.blockSize), open: func() bool {
		_, broken := f.streams()
		return broken == 3
	}}
	_, err := c.PutBlob(testContext(t), "unrenewed", r, PutOptions{Size: int64(len(data))})
	if !errors.Is(err, apierr.ErrNoLeader) || !strings.Contains(err.Error(), "could not be renewed") {
		t.Fatalf("PutBlob: %v; want the renewals' ErrNoLeader saying the lease could not be renewed", err)
	}
	if commits, aborted, _ := f.snapshot(); len(commits) != 0 || len(aborted) != 1 {
		t.Fatalf("commits %d, aborts %v: want no commit and the put aborted", len(commits), aborted)
	}
}

func TestStripedPutCancelledAbortsAndCommitsNothing(t *testing.T) {
	f := newFakeBlobs(t, 3)
	c := f.client(t)
	data := randomBytes(t, 6*int(f.blockSize))
	ctx, cancel := context.WithCancel(testContext(t))
	r := &gatedReader{data: data, at: 2 * int(f.blockSize), open: func() bool { cancel(); return true }}
	_, err := c.PutBlob(ctx, "a", r, PutOptions{Size: int64(len(data))})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("PutBlob: %v; want context.Canceled", err)
	}
	commits, aborted, _ := f.snapshot()
	if len(commits) != 0 || len(aborted) != 1 {
		t.Fatalf("commits %d, aborts %v: want no commit and the put aborted", len(commits), aborted)
	}
	for _, a := range f.agents {
		if held := a.held(); len(held) != 0 {
			t.Errorf("%s holds %d shards of a cancelled put durably", a.name, len(held))
		}
	}
}

func TestStripedPutOfWrongSizeIsRefusedAndAborted(t *testing.T) {
	for _, tc := range []struct {
		name  string
		given int64
	}{{"reader holds less", 3 << 20}, {"reader holds more", 100 << 10}} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeBlobs(t, 3)
			c := f.client(t)
			data := randomBytes(t, 200<<10)
			_, err := c.PutBlob(testContext(t), "a", bytes.NewReader(data), PutOptions{Size: tc.given})
			if !errors.Is(err, apierr.ErrInvalidArgument) || !strings.Contains(err.Error(), "size given") {
				t.Fatalf("PutBlob: %v; want ErrInvalidArgument about the size given", err)
			}
			if commits, aborted, _ := f.snapshot(); len(commits) != 0 || len(aborted) != 1 {
				t.Fatalf("commits %d, aborts %v: want no commit and the put aborted", len(commits), aborted)
			}
		})
	}
}

func TestStripedPutWhoseCommitIsRefusedIsAborted(t *testing.T) {
	f := newFakeBlobs(t, 3)
	f.commitErr = fmt.Errorf("%w: blob \"a\"; put with overwrite to replace it", apierr.ErrAlreadyExists)
	c := f.client(t)
	data := randomBytes(t, 200<<10)
	_, err := c.PutBlob(testContext(t), "a", bytes.NewReader(data), PutOptions{})
	if !errors.Is(err, apierr.ErrAlreadyExists) {
		t.Fatalf("PutBlob: %v; want ErrAlreadyExists", err)
	}
	if _, aborted, _ := f.snapshot(); len(aborted) != 1 {
		t.Fatalf("aborts %v: want the refused put aborted", aborted)
	}
}

// TestStripedPutSendsItsCommitAgainWhileThereIsNoLeader: a commit that
// finds no leader (an election, a quorum back in a moment) is sent again,
// the same request each time, and the put succeeds once one is there.
func TestStripedPutSendsItsCommitAgainWhileThereIsNoLeader(t *testing.T) {
	f := newFakeBlobs(t, 3)
	f.commitFails, f.commitFailErr = 5, fmt.Errorf("%w: 1 of 3 voters reachable", apierr.ErrNoLeader)
	c := f.client(t)
	data := randomBytes(t, 200<<10)
	resp, err := c.PutBlob(testContext(t), "a", bytes.NewReader(data), PutOptions{})
	if err != nil || resp.GetBlob().GetName() != "a" {
		t.Fatalf("PutBlob: %v, %v; want it stored once a leader answers", resp, err)
	}
	commits, aborted, _ := f.snapshot()
	if len(commits) != 6 || len(aborted) != 0 {
		t.Fatalf("%d commits, aborts %v; want 6 attempts and no abort", len(commits), aborted)
	}
	for _, cm := range commits {
		if cm.RequestId != commits[0].RequestId || cm.RequestId == "" {
			t.Fatalf("attempts carry request ids %q and %q: want one, so that a commit applies once", commits[0].RequestId, cm.RequestId)
		}
	}
}

// TestStripedPutWhoseCommitNeverFoundALeaderSaysItWasNotStored: when no
// attempt of the commit found a leader, nothing was proposed, so the put
// is known not stored: the error says so (not "outcome unknown"), and the
// put is aborted.
func TestStripedPutWhoseCommitNeverFoundALeaderSaysItWasNotStored(t *testing.T) {
	f := newFakeBlobs(t, 3)
	f.leaseTTL = 300 * time.Millisecond
	f.commitFails, f.commitFailErr = -1, fmt.Errorf("%w: 1 of 3 voters reachable", apierr.ErrNoLeader)
	c := f.client(t)
	data := randomBytes(t, 200<<10)
	go func() { // renewals too find no leader once the blob is sent
		waitFor(t, "the commit is sent", func() bool {
			commits, _, _ := f.snapshot()
			return len(commits) > 0
		})
		f.mu.Lock()
		f.renewDown = true
		f.mu.Unlock()
	}()
	_, err := c.PutBlob(testContext(t), "a", bytes.NewReader(data), PutOptions{})
	if !errors.Is(err, apierr.ErrNoLeader) || errors.Is(err, apierr.ErrOutcomeUnknown) || !strings.Contains(err.Error(), "was not stored") {
		t.Fatalf("PutBlob: %v; want ErrNoLeader saying the put was not stored", err)
	}
	if commits, aborted, _ := f.snapshot(); len(commits) < 2 || len(aborted) != 1 {
		t.Fatalf("%d commits, aborts %v; want the commit sent again, then the put aborted", len(commits), aborted)
	}
}

func TestStripedPutWhoseCommitAnswerIsLostSaysOutcomeUnknown(t *testing.T) {
	f := newFakeBlobs(t, 3)
	f.commitHang = true
	c := f.client(t)
	ctx, cancel := context.WithCancel(testContext(t))
	defer cancel()
	go func() {
		waitFor(t, "the commit is sent", func() bool {
			commits, _, _ := f.snapshot()
			return len(commits) > 0
		})
		cancel()
	}()
	data := randomBytes(t, 200<<10)
	_, err := c.PutBlob(ctx, "a", bytes.NewReader(data), PutOptions{})
	if !errors.Is(err, apierr.ErrOutcomeUnknown) || !strings.Contains(err.Error(), "blob stat a") {
		t.Fatalf("PutBlob: %v; want ErrOutcomeUnknown pointing at blob stat", err)
	}
	// An abort now could not settle the outcome: the commit may apply.
	if _, aborted, _ := f.snapshot(); len(aborted) != 0 {
		t.Fatalf("aborts %v after a commit whose answer was lost", aborted)
	}
}

func TestPutBlobGoesThroughAnAgentWhenStripingDoesNotApply(t *testing.T) {
	for _, tc := range []struct {
		name      string
		size      int
		sizeKnown bool
		noStripes bool
		through   bool
		aborts    int
	}{
		{name: "agent without striped puts", size: 300 << 10, sizeKnown: true, noStripes: true},
		{name: "asked to go through an agent", size: 300 << 10, through: true},
		{name: "small blob of known size", size: 1000, sizeKnown: true},
		{name: "small blob of unknown size", size: 1000, aborts: 1},
		{name: "empty blob of unknown size", size: 0, aborts: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeBlobs(t, 3)
			f.noStripes = tc.noStripes
			c := f.client(t)
			data := randomBytes(t, tc.size)
			opts := PutOptions{ThroughAgent: tc.through}
			if tc.sizeKnown {
				opts.Size = int64(len(data))
			}
			if _, err := c.PutBlob(testContext(t), "small", io.MultiReader(bytes.NewReader(data)), opts); err != nil {
				t.Fatalf("PutBlob: %v", err)
			}
			commits, aborted, puts := f.snapshot()
			got, ok := puts["small"]
			switch {
			case !ok || !bytes.Equal(got, data):
				t.Fatalf("agent-coordinated Put got %d bytes (sent: %v), want the blob's %d", len(got), ok, len(data))
			case len(commits) != 0:
				t.Fatalf("client sent %d CommitPut too", len(commits))
			case len(aborted) != tc.aborts:
				t.Fatalf("aborts %v, want %d", aborted, tc.aborts)
			}
		})
	}
}

// A shard's bytes go to gRPC by reference: its block's buffer must stay
// out of the pool until gRPC has written them, not only until Send has
// returned. Small flow-control windows keep gRPC writing each shard long
// after Send; a buffer reused for a later block before that would reach
// the agents with the wrong bytes, which the agents refuse by checksum.
func TestStripedPutShardBuffersReturnToThePoolOnlyAfterGRPCWroteThem(t *testing.T) {
	f := newFakeBlobs(t, 3)
	f.blockSize = 256 << 10
	c := f.client(t, grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10))
	data := randomBytes(t, 24*int(f.blockSize)+777)
	resp, err := c.PutBlob(testContext(t), "lent", bytes.NewReader(data), PutOptions{Size: int64(len(data))})
	if err != nil {
		t.Fatalf("PutBlob: %v", err)
	}
	if resp == nil {
		t.Fatal("PutBlob answered nothing")
	}
	b := onlyCommit(t, f).Blob
	shards, _ := encodeBlocks(t, data, 2, 1, int(f.blockSize))
	for bi := range b.Blocks {
		for i := range 3 {
			if s := f.agents[i].held()[shardKey{b.Id, uint32(bi), uint32(i)}]; !bytes.Equal(s.payload, shards[bi][i]) {
				t.Fatalf("block %d shard %d reached %s with other bytes than the encoded shard", bi, i, f.agents[i].name)
			}
		}
	}
	if got := f.decodeFromHolders(t, b); !bytes.Equal(got, data) {
		t.Fatal("the stored shards do not decode to the blob")
	}
}

// agentDiesAfter makes the client's first WriteShards stream to addr
// break after n shards, as when the agent dies, and every later one to it
// fail at once.
func agentDiesAfter(addr string, n int) grpc.DialOption {
	var streams atomic.Int32
	cut := cutStreams(addr, n)
	return grpc.WithChainStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string,
		streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		if method == zrpcpb.Blobs_WriteShards_FullMethodName && cc.Target() == addr && streams.Add(1) > 1 {
			return nil, status.Error(codes.Unavailable, "connection refused: the agent is dead")
		}
		return cut(ctx, desc, cc, method, streamer, opts...)
	})
}

// TestStripedPutFromAFileStartsOverWhenAnAgentDiesMidPut: 2+1 on four
// agents needs all three shards of each block, so an agent that dies
// during the put takes the shards it was sent and the put is aborted.
// From a source that can seek, the put starts over (the dead agent's
// index goes to the spare) and stores the blob; from a pipe it fails as
// before, naming the agent.
func TestStripedPutFromAFileStartsOverWhenAnAgentDiesMidPut(t *testing.T) {
	old := putRetryWaits
	putRetryWaits = []time.Duration{10 * time.Millisecond, 10 * time.Millisecond}
	t.Cleanup(func() { putRetryWaits = old })
	data := randomBytes(t, 6*64<<10)

	t.Run("file", func(t *testing.T) {
		f := newFakeBlobs(t, 4) // 2+1 on agents 0-2, agent 3 the spare
		c := f.client(t, agentDiesAfter(f.agents[1].addr, 2))
		if _, err := c.PutBlob(testContext(t), "a", bytes.NewReader(data), PutOptions{Size: int64(len(data))}); err != nil {
			t.Fatalf("PutBlob: %v", err)
		}
		commits, aborted, _ := f.snapshot()
		if len(commits) != 1 || len(aborted) != 1 {
			t.Fatalf("%d commits, aborted %v: want the first put aborted and the second committed", len(commits), aborted)
		}
		b := commits[0].Blob
		for bi, blk := range b.Blocks {
			if got := b.Holder(blk, 1); got != "agent-3" {
				t.Errorf("block %d shard 1 held by %q, want the spare agent-3", bi, got)
			}
		}
		if got := f.decodeFromHolders(t, b); !bytes.Equal(got, data) {
			t.Fatal("the stored shards do not decode to the blob")
		}
	})
	t.Run("file, the agent failing each time", func(t *testing.T) {
		f := newFakeBlobs(t, 3) // no spare
		c := f.client(t, cutLink(f.agents[1].addr, 2))
		_, err := c.PutBlob(testContext(t), "a", bytes.NewReader(data), PutOptions{Size: int64(len(data))})
		if !errors.Is(err, apierr.ErrNotEnoughShards) || !strings.Contains(err.Error(), "agent-1") {
			t.Fatalf("PutBlob: %v; want ErrNotEnoughShards naming agent-1", err)
		}
		if commits, aborted, _ := f.snapshot(); len(commits) != 0 || len(aborted) != 1+len(putRetryWaits) {
			t.Fatalf("%d commits, aborted %v: want %d attempts, each aborted", len(commits), aborted, 1+len(putRetryWaits))
		}
	})
	t.Run("pipe", func(t *testing.T) {
		f := newFakeBlobs(t, 4)
		c := f.client(t, agentDiesAfter(f.agents[1].addr, 2))
		_, err := c.PutBlob(testContext(t), "a", io.MultiReader(bytes.NewReader(data)), PutOptions{Size: int64(len(data))})
		if !errors.Is(err, apierr.ErrNotEnoughShards) || !strings.Contains(err.Error(), "agent-1") {
			t.Fatalf("PutBlob: %v; want ErrNotEnoughShards naming agent-1", err)
		}
		if commits, aborted, _ := f.snapshot(); len(commits) != 0 || len(aborted) != 1 {
			t.Fatalf("%d commits, aborted %v: want the one put aborted", len(commits), aborted)
		}
	})
}

// An agent-coordinated put that the first agent refuses after the upload
// began (cut off from the leader, it cannot begin the put) goes on to the
// next agent from the start when the source can seek back: nothing was
// stored, as an agent commits only at the end of its stream. From a pipe
// it fails, saying to retry.
func TestPutThroughAnAgentMovesToTheNextAgentWhenTheFirstRefuses(t *testing.T) {
	f := newFakeBlobs(t, 3)
	f.agents[0].putRefusal = apierr.ToStatus(apierr.NotApplied(fmt.Errorf("%w: this agent is cut off from the leader", apierr.ErrNoLeader)))
	// A new client each time: one that has moved to the second agent
	// starts there.
	newClient := func() *Client {
		c, err := New(Config{Endpoints: []string{f.agents[0].addr, f.agents[1].addr}, DialTimeout: time.Second, Logger: testLogger(t)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	data := randomBytes(t, 3*putChunk+123)
	if _, err := newClient().PutBlob(testContext(t), "moved", bytes.NewReader(data), PutOptions{ThroughAgent: true}); err != nil {
		t.Fatalf("PutBlob from a file-like source, the first agent refusing: %v", err)
	}
	if _, _, puts := f.snapshot(); !bytes.Equal(puts["moved"], data) {
		t.Fatalf("the second agent got %d bytes, want the blob's %d from its start", len(puts["moved"]), len(data))
	}
	// A small blob is all sent before the refusal comes; the refusal
	// says nothing was applied, so the put moves on all the same.
	small := randomBytes(t, 1000)
	if _, err := newClient().PutBlob(testContext(t), "small", bytes.NewReader(small), PutOptions{ThroughAgent: true}); err != nil {
		t.Fatalf("PutBlob of a small blob, the first agent refusing after it was all sent: %v", err)
	}
	if _, _, puts := f.snapshot(); !bytes.Equal(puts["small"], small) {
		t.Fatalf("the second agent got %d bytes of the small blob, want %d", len(puts["small"]), len(small))
	}
	_, err := newClient().PutBlob(testContext(t), "piped", io.MultiReader(bytes.NewReader(data)), PutOptions{ThroughAgent: true})
	if err == nil || !strings.Contains(err.Error(), "the agent failed after the upload began: retry the put") {
		t.Fatalf("PutBlob from a pipe, the first agent refusing: %v, want the put failed, saying to retry it", err)
	}
	if _, _, puts := f.snapshot(); puts["piped"] != nil {
		t.Fatal("a put from a pipe reached the second agent after the first had read from it")
	}
}

// A put through an agent that stored too few shards of a block (an agent
// it placed some on failed before gossip knew) committed nothing; from a
// file-like source the client starts it over after a pause, and the
// cluster, placing anew, stores it. From a pipe it fails as it was.
func TestPutThroughAnAgentStartsOverWhenTheAgentStoredTooFewShards(t *testing.T) {
	defer func(w []time.Duration) { putRetryWaits = w }(putRetryWaits)
	putRetryWaits = []time.Duration{10 * time.Millisecond, 20 * time.Millisecond}
	tooFew := apierr.ToStatus(fmt.Errorf("%w: block 0 of %q: stored 2 of 3 shards, need 3", apierr.ErrNotEnoughShards, "a"))
	data := randomBytes(t, 3*putChunk+123)

	f := newFakeBlobs(t, 3)
	f.agents[0].putRefusal, f.agents[0].putRefusals = tooFew, 1
	c := f.client(t)
	if _, err := c.PutBlob(testContext(t), "a", bytes.NewReader(data), PutOptions{ThroughAgent: true}); err != nil {
		t.Fatalf("PutBlob through an agent that stored too few shards once: %v", err)
	}
	if _, _, puts := f.snapshot(); !bytes.Equal(puts["a"], data) {
		t.Fatalf("the agent got %d bytes on the second attempt, want the blob's %d from its start", len(puts["a"]), len(data))
	}

	f = newFakeBlobs(t, 3)
	f.agents[0].putRefusal, f.agents[0].putRefusals = tooFew, 1
	c = f.client(t)
	_, err := c.PutBlob(testContext(t), "p", io.MultiReader(bytes.NewReader(data)), PutOptions{ThroughAgent: true})
	if !errors.Is(err, apierr.ErrNotEnoughShards) {
		t.Fatalf("PutBlob from a pipe through an agent that stored too few shards: %v, want ErrNotEnoughShards", err)
	}
}
