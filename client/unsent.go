package client

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/grpc/peer"

	"github.com/zrpcio/zrpc/api/apierr"
	"github.com/zrpcio/zrpc/api/zrpcpb"
)

// A write that failed before gRPC gave it a stream on a connection (the
// agent refused the connection or could not be dialled, the caller's
// context ended while the connection was being made) never left the
// client: no agent can have applied it. markUnsent marks such a write's
// error apierr.NotApplied, so that the caller (and callEach, over
// several endpoints) knows it may send it again without applying it
// twice, rather than taking it for a write of unknown outcome. A call
// that got a stream may have reached the agent, and keeps its error as
// it is; so do reads (writes names the writes). gRPC reports the call's
// peer only once it had a stream (grpc.Peer); its transparent retries
// resend only what the agent never processed, so a peer left empty
// means nothing was processed.
func markUnsent(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	if !writes[method] {
		return invoker(ctx, method, req, reply, cc, opts...)
	}
	var p peer.Peer
	err := invoker(ctx, method, req, reply, cc, append(opts, grpc.Peer(&p))...)
	if err != nil && p.Addr == nil {
		return apierr.NotApplied(err)
	}
	return err
}

// writes are the unary methods of the agent API that change the cluster's
// state.
var writes = map[string]bool{
	zrpcpb.Registry_Register_FullMethodName:   true,
	zrpcpb.Registry_Deregister_FullMethodName: true,
	zrpcpb.Registry_RenewTTL_FullMethodName:   true,
	zrpcpb.Blobs_Delete_FullMethodName:        true,
	zrpcpb.Blobs_BeginPut_FullMethodName:      true,
	zrpcpb.Blobs_RenewPut_FullMethodName:      true,
	zrpcpb.Blobs_CommitPut_FullMethodName:     true,
	zrpcpb.Blobs_AbortPut_FullMethodName:      true,
	zrpcpb.ACL_Bootstrap_FullMethodName:       true,
	zrpcpb.ACL_PolicyCreate_FullMethodName:    true,
	zrpcpb.ACL_PolicyDelete_FullMethodName:    true,
	zrpcpb.ACL_TokenCreate_FullMethodName:     true,
	zrpcpb.ACL_TokenDelete_FullMethodName:     true,
	zrpcpb.Status_RemovePeer_FullMethodName:   true,
	zrpcpb.Keyring_Install_FullMethodName:     true,
	zrpcpb.Keyring_Use_FullMethodName:         true,
	zrpcpb.Keyring_Remove_FullMethodName:      true,
}
