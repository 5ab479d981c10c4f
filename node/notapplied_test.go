package node

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/zrpcio/zrpc/api/apierr"
	pb "github.com/zrpcio/zrpc/api/zrpcpb"
)

// TestAWriteOnAnAgentWithoutALeaderSaysItWasNotApplied: an agent that
// never finds a leader (bootstrap_expect 2, alone) proposes and forwards
// nothing, so each kind of write it is asked for fails with ErrNoLeader
// marked not applied on the wire (apierr.NotApplied), whether it is a
// proposal (Register, a blob's Delete) or a call the leader runs (RenewTTL,
// RemovePeer, a snapshot's Restore, the blob store's report of shards to
// repair); a read it could not forward says nothing of the kind.
func TestAWriteOnAnAgentWithoutALeaderSaysItWasNotApplied(t *testing.T) {
	cfg := testConfig(t)
	cfg.BootstrapExpect = 2
	cfg.LeaderWait = 300 * time.Millisecond
	n := startedNode(t, cfg)
	conn, registry := dial(t, n.GRPCAddr())
	// A file to restore, from an agent with something applied: this one
	// has no state to save.
	other := testConfig(t)
	other.Name = "other"
	src, srcRegistry := dial(t, startNode(t, other).GRPCAddr())
	if _, err := srcRegistry.Register(ctxT(t), &pb.RegisterRequest{Instance: inst("api", "saved", "127.0.0.1:9000")}); err != nil {
		t.Fatal(err)
	}
	snapshot := saveStale(t, src)

	for _, tc := range []struct {
		name  string
		write bool
		call  func(context.Context) error
	}{
		{"Register", true, func(ctx context.Context) error {
			_, err := registry.Register(ctx, &pb.RegisterRequest{Instance: inst("api", "1", "127.0.0.1:9001")})
			return err
		}},
		{"RenewTTL", true, func(ctx context.Context) error {
			_, err := registry.RenewTTL(ctx, &pb.RenewTTLRequest{Service: "api", Id: "1"})
			return err
		}},
		{"Blobs.Delete", true, func(ctx context.Context) error {
			_, err := pb.NewBlobsClient(conn).Delete(ctx, &pb.BlobDeleteRequest{Name: "b"})
			return err
		}},
		{"Status.RemovePeer", true, func(ctx context.Context) error {
			_, err := pb.NewStatusClient(conn).RemovePeer(ctx, &pb.RemovePeerRequest{Name: "n2"})
			return err
		}},
		{"Snapshot.Restore", true, func(ctx context.Context) error {
			return restore(ctx, conn, snapshot)
		}},
		{"the blob leader's ReportShards, within the agent", true, func(ctx context.Context) error {
			return blobCluster{n}.Leader().ReportShards(ctx, &pb.ReportShardsRequest{Reporter: cfg.Name})
		}},
		{"the blob leader's RepairStatus, within the agent", false, func(ctx context.Context) error {
			_, err := blobCluster{n}.Leader().RepairStatus(ctx, &pb.RepairStatusRequest{})
			return err
		}},
		{"a consistent Get", false, func(ctx context.Context) error {
			_, err := registry.Get(ctx, &pb.GetRequest{Service: "api", Consistency: pb.Consistency_CONSISTENT})
			return err
		}},
	} {
		err := apierr.FromStatus(tc.call(ctxT(t)))
		if !errors.Is(err, apierr.ErrNoLeader) {
			t.Errorf("%s on an agent without a leader = %v, want ErrNoLeader", tc.name, err)
			continue
		}
		marked := apierr.IsNotApplied(err) && strings.Contains(err.Error(), "the write was not applied")
		if marked != tc.write {
			t.Errorf("%s on an agent without a leader = %v: marked not applied %v, want %v", tc.name, err, marked, tc.write)
		}
	}
}

// saveStale returns a snapshot file of the replica of the agent on conn.
func saveStale(t *testing.T, conn grpc.ClientConnInterface) []byte {
	t.Helper()
	stream, err := pb.NewSnapshotClient(conn).Save(ctxT(t), &pb.SnapshotSaveRequest{Stale: true})
	if err != nil {
		t.Fatal(err)
	}
	var file []byte
	for {
		chunk, err := stream.Recv()
		if err == io.EOF {
			return file
		}
		if err != nil {
			t.Fatalf("save a snapshot of the replica: %v", err)
		}
		file = append(file, chunk.Data...)
	}
}

// restore sends file to the Restore of the agent on conn.
func restore(ctx context.Context, conn grpc.ClientConnInterface, file []byte) error {
	stream, err := pb.NewSnapshotClient(conn).Restore(ctx)
	if err != nil {
		return err
	}
	if err := stream.Send(&pb.SnapshotChunk{Data: file}); err != nil && err != io.EOF {
		return err
	}
	_, err = stream.CloseAndRecv()
	return err
}
