package acl

import (
	pb "github.com/zrpcio/zrpc/api/zrpcpb"
)

// Permission is what one RPC needs.
type Permission struct {
	// Public RPCs need no token (ACL bootstrap, gRPC health).
	Public bool
	// Resource and Access are the permission the call needs.
	Resource Resource
	Access   Access
	// Name takes the resource's name from a request message; check false
	// means the message needs no check of its own (a Session keepalive, a
	// List that is filtered instead). Nil: the resource has no name and
	// the call is checked once, before the handler runs. For a streaming
	// RPC it is applied to every message the client sends.
	Name func(msg any) (name string, check bool)
	// Filter, for List-type RPCs, removes from a response (or, on a
	// stream, from each message sent) what the token may not read,
	// returning the message to send instead of refusing the call.
	Filter func(a Authorizer, resp any) any
}

// Methods is the permission of every RPC an agent serves, by full method
// name. A method that is not here is refused to every token (and a test
// fails for any RPC of api/zrpcpb left out).
var Methods = map[string]Permission{
	// Registry.
	pb.Registry_Register_FullMethodName:   {Resource: Service, Access: Write, Name: registerService},
	pb.Registry_Deregister_FullMethodName: {Resource: Service, Access: Write, Name: deregisterService},
	pb.Registry_RenewTTL_FullMethodName:   {Resource: Service, Access: Write, Name: renewService},
	pb.Registry_Get_FullMethodName:        {Resource: Service, Access: Read, Name: getService},
	pb.Registry_List_FullMethodName:       {Resource: Service, Access: Read, Name: unchecked, Filter: filterServices},
	pb.Registry_Watch_FullMethodName:      {Resource: Service, Access: Read, Name: watchService, Filter: filterEvents},
	// WatchMany's handler checks each watch it opens (Allowed) and refuses
	// that one alone; events of a watch of every service are filtered.
	pb.Registry_WatchMany_FullMethodName: {Resource: Service, Access: Read, Name: unchecked, Filter: filterWatchMany},
	pb.Registry_Session_FullMethodName:   {Resource: Service, Access: Write, Name: sessionService},

	// Status.
	pb.Status_Status_FullMethodName:     {Resource: Operator, Access: Read},
	pb.Status_Members_FullMethodName:    {Resource: Operator, Access: Read},
	pb.Status_Peers_FullMethodName:      {Resource: Operator, Access: Read},
	pb.Status_Version_FullMethodName:    {Resource: Operator, Access: Read},
	pb.Status_Leave_FullMethodName:      {Resource: Operator, Access: Write},
	pb.Status_RemovePeer_FullMethodName: {Resource: Operator, Access: Write},

	// Blobs.
	pb.Blobs_Put_FullMethodName:          {Resource: Blob, Access: Write, Name: putBlob},
	pb.Blobs_Get_FullMethodName:          {Resource: Blob, Access: Read, Name: getBlob},
	pb.Blobs_Stat_FullMethodName:         {Resource: Blob, Access: Read, Name: statBlob},
	pb.Blobs_List_FullMethodName:         {Resource: Blob, Access: Read, Name: unchecked, Filter: filterBlobs},
	pb.Blobs_Delete_FullMethodName:       {Resource: Blob, Access: Write, Name: deleteBlob},
	pb.Blobs_RepairStatus_FullMethodName: {Resource: Operator, Access: Read},
	// Client-striped puts and reads: every call names its blob, and the
	// agent checks that the blob id it names belongs to that name.
	pb.Blobs_BeginPut_FullMethodName:    {Resource: Blob, Access: Write, Name: beginPut},
	pb.Blobs_WriteShards_FullMethodName: {Resource: Blob, Access: Write, Name: writeShards},
	pb.Blobs_RenewPut_FullMethodName:    {Resource: Blob, Access: Write, Name: renewPut},
	pb.Blobs_CommitPut_FullMethodName:   {Resource: Blob, Access: Write, Name: commitPut},
	pb.Blobs_AbortPut_FullMethodName:    {Resource: Blob, Access: Write, Name: abortPut},
	pb.Blobs_Locate_FullMethodName:      {Resource: Blob, Access: Read, Name: locateBlob},
	pb.Blobs_ReadShards_FullMethodName:  {Resource: Blob, Access: Read, Name: readShards},

	// The agent-to-agent API.
	pb.Internal_Apply_FullMethodName:      {Resource: Agent, Access: Write},
	pb.Shards_PutShard_FullMethodName:     {Resource: Agent, Access: Write},
	pb.Shards_SyncShards_FullMethodName:   {Resource: Agent, Access: Write},
	pb.Shards_GetShard_FullMethodName:     {Resource: Agent, Access: Write},
	pb.Shards_DeleteShards_FullMethodName: {Resource: Agent, Access: Write},
	pb.Shards_ReportShards_FullMethodName: {Resource: Agent, Access: Write},
	pb.Shards_Referenced_FullMethodName:   {Resource: Agent, Access: Write},
	pb.Shards_HeldShards_FullMethodName:   {Resource: Agent, Access: Write},
	// Writes forwarded together (Internal.Apply's batch form).
	pb.Internal_ApplyBatch_FullMethodName: {Resource: Agent, Access: Write},
	// A peer that did not run for a while asks the leader how far to
	// catch up; like every agent-to-agent call, agents only.
	pb.Internal_ReadIndex_FullMethodName: {Resource: Agent, Access: Write},

	// Snapshots: a saved file holds the cluster's secret and the tokens'
	// hashes, so saving needs an operator's write; a restore replaces the
	// ACL state itself, so it needs acl:write.
	pb.Snapshot_Save_FullMethodName:    {Resource: Operator, Access: Write},
	pb.Snapshot_Restore_FullMethodName: {Resource: ACL, Access: Write},

	// The gossip keyring: listing shows the keys themselves, so it needs
	// an operator's write like changing them; the per-agent half is
	// agent-to-agent.
	pb.Keyring_List_FullMethodName:        {Resource: Operator, Access: Write}, // it shows the keys themselves
	pb.Keyring_Install_FullMethodName:     {Resource: Operator, Access: Write},
	pb.Keyring_Use_FullMethodName:         {Resource: Operator, Access: Write},
	pb.Keyring_Remove_FullMethodName:      {Resource: Operator, Access: Write},
	pb.KeyringPeer_List_FullMethodName:    {Resource: Agent, Access: Write},
	pb.KeyringPeer_Install_FullMethodName: {Resource: Agent, Access: Write},
	pb.KeyringPeer_Use_FullMethodName:     {Resource: Agent, Access: Write},
	pb.KeyringPeer_Remove_FullMethodName:  {Resource: Agent, Access: Write},

	// ACL.
	pb.ACL_Bootstrap_FullMethodName:    {Public: true},
	pb.ACL_PolicyCreate_FullMethodName: {Resource: ACL, Access: Write},
	pb.ACL_PolicyGet_FullMethodName:    {Resource: ACL, Access: Read},
	pb.ACL_PolicyList_FullMethodName:   {Resource: ACL, Access: Read},
	pb.ACL_PolicyDelete_FullMethodName: {Resource: ACL, Access: Write},
	pb.ACL_TokenCreate_FullMethodName:  {Resource: ACL, Access: Write},
	pb.ACL_TokenRead_FullMethodName:    {Resource: ACL, Access: Read},
	pb.ACL_TokenList_FullMethodName:    {Resource: ACL, Access: Read},
	pb.ACL_TokenDelete_FullMethodName:  {Resource: ACL, Access: Write},

	// Served beside the API: health checks need no token; reflection
	// shows the API's shape, an operator's read.
	"/grpc.health.v1.Health/Check":                                   {Public: true},
	"/grpc.health.v1.Health/List":                                    {Public: true},
	"/grpc.health.v1.Health/Watch":                                   {Public: true},
	"/grpc.reflection.v1.ServerReflection/ServerReflectionInfo":      {Resource: Operator, Access: Read},
	"/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": {Resource: Operator, Access: Read},
}

func unchecked(any) (string, bool) { return "", false }

// named wraps a getter of one request type; another type is checked with
// name "" (a request of a wrong type never reaches a handler anyway).
func named[T any](get func(T) string) func(any) (string, bool) {
	return func(msg any) (string, bool) {
		m, ok := msg.(T)
		if !ok {
			return "", true
		}
		return get(m), true
	}
}

var (
	registerService   = named(func(r *pb.RegisterRequest) string { return r.GetInstance().GetService() })
	deregisterService = named(func(r *pb.DeregisterRequest) string { return r.GetService() })
	renewService      = named(func(r *pb.RenewTTLRequest) string { return r.GetService() })
	getService        = named(func(r *pb.GetRequest) string { return r.GetService() })
	getBlob           = named(func(r *pb.BlobGetRequest) string { return r.GetName() })
	statBlob          = named(func(r *pb.BlobStatRequest) string { return r.GetName() })
	deleteBlob        = named(func(r *pb.BlobDeleteRequest) string { return r.GetName() })
	beginPut          = named(func(r *pb.BeginPutRequest) string { return r.GetHeader().GetName() })
	renewPut          = named(func(r *pb.RenewPutRequest) string { return r.GetName() })
	commitPut         = named(func(r *pb.CommitPutRequest) string { return r.GetBlob().GetName() })
	abortPut          = named(func(r *pb.AbortPutRequest) string { return r.GetName() })
	locateBlob        = named(func(r *pb.LocateRequest) string { return r.GetName() })
	readShards        = named(func(r *pb.ReadShardsRequest) string { return r.GetName() })
)

// writeShards checks a WriteShards stream's header; its blocks need no
// check of their own.
func writeShards(msg any) (string, bool) {
	r, ok := msg.(*pb.WriteShardsRequest)
	if !ok {
		return "", true
	}
	if h := r.GetHeader(); h != nil {
		return h.GetName(), true
	}
	return "", false
}

// watchService checks a watch of one service; a watch of every service
// (empty name) is filtered instead.
func watchService(msg any) (string, bool) {
	r, ok := msg.(*pb.WatchRequest)
	if !ok {
		return "", true
	}
	return r.GetService(), r.GetService() != ""
}

// sessionService checks each registration and deregistration on a Session
// stream against its service; opening and keepalives need only a token.
func sessionService(msg any) (string, bool) {
	r, ok := msg.(*pb.SessionRequest)
	if !ok {
		return "", true
	}
	switch k := r.Kind.(type) {
	case *pb.SessionRequest_Register:
		return k.Register.GetInstance().GetService(), true
	case *pb.SessionRequest_Deregister:
		return k.Deregister.GetService(), true
	default:
		return "", false
	}
}

// putBlob checks a put's header; its chunks need no check of their own.
func putBlob(msg any) (string, bool) {
	r, ok := msg.(*pb.BlobPutRequest)
	if !ok {
		return "", true
	}
	if h := r.GetHeader(); h != nil {
		return h.GetName(), true
	}
	return "", false
}

// readable keeps the items whose name (of resource kind) a may read.
func readable[T any](a Authorizer, kind Resource, items []T, name func(T) string) []T {
	var out []T
	for _, it := range items {
		if a.Allows(kind, name(it), Read) {
			out = append(out, it)
		}
	}
	return out
}

func filterServices(a Authorizer, resp any) any {
	r, ok := resp.(*pb.ListResponse)
	if !ok {
		return resp
	}
	return &pb.ListResponse{Header: r.Header, Services: readable(a, Service, r.Services, (*pb.ServiceSummary).GetName)}
}

func filterBlobs(a Authorizer, resp any) any {
	r, ok := resp.(*pb.BlobListResponse)
	if !ok {
		return resp
	}
	return &pb.BlobListResponse{Header: r.Header, Blobs: readable(a, Blob, r.Blobs, (*pb.BlobSummary).GetName)}
}

// filterEvents keeps the events of services the token may read. The
// response's other fields are kept, so snapshots and parts still frame
// the same way.
func filterEvents(a Authorizer, resp any) any {
	r, ok := resp.(*pb.WatchResponse)
	if !ok {
		return resp
	}
	return readableEvents(a, r)
}

// filterWatchMany filters the events of one watch's response as
// filterEvents does.
func filterWatchMany(a Authorizer, resp any) any {
	r, ok := resp.(*pb.WatchManyResponse)
	if !ok || r.Response == nil {
		return resp
	}
	return &pb.WatchManyResponse{WatchId: r.WatchId, Response: readableEvents(a, r.Response), Ended: r.Ended}
}

func readableEvents(a Authorizer, r *pb.WatchResponse) *pb.WatchResponse {
	return &pb.WatchResponse{Header: r.Header, Snapshot: r.Snapshot, More: r.More, ClusterId: r.ClusterId,
		Events: readable(a, Service, r.Events, func(ev *pb.Event) string { return ev.GetInstance().GetService() })}
}
