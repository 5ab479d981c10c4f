package node

import (
	"bytes"
	"context"
	"hash/crc32"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/raftstore"
)

func TestAgentToAgentAPIRefusesCallersWithoutTheClusterSecret(t *testing.T) {
	cfg := testConfig(t)
	n := startNode(t, cfg)
	// Wait for the agent's own first writes (the cluster's identity, its
	// node record), so that the revision moves only if a refused call wrote.
	waitFor(t, 10*time.Second, "the cluster's identity and the agent's node record applied", func() bool {
		fsm := n.Store().FSM()
		node := fsm.Node(cfg.Name)
		return fsm.ClusterSecret() != nil && node != nil && node.Health == pb.Health_PASSING
	})
	conn, reg := dial(t, n.GRPCAddr())
	internal, shards := pb.NewInternalClient(conn), pb.NewShardsClient(conn)
	ref := &pb.ShardRef{BlobId: "0123456789abcdef0123456789abcdef", Block: 0, Index: 0}
	shardsDir := filepath.Join(cfg.DataDir, shardsDirName)

	secret := n.Store().FSM().ClusterSecret()
	// Each caller's metadata for a call of method.
	callers := map[string]func(method string) context.Context{
		"no proof": func(string) context.Context { return ctxT(t) },
		"wrong proof": func(method string) context.Context {
			return metadata.AppendToOutgoingContext(ctxT(t), agentProofKey, agentProof([]byte("not the secret"), method, n.GRPCAddr()))
		},
		"another method's proof": func(string) context.Context {
			return metadata.AppendToOutgoingContext(ctxT(t), agentProofKey, agentProof(secret, "/zrpc.v1.Shards/GetShard", n.GRPCAddr()))
		},
		// What a stranger that joined gossip at an address of its own
		// receives from an agent calling it.
		"another agent's proof": func(method string) context.Context {
			return metadata.AppendToOutgoingContext(ctxT(t), agentProofKey, agentProof(secret, method, "127.0.0.1:1"))
		},
		// Builds before the bound proof sent it: refused once every Raft
		// server proves calls to the callee (here the one agent).
		"the unbound proof": func(method string) context.Context {
			return metadata.AppendToOutgoingContext(ctxT(t), clusterAuthKey, clusterAuth(secret, method))
		},
	}
	for name, ctx := range callers {
		t.Run(name, func(t *testing.T) {
			rev := n.Store().FSM().Revision()
			calls := map[string]error{}
			_, calls["Internal.Apply"] = internal.Apply(ctx(pb.Internal_Apply_FullMethodName), &pb.Command{Kind: &pb.Command_Register{Register: inst("evil.rpc", "e1", "10.0.0.66:1")}})
			_, calls["Shards.PutShard"] = shards.PutShard(ctx(pb.Shards_PutShard_FullMethodName), &pb.PutShardRequest{Ref: ref, DataShards: 1, BlockLen: 5, BlockSize: 5, Sum: crc32.Checksum([]byte("evil!"), crc32.MakeTable(crc32.Castagnoli)), Payload: []byte("evil!")})
			_, calls["Shards.DeleteShards"] = shards.DeleteShards(ctx(pb.Shards_DeleteShards_FullMethodName), &pb.DeleteShardsRequest{BlobIds: []string{ref.BlobId}})
			for call, err := range calls {
				if status.Code(err) != codes.PermissionDenied || status.Convert(err).Message() != "agent-to-agent API: caller is not an agent of this cluster" {
					t.Errorf("%s: %v, want PermissionDenied", call, err)
				}
			}
			if got := n.Store().FSM().Revision(); got != rev {
				t.Errorf("registry revision moved from %d to %d", rev, got)
			}
			if len(getInstances(t, reg, "evil.rpc")) != 0 {
				t.Error("the refused Apply registered an instance")
			}
			if c := countFiles(shardsDir); c != 0 {
				t.Errorf("the refused PutShard left %d files under shards/", c)
			}
		})
	}

	// The gate opens for an agent's proof: the same calls get through.
	ctx := metadata.AppendToOutgoingContext(ctxT(t), agentProofKey, agentProof(secret, pb.Shards_PutShard_FullMethodName, n.GRPCAddr()))
	if _, err := shards.PutShard(ctx, &pb.PutShardRequest{Ref: ref, DataShards: 1, BlockLen: 5, BlockSize: 5, Sum: crc32.Checksum([]byte("shard"), crc32.MakeTable(crc32.Castagnoli)), Payload: []byte("shard")}); err != nil {
		t.Fatalf("PutShard with the cluster's proof: %v", err)
	}
	if c := countFiles(shardsDir); c == 0 {
		t.Fatal("PutShard with the cluster's proof stored nothing")
	}
}

func TestAgentWithoutClusterIdentityServesNoAgentAPI(t *testing.T) {
	cfg := testConfig(t)
	cfg.Bootstrap = false // a new agent waiting to be added to a cluster
	n := startedNode(t, cfg)
	conn, _ := dial(t, n.GRPCAddr())
	someSecret := bytes.Repeat([]byte{7}, 32)
	ctx := metadata.AppendToOutgoingContext(ctxT(t), agentProofKey, agentProof(someSecret, "/zrpc.v1.Internal/Apply", n.GRPCAddr()))
	_, err := pb.NewInternalClient(conn).Apply(ctx, &pb.Command{Kind: &pb.Command_ClusterInit{ClusterInit: &pb.ClusterInit{}}})
	// Refused, as Unavailable: it cannot yet tell an agent from a
	// stranger, and will once it has joined, so an agent's call is retried.
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("Internal.Apply on an agent without a cluster identity: %v, want Unavailable", err)
	}
	// Its public API answers (bootstrap_expect asks peers for their Status).
	if _, err := pb.NewStatusClient(conn).Status(ctxT(t), &pb.StatusRequest{}); err != nil {
		t.Fatalf("Status: %v", err)
	}

	// As a caller it has no proof yet: its calls of the agent-to-agent API
	// fail Unavailable, which a forwarded write retries, and its other
	// calls carry nothing.
	creds := peerCredentials{n: n, callee: n.GRPCAddr()}
	md, err := creds.GetRequestMetadata(credentials.NewContextWithRequestInfo(ctxT(t), credentials.RequestInfo{Method: "/zrpc.v1.Internal/Apply"}))
	if status.Code(err) != codes.Unavailable || !raftstore.RetryOnLeader(err) || md != nil {
		t.Fatalf("credentials without a secret: %v, %v; want Unavailable (retried)", md, err)
	}
	md, err = creds.GetRequestMetadata(credentials.NewContextWithRequestInfo(ctxT(t), credentials.RequestInfo{Method: "/zrpc.v1.Status/Status"}))
	if err != nil || len(md) != 0 {
		t.Fatalf("credentials of a public call: %v, %v; want none", md, err)
	}
}

// TestPeerCredentialsProveCallsToTheirCallee: an agent's calls of the
// agent-to-agent API carry the proof bound to the peer dialled, and, once
// every Raft server's build checks that one, not the unbound proof any
// agent would take.
func TestPeerCredentialsProveCallsToTheirCallee(t *testing.T) {
	n := startNode(t, testConfig(t))
	waitFor(t, 10*time.Second, "the cluster's identity applied", func() bool { return n.Store().FSM().ClusterSecret() != nil })
	secret := n.Store().FSM().ClusterSecret()
	const callee = "10.0.0.2:8400"
	ctx := credentials.NewContextWithRequestInfo(ctxT(t), credentials.RequestInfo{Method: pb.Internal_Apply_FullMethodName})
	md, err := peerCredentials{n: n, callee: callee}.GetRequestMetadata(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := md[agentProofKey], agentProof(secret, pb.Internal_Apply_FullMethodName, callee); got != want {
		t.Errorf("proof for %s: %q, want %q", callee, got, want)
	}
	if got := md[agentProofKey]; got == agentProof(secret, pb.Internal_Apply_FullMethodName, n.GRPCAddr()) {
		t.Error("the proof for a peer is the one this agent accepts itself")
	}
	if unbound, ok := md[clusterAuthKey]; ok {
		t.Errorf("the unbound proof %q sent with every Raft server on a build that checks the bound one", unbound)
	}
}

// TestUnboundProofAcceptedOnlyWhileAServerIsOfAnOlderBuild: during a
// rolling upgrade (a Raft server whose build predates bound proofs, here
// one whose version nothing announces) the agent accepts the unbound
// proof such a server sends, and sends it itself; once no such server is
// left, it does neither.
func TestUnboundProofAcceptedOnlyWhileAServerIsOfAnOlderBuild(t *testing.T) {
	n := startNode(t, testConfig(t))
	waitFor(t, 10*time.Second, "the cluster's identity applied", func() bool { return n.Store().FSM().ClusterSecret() != nil })
	secret := n.Store().FSM().ClusterSecret()
	conn, _ := dial(t, n.GRPCAddr())
	shards := pb.NewShardsClient(conn)
	unbound := func() error {
		ctx := metadata.AppendToOutgoingContext(ctxT(t), clusterAuthKey, clusterAuth(secret, pb.Shards_DeleteShards_FullMethodName))
		_, err := shards.DeleteShards(ctx, &pb.DeleteShardsRequest{BlobIds: []string{"0123456789abcdef0123456789abcdef"}})
		return err
	}
	sent := func() bool {
		ctx := credentials.NewContextWithRequestInfo(ctxT(t), credentials.RequestInfo{Method: pb.Internal_Apply_FullMethodName})
		md, err := peerCredentials{n: n, callee: "10.0.0.2:8400"}.GetRequestMetadata(ctx)
		return err == nil && md[clusterAuthKey] == clusterAuth(secret, pb.Internal_Apply_FullMethodName)
	}
	if err := unbound(); status.Code(err) != codes.PermissionDenied || sent() {
		t.Fatalf("with every server on this build: the unbound proof %v (want PermissionDenied), sent %v (want not)", err, sent())
	}
	if err := n.Store().AddNonvoter(ctxT(t), "old", "127.0.0.1:1"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the unbound proof accepted and sent while a server's build is older", func() bool {
		return unbound() == nil && sent()
	})
	if err := n.Store().RemoveServer(ctxT(t), "old"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the unbound proof refused and no longer sent once that server is gone", func() bool {
		return status.Code(unbound()) == codes.PermissionDenied && !sent()
	})
}
