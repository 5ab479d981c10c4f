package grpcapi_test

import (
	"fmt"
	"math"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
)

// methodCases are the absurd requests of one method beyond the generic
// ones (genericCases), aimed at what it does.
type methodCases struct {
	cases []absurdCase
	// skipGeneric: the method must not get the generic requests (a valid
	// one would stop the agent).
	skipGeneric bool
	// maySilentlyWait: a server stream that sends nothing until the test
	// stops waiting is not hung but waiting, as asked.
	maySilentlyWait bool
}

// send is a case sending req.
func send(name string, req proto.Message, want func(error) error) absurdCase {
	return absurdCase{name: name, build: func(m protoreflect.Message) { proto.Merge(m.Interface(), req) }, want: want}
}

// sendTimes is a client-stream case sending req n times.
func sendTimes(name string, req proto.Message, n int, want func(error) error) absurdCase {
	c := send(name, req, want)
	c.times = n
	return c
}

// refused wants code with a message that contains every one of words (a
// field's name, what is allowed).
func refused(code codes.Code, words ...string) func(error) error {
	return func(err error) error {
		st := status.Convert(err)
		if st.Code() != code {
			return fmt.Errorf("got %v, want %v", err, code)
		}
		for _, w := range words {
			if !strings.Contains(st.Message(), w) {
				return fmt.Errorf("got %q, want a message naming %q", st.Message(), w)
			}
		}
		return nil
	}
}

var (
	long    = strings.Repeat("a", 10<<10)
	bigMeta = func() map[string]string {
		m := make(map[string]string, 100_000)
		for i := range 100_000 {
			m[fmt.Sprintf("k%d", i)] = "v"
		}
		return m
	}()
	blobID = "0123456789abcdef0123456789abcdef"
)

// specificCases has an entry for every method of the agent's API; the
// test fails for a method without one.
var specificCases = map[string]methodCases{
	pb.Registry_Register_FullMethodName: {cases: []absurdCase{
		send("service with a NUL", &pb.RegisterRequest{Instance: &pb.Instance{Service: "a\x00b", Id: "i", Address: "127.0.0.1:1"}},
			refused(codes.InvalidArgument, "instance.service")),
		send("id with '..'", &pb.RegisterRequest{Instance: &pb.Instance{Service: "s", Id: "../x", Address: "127.0.0.1:1"}},
			refused(codes.InvalidArgument, "instance.id")),
		send("100k metadata entries", &pb.RegisterRequest{Instance: &pb.Instance{Service: "s", Id: "i", Address: "127.0.0.1:1", Metadata: bigMeta}},
			refused(codes.InvalidArgument, "instance.metadata")),
		send("port 0", &pb.RegisterRequest{Instance: &pb.Instance{Service: "s", Id: "i", Address: "127.0.0.1:0"}},
			refused(codes.InvalidArgument, "instance.address")),
		send("ttl of 300 years", &pb.RegisterRequest{Instance: &pb.Instance{Service: "s", Id: "i", Address: "127.0.0.1:1",
			Check: &pb.Check{Ttl: &durationpb.Duration{Seconds: 300 * 365 * 24 * 3600}}}}, refused(codes.InvalidArgument, "instance.check.ttl")),
		send("weight beyond the limit", &pb.RegisterRequest{Instance: &pb.Instance{Service: "s", Id: "i", Address: "127.0.0.1:1", Weight: math.MaxUint32}},
			refused(codes.InvalidArgument, "instance.weight")),
		send("10 KB request id", &pb.RegisterRequest{RequestId: long, Instance: &pb.Instance{Service: "s", Id: "i", Address: "127.0.0.1:1"}},
			refused(codes.InvalidArgument, "request_id")),
	}},
	pb.Registry_Deregister_FullMethodName: {cases: []absurdCase{
		send("service '..'", &pb.DeregisterRequest{Service: "..", Id: "u1"}, refused(codes.InvalidArgument, "service")),
		send("10 KB id", &pb.DeregisterRequest{Service: "user.rpc", Id: long}, refused(codes.InvalidArgument, "id")),
	}},
	pb.Registry_RenewTTL_FullMethodName: {cases: []absurdCase{
		send("service with a slash", &pb.RenewTTLRequest{Service: "a/b", Id: "u1"}, refused(codes.InvalidArgument, "service")),
		send("an instance without a TTL", &pb.RenewTTLRequest{Service: "user.rpc", Id: "u1"}, nil),
	}},
	pb.Registry_Get_FullMethodName: {cases: []absurdCase{
		send("page token of garbage", &pb.GetRequest{Service: "user.rpc", PageToken: "\x00../-garbage"}, refused(codes.InvalidArgument, "page_token")),
		send("largest page size", &pb.GetRequest{Service: "user.rpc", PageSize: math.MaxUint32}, nil),
		send("unknown consistency", &pb.GetRequest{Service: "user.rpc", Consistency: pb.Consistency(99)}, nil),
	}},
	pb.Registry_List_FullMethodName: {cases: []absurdCase{
		send("unknown consistency", &pb.ListRequest{Consistency: pb.Consistency(-5)}, nil),
	}},
	// A watch from a revision not reached yet waits for it, silent.
	pb.Registry_Watch_FullMethodName: {maySilentlyWait: true, cases: []absurdCase{
		send("from the last revision there can be", &pb.WatchRequest{FromRevision: math.MaxUint64}, nil),
		send("service '../..'", &pb.WatchRequest{Service: "../.."}, refused(codes.InvalidArgument, "service")),
	}},
	// A stream of watches waits silently for writes; a bad watch is
	// refused alone in a response, a request that breaks the protocol
	// ends the stream.
	pb.Registry_WatchMany_FullMethodName: {maySilentlyWait: true, cases: []absurdCase{
		send("an empty request", &pb.WatchManyRequest{}, refused(codes.InvalidArgument, "kind")),
		send("watch id 0", &pb.WatchManyRequest{Kind: &pb.WatchManyRequest_Create{Create: &pb.WatchCreate{}}}, refused(codes.InvalidArgument, "watch_id")),
		send("service '../..'", &pb.WatchManyRequest{Kind: &pb.WatchManyRequest_Create{Create: &pb.WatchCreate{
			WatchId: 1, Watch: &pb.WatchRequest{Service: "../.."}}}}, nil),
		send("from the last revision there can be", &pb.WatchManyRequest{Kind: &pb.WatchManyRequest_Create{Create: &pb.WatchCreate{
			WatchId: math.MaxUint64, Watch: &pb.WatchRequest{FromRevision: math.MaxUint64}}}}, nil),
		send("cancel of a watch never opened", &pb.WatchManyRequest{Kind: &pb.WatchManyRequest_Cancel{Cancel: &pb.WatchCancel{WatchId: 42}}}, nil),
	}},
	pb.Registry_Session_FullMethodName: {cases: []absurdCase{
		sendTimes("keepalives before an open", &pb.SessionRequest{Kind: &pb.SessionRequest_Keepalive{Keepalive: &pb.SessionKeepAlive{}}}, 100, nil),
		sendTimes("registrations before an open", &pb.SessionRequest{Kind: &pb.SessionRequest_Register{Register: &pb.RegisterRequest{
			Instance: &pb.Instance{Service: "s", Id: "i", Address: "127.0.0.1:1"}}}}, 3, nil),
	}},
	pb.Status_Status_FullMethodName:  {},
	pb.Status_Members_FullMethodName: {},
	pb.Status_Peers_FullMethodName:   {},
	pb.Status_Version_FullMethodName: {},
	// Any well-formed Leave takes the agent out of the cluster: only a
	// caller without the operator's permission is tried.
	pb.Status_Leave_FullMethodName: {skipGeneric: true, cases: []absurdCase{
		{name: "without a token", build: func(protoreflect.Message) {}, anonymous: true, want: refused(codes.Unauthenticated)},
	}},
	pb.Status_RemovePeer_FullMethodName: {cases: []absurdCase{
		send("itself, the leader", &pb.RemovePeerRequest{Name: "n1"}, nil),
		send("10 KB name", &pb.RemovePeerRequest{Name: long}, nil),
	}},
	pb.Blobs_Put_FullMethodName: {cases: []absurdCase{
		send("size of 2^62", &pb.BlobPutRequest{Msg: &pb.BlobPutRequest_Header{Header: &pb.BlobPutHeader{Name: "x", Size: 1 << 62}}}, nil),
		send("negative size", &pb.BlobPutRequest{Msg: &pb.BlobPutRequest_Header{Header: &pb.BlobPutHeader{Name: "x", Size: -5}}}, nil),
		send("k+m beyond the limit", &pb.BlobPutRequest{Msg: &pb.BlobPutRequest_Header{Header: &pb.BlobPutHeader{Name: "x", Size: 10, DataShards: 200, ParityShards: 200}}},
			refused(codes.InvalidArgument)),
		send("name '../../etc/passwd'", &pb.BlobPutRequest{Msg: &pb.BlobPutRequest_Header{Header: &pb.BlobPutHeader{Name: "../../etc/passwd", Size: 1}}},
			refused(codes.InvalidArgument)),
		sendTimes("headers only", &pb.BlobPutRequest{Msg: &pb.BlobPutRequest_Header{Header: &pb.BlobPutHeader{Name: "y", Size: 1}}}, 50, nil),
		sendTimes("chunks without a header", &pb.BlobPutRequest{Msg: &pb.BlobPutRequest_Chunk{Chunk: make([]byte, 1<<20)}}, 4, nil),
	}},
	pb.Blobs_Get_FullMethodName: {cases: []absurdCase{
		send("offset past the end", &pb.BlobGetRequest{Name: "models/a.bin", Offset: math.MaxUint64}, nil),
		send("length wrapping the offset", &pb.BlobGetRequest{Name: "models/a.bin", Offset: 2, Length: math.MaxUint64}, nil),
		send("revision not reached", &pb.BlobGetRequest{Name: "models/a.bin", MinRevision: math.MaxUint64}, nil),
	}},
	pb.Blobs_Stat_FullMethodName: {cases: []absurdCase{
		send("revision not reached", &pb.BlobStatRequest{Name: "models/a.bin", MinRevision: math.MaxUint64}, nil),
	}},
	pb.Blobs_List_FullMethodName: {cases: []absurdCase{
		send("10 KB prefix", &pb.BlobListRequest{Prefix: long}, nil),
	}},
	pb.Blobs_Delete_FullMethodName: {cases: []absurdCase{
		send("name '..'", &pb.BlobDeleteRequest{Name: ".."}, refused(codes.InvalidArgument)),
	}},
	pb.Blobs_RepairStatus_FullMethodName: {cases: []absurdCase{
		send("blob id of 10 KB", &pb.RepairStatusRequest{BlobId: long}, nil),
	}},
	pb.Blobs_BeginPut_FullMethodName: {cases: []absurdCase{
		send("size of 2^62", &pb.BeginPutRequest{Header: &pb.BlobPutHeader{Name: "x", Size: 1 << 62}}, nil),
		send("k+m beyond the limit", &pb.BeginPutRequest{Header: &pb.BlobPutHeader{Name: "x", Size: 1 << 20, DataShards: math.MaxUint32, ParityShards: math.MaxUint32}},
			refused(codes.InvalidArgument)),
	}},
	pb.Blobs_WriteShards_FullMethodName: {cases: []absurdCase{
		sendTimes("blocks without a lease", &pb.WriteShardsRequest{Header: &pb.WriteShardsHeader{Name: "x", BlobId: blobID, DataShards: 1, BlockSize: 1 << 20},
			Block: math.MaxUint32, BlockLen: math.MaxUint32, Payload: make([]byte, 1<<20)}, 3, nil),
		send("block size of 4 GiB", &pb.WriteShardsRequest{Header: &pb.WriteShardsHeader{Name: "x", BlobId: blobID, DataShards: 1, BlockSize: math.MaxUint32}}, nil),
	}},
	pb.Blobs_RenewPut_FullMethodName: {cases: []absurdCase{
		send("unknown put", &pb.RenewPutRequest{Name: "x", BlobId: blobID}, nil),
	}},
	pb.Blobs_CommitPut_FullMethodName: {cases: []absurdCase{
		send("blob claiming 2^64 bytes in one block", &pb.CommitPutRequest{Blob: &pb.Blob{Name: "x", Id: blobID, Size: math.MaxUint64, DataShards: 1, BlockSize: 1 << 20}}, nil),
		send("over the stored blob with another's id", &pb.CommitPutRequest{Overwrite: true, Blob: &pb.Blob{Name: "models/a.bin", Id: blobID, Size: 1, DataShards: 1, BlockSize: 1 << 20}}, nil),
	}},
	pb.Blobs_AbortPut_FullMethodName: {cases: []absurdCase{
		send("unknown put", &pb.AbortPutRequest{Name: "models/a.bin", BlobId: blobID}, nil),
	}},
	pb.Blobs_Locate_FullMethodName: {cases: []absurdCase{
		send("name with a NUL", &pb.LocateRequest{Name: "a\x00"}, nil),
	}},
	pb.Blobs_ReadShards_FullMethodName: {cases: []absurdCase{
		send("a million positions", &pb.ReadShardsRequest{Name: "models/a.bin", BlobId: blobID, Shards: make([]*pb.ShardPos, 1_000_000)}, nil),
	}},
	pb.Shards_PutShard_FullMethodName: {cases: []absurdCase{
		send("index beyond k+m", &pb.PutShardRequest{Ref: &pb.ShardRef{BlobId: blobID, Index: 300}, DataShards: 1, BlockLen: 1, Payload: []byte{1}}, nil),
		send("block length of 4 GiB", &pb.PutShardRequest{Ref: &pb.ShardRef{BlobId: blobID}, DataShards: 1, BlockLen: math.MaxUint32, BlockSize: math.MaxUint32, Payload: []byte{1}}, nil),
		send("the last block there can be", &pb.PutShardRequest{Ref: &pb.ShardRef{BlobId: blobID, Block: math.MaxUint32}, DataShards: 1, BlockLen: 1, BlockSize: 1 << 20, Payload: []byte{1}},
			refused(codes.InvalidArgument, "max blob size")),
		send("blob id '../../x'", &pb.PutShardRequest{Ref: &pb.ShardRef{BlobId: "../../x"}, DataShards: 1, BlockLen: 1, Payload: []byte{1}}, nil),
	}},
	pb.Shards_SyncShards_FullMethodName: {cases: []absurdCase{
		send("blob id '..'", &pb.SyncShardsRequest{BlobId: ".."}, nil),
	}},
	pb.Shards_GetShard_FullMethodName: {cases: []absurdCase{
		send("block 2^32-1", &pb.GetShardRequest{Ref: &pb.ShardRef{BlobId: blobID, Block: math.MaxUint32, Index: math.MaxUint32}}, nil),
	}},
	pb.Shards_DeleteShards_FullMethodName: {cases: []absurdCase{
		send("ids '..' and '/'", &pb.DeleteShardsRequest{BlobIds: []string{"..", "/", "../shards"}}, nil),
	}},
	pb.Shards_ReportShards_FullMethodName: {cases: []absurdCase{
		send("corrupt shards of unknown agents", &pb.ReportShardsRequest{Reporter: long, Corrupt: []*pb.ShardRef{{BlobId: blobID, Node: long}}}, nil),
	}},
	pb.Shards_Referenced_FullMethodName: {cases: []absurdCase{
		send("node '..'", &pb.ReferencedRequest{Node: "..", Shards: []*pb.ShardRef{{BlobId: ".."}}}, nil),
	}},
	pb.Shards_HeldShards_FullMethodName: {cases: []absurdCase{
		send("a million indexes", &pb.HeldShardsRequest{BlobId: blobID, Indexes: make([]uint32, 1_000_000)}, nil),
	}},
	pb.Internal_Apply_FullMethodName: {cases: []absurdCase{
		send("an agent record", &pb.Command{Kind: &pb.Command_NodeUpsert{NodeUpsert: &pb.Node{Name: "evil"}}}, refused(codes.InvalidArgument, "node_upsert")),
		send("removing the leader", &pb.Command{Kind: &pb.Command_NodeRemove{NodeRemove: &pb.NodeRemove{Name: "n1"}}}, refused(codes.FailedPrecondition)),
	}},
	pb.Internal_ApplyBatch_FullMethodName: {cases: []absurdCase{
		send("100k empty commands", &pb.ApplyBatchRequest{Commands: make([]*pb.Command, 100_000)}, nil),
	}},
	pb.Internal_ReadIndex_FullMethodName: {}, // no fields: the generic cases cover it
	pb.ACL_Bootstrap_FullMethodName: {cases: []absurdCase{
		send("a second time", &pb.ACLBootstrapRequest{}, refused(codes.FailedPrecondition)),
	}},
	pb.ACL_PolicyCreate_FullMethodName: {cases: []absurdCase{
		send("10 KB name", &pb.ACLPolicyCreateRequest{Policy: &pb.ACLPolicy{Name: long, Rules: `operator { read }`}}, refused(codes.InvalidArgument, "policy.name")),
		send("rules of 1 MiB", &pb.ACLPolicyCreateRequest{Policy: &pb.ACLPolicy{Name: "big", Rules: strings.Repeat(`service "a" { read } `, 50_000)}}, refused(codes.InvalidArgument, "policy.rules")),
	}},
	pb.ACL_PolicyGet_FullMethodName:  {cases: []absurdCase{send("10 KB name", &pb.ACLPolicyGetRequest{Name: long}, nil)}},
	pb.ACL_PolicyList_FullMethodName: {},
	pb.ACL_PolicyDelete_FullMethodName: {cases: []absurdCase{
		send("the management policy", &pb.ACLPolicyDeleteRequest{Name: "global-management"}, nil),
	}},
	pb.ACL_TokenCreate_FullMethodName: {cases: []absurdCase{
		send("a million policies", &pb.ACLTokenCreateRequest{Policies: make([]string, 1_000_000)}, refused(codes.InvalidArgument, "policies")),
		send("secret of 10 KB", &pb.ACLTokenCreateRequest{Policies: []string{"global-management"}, Secret: long}, refused(codes.InvalidArgument, "secret")),
	}},
	pb.ACL_TokenRead_FullMethodName:   {cases: []absurdCase{send("accessor '..'", &pb.ACLTokenReadRequest{AccessorId: ".."}, nil)}},
	pb.ACL_TokenList_FullMethodName:   {},
	pb.ACL_TokenDelete_FullMethodName: {cases: []absurdCase{send("accessor of 10 KB", &pb.ACLTokenDeleteRequest{AccessorId: long}, nil)}},
	pb.Keyring_List_FullMethodName:    {},
	pb.Keyring_Install_FullMethodName: {cases: []absurdCase{
		send("key of 10 KB", &pb.KeyringKeyRequest{Key: long}, refused(codes.InvalidArgument, "key")),
	}},
	pb.Keyring_Use_FullMethodName:         {cases: []absurdCase{send("key not base64", &pb.KeyringKeyRequest{Key: "..\x00"}, nil)}},
	pb.Keyring_Remove_FullMethodName:      {cases: []absurdCase{send("key not base64", &pb.KeyringKeyRequest{Key: "/"}, nil)}},
	pb.KeyringPeer_List_FullMethodName:    {},
	pb.KeyringPeer_Install_FullMethodName: {cases: []absurdCase{send("key of 10 KB", &pb.KeyringKeyRequest{Key: long}, nil)}},
	pb.KeyringPeer_Use_FullMethodName:     {cases: []absurdCase{send("key not base64", &pb.KeyringKeyRequest{Key: "*"}, nil)}},
	pb.KeyringPeer_Remove_FullMethodName:  {cases: []absurdCase{send("key not base64", &pb.KeyringKeyRequest{Key: "*"}, nil)}},
	pb.Snapshot_Save_FullMethodName:       {},
	pb.Snapshot_Restore_FullMethodName: {cases: []absurdCase{
		sendTimes("64 MiB of zeros", &pb.SnapshotChunk{Data: make([]byte, 1<<20)}, 64, refused(codes.InvalidArgument)),
		send("a header announcing 2^63 bytes", &pb.SnapshotChunk{Data: append([]byte("ZRPCSNAP"), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f)}, nil),
	}},
}
