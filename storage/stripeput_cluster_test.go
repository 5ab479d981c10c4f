package storage_test

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/zrpcio/zrpc/api/apierr"
	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/client"
	"github.com/zrpcio/zrpc/node"
	"github.com/zrpcio/zrpc/storage"
	"github.com/zrpcio/zrpc/testcluster"
)

// blobsAt is a Blobs client of the agent serving addr, as a striping
// client reaches the agents BeginPut names.
func blobsAt(t testing.TB, addr string) pb.BlobsClient {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return pb.NewBlobsClient(conn)
}

// writeShards sends one shard index's stream to its target.
func writeShards(ctx context.Context, t testing.TB, begin *pb.BeginPutResponse, st *storage.Striped, index int) (*pb.WriteShardsResponse, error) {
	t.Helper()
	stream, err := blobsAt(t, begin.Targets[index].Address).WriteShards(ctx)
	if err != nil {
		return nil, err
	}
	for _, msg := range st.Streams[index] {
		if err := stream.Send(msg); err != nil {
			break // the answer says why
		}
	}
	return stream.CloseAndRecv()
}

// stripedPut begins a put of data through agent 0 and writes every shard
// index to its target.
func stripedPut(t testing.TB, c *testcluster.Cluster, name string, data []byte) (*pb.BeginPutResponse, *storage.Striped) {
	t.Helper()
	ctx := ctxFor(t, time.Minute)
	begin, err := blobsAt(t, c.GRPCAddr(0)).BeginPut(ctx, &pb.BeginPutRequest{Header: &pb.BlobPutHeader{Name: name, Size: int64(len(data))}})
	if err != nil {
		t.Fatalf("BeginPut: %v", err)
	}
	st := storage.StripeBlob(t, begin, name, data)
	for i := range st.Streams {
		resp, err := writeShards(ctx, t, begin, st, i)
		if err != nil {
			t.Fatalf("WriteShards of shard %d to %s: %v", i, begin.Targets[i].Node, err)
		}
		if want := len(st.Blob.Blocks); len(resp.Blocks) != want || len(resp.Sums) != want {
			t.Fatalf("WriteShards of shard %d: %s holds %d blocks, want %d", i, begin.Targets[i].Node, len(resp.Blocks), want)
		}
	}
	return begin, st
}

// TestStripedPutAcrossAgentsReadsBackByteIdentical: a client that stripes
// its blob itself, through three agents, stores a blob the agents'
// coordinated get reads back whole.
func TestStripedPutAcrossAgentsReadsBackByteIdentical(t *testing.T) {
	c := newBlobCluster(t, 3, slowFailover)
	data := randomBytes(3<<20+12345, 41) // 4 blocks, the last short
	begin, st := stripedPut(t, c, "models/striped", data)
	if begin.DataShards != 2 || begin.ParityShards != 1 || len(begin.Targets) != 3 {
		t.Fatalf("BeginPut on 3 agents = %v, want 2+1 on 3 targets", begin)
	}
	seen := map[string]bool{}
	for _, tg := range begin.Targets {
		if tg.Address == "" || seen[tg.Node] {
			t.Fatalf("targets %v: want 3 distinct agents with addresses", begin.Targets)
		}
		seen[tg.Node] = true
	}
	ctx := ctxFor(t, time.Minute)
	resp, err := blobsAt(t, c.GRPCAddr(1)).CommitPut(ctx, &pb.CommitPutRequest{Blob: st.Blob, RequestId: "commit-1"})
	if err != nil {
		t.Fatalf("CommitPut through another agent: %v", err)
	}
	if resp.MissingShards != 0 || resp.Blob.GetSize() != uint64(len(data)) {
		t.Fatalf("CommitPut = %v", resp)
	}
	got := get(t, agentClient(t, c, 2), "models/striped", client.GetOptions{MinRevision: resp.Header.Revision})
	if !bytes.Equal(got, data) {
		t.Fatalf("read back %d bytes, not the %d put", len(got), len(data))
	}
	// One part file per shard index, each on its target.
	for i, tg := range begin.Targets {
		if n := shardFiles(t, c, agentIndex(t, c, tg.Node), begin.BlobId); n != len(st.Blob.Blocks) {
			t.Errorf("agent %s holds %d shards of the blob, want %d (shard %d of every block)", tg.Node, n, len(st.Blob.Blocks), i)
		}
	}
}

func TestStripedPutRefusesBadShardsOverTheWire(t *testing.T) {
	c := newBlobCluster(t, 3, slowFailover)
	data := randomBytes(2<<20+7, 42)
	ctx := ctxFor(t, time.Minute)
	begin, err := blobsAt(t, c.GRPCAddr(0)).BeginPut(ctx, &pb.BeginPutRequest{Header: &pb.BlobPutHeader{Name: "models/bad", Size: int64(len(data))}})
	if err != nil {
		t.Fatal(err)
	}
	st := storage.StripeBlob(t, begin, "models/bad", data)
	st.Streams[1][2].Sum ^= 0xff
	_, err = writeShards(ctx, t, begin, st, 1)
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("WriteShards with a bad CRC: %v, want InvalidArgument", err)
	}
	holder := c.Node(agentIndex(t, c, begin.Targets[1].Node)).Blobs().Shards()
	if staged := holder.Staged(); len(staged) != 0 {
		t.Fatalf("the refused stream left %d shards staged", len(staged))
	}
	if n := shardFiles(t, c, agentIndex(t, c, begin.Targets[1].Node), begin.BlobId); n != 0 {
		t.Fatalf("the refused stream left %d shards stored", n)
	}
}

// TestStripedCommitNeedsItsHoldersToConfirm: a commit that names an agent
// for shards it never received is refused while a block would have fewer
// than k+1 shards, and nothing becomes visible.
func TestStripedCommitNeedsItsHoldersToConfirm(t *testing.T) {
	c := newBlobCluster(t, 3, slowFailover)
	data := randomBytes(2<<20+7, 43)
	ctx := ctxFor(t, time.Minute)
	blobs := blobsAt(t, c.GRPCAddr(0))
	begin, err := blobs.BeginPut(ctx, &pb.BeginPutRequest{Header: &pb.BlobPutHeader{Name: "models/unconfirmed", Size: int64(len(data))}})
	if err != nil {
		t.Fatal(err)
	}
	st := storage.StripeBlob(t, begin, "models/unconfirmed", data)
	for i := range 2 { // shard 2 is never sent
		if _, err := writeShards(ctx, t, begin, st, i); err != nil {
			t.Fatal(err)
		}
	}
	_, err = blobsAt(t, c.GRPCAddr(2)).CommitPut(ctx, &pb.CommitPutRequest{Blob: st.Blob})
	if !errors.Is(apierr.FromStatus(err), apierr.ErrNotEnoughShards) {
		t.Fatalf("CommitPut naming a holder of shards it does not hold: %v, want ErrNotEnoughShards", err)
	}
	if _, err := blobs.Stat(ctx, &pb.BlobStatRequest{Name: "models/unconfirmed"}); status.Code(err) != codes.NotFound {
		t.Fatalf("stat after the refused commit: %v, want NotFound", err)
	}
	// A sum the holder does not have is not confirmed either.
	if _, err := writeShards(ctx, t, begin, st, 2); err != nil {
		t.Fatal(err)
	}
	wrong := proto.Clone(st.Blob).(*pb.Blob)
	wrong.Blocks[1].Sums[2] ^= 1
	if _, err := blobs.CommitPut(ctx, &pb.CommitPutRequest{Blob: wrong}); !errors.Is(apierr.FromStatus(err), apierr.ErrNotEnoughShards) {
		t.Fatalf("CommitPut with a sum the holder does not have: %v, want ErrNotEnoughShards", err)
	}
	if _, err := blobs.CommitPut(ctx, &pb.CommitPutRequest{Blob: st.Blob}); err != nil {
		t.Fatalf("CommitPut once every holder holds its shards: %v", err)
	}
}

// TestStripedPutWhoseClientStopsRenewingIsAbortedAndCollected: the leader
// aborts a put once its lease passes without a renewal, and its part files
// go from every agent; a put whose client renews stays and commits.
func TestStripedPutWhoseClientStopsRenewingIsAbortedAndCollected(t *testing.T) {
	c := newBlobCluster(t, 3, slowFailover, testcluster.WithConfig(func(cfg *node.Config) { cfg.BlobPutLease = 2 * time.Second }))
	data := randomBytes(1<<20+5, 44)
	abandoned, _ := stripedPut(t, c, "models/abandoned", data)
	kept, keptStriped := stripedPut(t, c, "models/kept", data)

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	renewErr := make(chan error, 1)
	wg.Add(1)
	go func() { // the live client renews at a few times the lease's rate
		defer wg.Done()
		blobs := blobsAt(t, c.GRPCAddr(1))
		for {
			select {
			case <-ctx.Done():
				return
			case <-time.After(250 * time.Millisecond):
			}
			_, err := blobs.RenewPut(ctx, &pb.RenewPutRequest{Name: "models/kept", BlobId: kept.BlobId})
			if err != nil && ctx.Err() == nil {
				renewErr <- err
				return
			}
		}
	}()
	stopRenewing := func() {
		cancel()
		wg.Wait()
	}
	t.Cleanup(stopRenewing)

	c.WaitFor(60*time.Second, "the abandoned put's shards are collected on every agent", func() bool {
		if c.Leader() == nil || c.Leader().Store().FSM().PendingBlob(abandoned.BlobId) != nil {
			return false
		}
		for i := range c.Size() {
			if shardFiles(t, c, i, abandoned.BlobId) > 0 {
				return false
			}
		}
		return true
	})
	stopRenewing()
	select {
	case err := <-renewErr:
		t.Fatalf("renewing the live put: %v", err)
	default:
	}
	if c.Leader().Store().FSM().PendingBlob(kept.BlobId) == nil {
		t.Fatal("the renewed put was aborted")
	}
	resp, err := blobsAt(t, c.GRPCAddr(2)).CommitPut(ctxFor(t, time.Minute), &pb.CommitPutRequest{Blob: keptStriped.Blob})
	if err != nil {
		t.Fatalf("CommitPut of the renewed put: %v", err)
	}
	if got := get(t, agentClient(t, c, 0), "models/kept", client.GetOptions{MinRevision: resp.Header.Revision}); !bytes.Equal(got, data) {
		t.Fatal("the renewed put reads back other bytes")
	}
}

// TestBeginPutRepeatedWithItsRequestIDAnswersTheSamePut: a BeginPut
// repeated with the same request id, through another agent, answers the
// put the first began (same blob id, scheme and targets) and announces no
// second one; another request id begins another put, and the id of one
// put cannot begin a put of another blob.
func TestBeginPutRepeatedWithItsRequestIDAnswersTheSamePut(t *testing.T) {
	c := newBlobCluster(t, 3, slowFailover)
	ctx := ctxFor(t, time.Minute)
	req := &pb.BeginPutRequest{Header: &pb.BlobPutHeader{Name: "models/retried", Size: 2 << 20}, RequestId: "begin-1"}
	first, err := blobsAt(t, c.GRPCAddr(0)).BeginPut(ctx, req)
	if err != nil {
		t.Fatalf("BeginPut: %v", err)
	}
	again, err := blobsAt(t, c.GRPCAddr(1)).BeginPut(ctx, req)
	if err != nil {
		t.Fatalf("BeginPut repeated through another agent: %v", err)
	}
	if again.BlobId != first.BlobId || again.DataShards != first.DataShards || again.ParityShards != first.ParityShards ||
		again.BlockSize != first.BlockSize || again.Header.Revision != first.Header.Revision {
		t.Fatalf("repeated BeginPut answered %v, want the first answer %v", again, first)
	}
	for i := range first.Targets {
		if again.Targets[i].Node != first.Targets[i].Node {
			t.Fatalf("repeated BeginPut targets %v, want %v", again.Targets, first.Targets)
		}
	}
	pending := func() []string {
		var ids []string
		for _, p := range c.Node(1).Store().FSM().PendingBlobs() {
			if p.Name == "models/retried" {
				ids = append(ids, p.Id)
			}
		}
		return ids
	}
	if ids := pending(); len(ids) != 1 || ids[0] != first.BlobId {
		t.Fatalf("pending puts of the blob: %v, want only %s", ids, first.BlobId)
	}

	other, err := blobsAt(t, c.GRPCAddr(0)).BeginPut(ctx, &pb.BeginPutRequest{Header: req.Header, RequestId: "begin-2"})
	if err != nil || other.BlobId == first.BlobId {
		t.Fatalf("BeginPut with another request id = %v, %v; want a new put", other, err)
	}
	misused := &pb.BeginPutRequest{Header: &pb.BlobPutHeader{Name: "models/else", Size: 2 << 20}, RequestId: "begin-1"}
	if _, err := blobsAt(t, c.GRPCAddr(0)).BeginPut(ctx, misused); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("BeginPut of another blob with a used request id: %v, want InvalidArgument", err)
	}
	if _, err := blobsAt(t, c.GRPCAddr(0)).BeginPut(ctx, &pb.BeginPutRequest{Header: req.Header, RequestId: "bad id"}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("BeginPut with a malformed request id: %v, want InvalidArgument", err)
	}
}
