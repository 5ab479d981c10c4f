package acl

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
)

// apiMethods walks every service descriptor of api/zrpcpb.
func apiMethods(t *testing.T) map[string]protoreflect.MethodDescriptor {
	t.Helper()
	out := map[string]protoreflect.MethodDescriptor{}
	protoregistry.GlobalFiles.RangeFilesByPackage("zrpc.v1", func(fd protoreflect.FileDescriptor) bool {
		svcs := fd.Services()
		for i := range svcs.Len() {
			ms := svcs.Get(i).Methods()
			for j := range ms.Len() {
				m := ms.Get(j)
				out[fmt.Sprintf("/%s/%s", svcs.Get(i).FullName(), m.Name())] = m
			}
		}
		return true
	})
	if len(out) < 30 {
		t.Fatalf("found only %d methods in api/zrpcpb", len(out))
	}
	return out
}

func TestEveryAPIMethodHasAPermission(t *testing.T) {
	for name := range apiMethods(t) {
		perm, ok := Methods[name]
		if !ok {
			t.Errorf("%s has no entry in acl.Methods: every RPC must say which permission it needs", name)
			continue
		}
		if !perm.Public && (perm.Resource == 0 || perm.Access == 0) {
			t.Errorf("%s: entry names no resource or access", name)
		}
		if perm.Resource.named() && perm.Name == nil {
			t.Errorf("%s: %s permissions need the resource's name from the request", name, perm.Resource)
		}
	}
}

// sample is one request of an RPC and the permission it needs.
type sample struct {
	req    proto.Message
	kind   Resource
	name   string
	access Access
	// resp is what the fake handler answers; for a filtered RPC it holds
	// one item of name and one of "other".
	resp     proto.Message
	filtered func(resp any) int // items left in a filtered response
}

var samples = map[string]sample{
	pb.Registry_Register_FullMethodName:   {req: &pb.RegisterRequest{Instance: &pb.Instance{Service: "order.rpc"}}, kind: Service, name: "order.rpc", access: Write},
	pb.Registry_Deregister_FullMethodName: {req: &pb.DeregisterRequest{Service: "order.rpc"}, kind: Service, name: "order.rpc", access: Write},
	pb.Registry_RenewTTL_FullMethodName:   {req: &pb.RenewTTLRequest{Service: "order.rpc"}, kind: Service, name: "order.rpc", access: Write},
	pb.Registry_Get_FullMethodName:        {req: &pb.GetRequest{Service: "order.rpc"}, kind: Service, name: "order.rpc", access: Read},
	pb.Registry_List_FullMethodName: {req: &pb.ListRequest{}, kind: Service, name: "order.rpc", access: Read,
		resp:     &pb.ListResponse{Services: []*pb.ServiceSummary{{Name: "order.rpc"}, {Name: "other"}}},
		filtered: func(r any) int { return len(r.(*pb.ListResponse).Services) }},
	pb.Registry_Watch_FullMethodName: {req: &pb.WatchRequest{Service: "order.rpc"}, kind: Service, name: "order.rpc", access: Read},
	// WatchMany's watches are checked by its handler (Allowed); what the
	// interceptor does is filter their events.
	pb.Registry_WatchMany_FullMethodName: {req: &pb.WatchManyRequest{Kind: &pb.WatchManyRequest_Create{Create: &pb.WatchCreate{WatchId: 1, Watch: &pb.WatchRequest{}}}},
		kind: Service, name: "order.rpc", access: Read,
		resp: &pb.WatchManyResponse{WatchId: 1, Response: &pb.WatchResponse{Events: []*pb.Event{
			{Instance: &pb.Instance{Service: "order.rpc"}}, {Instance: &pb.Instance{Service: "other"}}}}},
		filtered: func(r any) int { return len(r.(*pb.WatchManyResponse).GetResponse().GetEvents()) }},
	pb.Registry_Session_FullMethodName: {req: &pb.SessionRequest{Kind: &pb.SessionRequest_Register{Register: &pb.RegisterRequest{Instance: &pb.Instance{Service: "order.rpc"}}}},
		kind: Service, name: "order.rpc", access: Write},

	pb.Status_Status_FullMethodName:     {req: &pb.StatusRequest{}, kind: Operator, access: Read},
	pb.Status_Members_FullMethodName:    {req: &pb.MembersRequest{}, kind: Operator, access: Read},
	pb.Status_Peers_FullMethodName:      {req: &pb.PeersRequest{}, kind: Operator, access: Read},
	pb.Status_Version_FullMethodName:    {req: &pb.VersionRequest{}, kind: Operator, access: Read},
	pb.Status_Leave_FullMethodName:      {req: &pb.LeaveRequest{}, kind: Operator, access: Write},
	pb.Status_RemovePeer_FullMethodName: {req: &pb.RemovePeerRequest{Name: "n2"}, kind: Operator, access: Write},

	pb.Blobs_Put_FullMethodName: {req: &pb.BlobPutRequest{Msg: &pb.BlobPutRequest_Header{Header: &pb.BlobPutHeader{Name: "models/a"}}},
		kind: Blob, name: "models/a", access: Write},
	pb.Blobs_Get_FullMethodName:  {req: &pb.BlobGetRequest{Name: "models/a"}, kind: Blob, name: "models/a", access: Read},
	pb.Blobs_Stat_FullMethodName: {req: &pb.BlobStatRequest{Name: "models/a"}, kind: Blob, name: "models/a", access: Read},
	pb.Blobs_List_FullMethodName: {req: &pb.BlobListRequest{}, kind: Blob, name: "models/a", access: Read,
		resp:     &pb.BlobListResponse{Blobs: []*pb.BlobSummary{{Name: "models/a"}, {Name: "other"}}},
		filtered: func(r any) int { return len(r.(*pb.BlobListResponse).Blobs) }},
	pb.Blobs_Delete_FullMethodName:       {req: &pb.BlobDeleteRequest{Name: "models/a"}, kind: Blob, name: "models/a", access: Write},
	pb.Blobs_RepairStatus_FullMethodName: {req: &pb.RepairStatusRequest{}, kind: Operator, access: Read},
	pb.Blobs_BeginPut_FullMethodName: {req: &pb.BeginPutRequest{Header: &pb.BlobPutHeader{Name: "models/a"}},
		kind: Blob, name: "models/a", access: Write},
	pb.Blobs_WriteShards_FullMethodName: {req: &pb.WriteShardsRequest{Header: &pb.WriteShardsHeader{Name: "models/a"}},
		kind: Blob, name: "models/a", access: Write},
	pb.Blobs_RenewPut_FullMethodName:   {req: &pb.RenewPutRequest{Name: "models/a"}, kind: Blob, name: "models/a", access: Write},
	pb.Blobs_CommitPut_FullMethodName:  {req: &pb.CommitPutRequest{Blob: &pb.Blob{Name: "models/a"}}, kind: Blob, name: "models/a", access: Write},
	pb.Blobs_AbortPut_FullMethodName:   {req: &pb.AbortPutRequest{Name: "models/a"}, kind: Blob, name: "models/a", access: Write},
	pb.Blobs_Locate_FullMethodName:     {req: &pb.LocateRequest{Name: "models/a"}, kind: Blob, name: "models/a", access: Read},
	pb.Blobs_ReadShards_FullMethodName: {req: &pb.ReadShardsRequest{Name: "models/a"}, kind: Blob, name: "models/a", access: Read},

	pb.Snapshot_Save_FullMethodName:    {req: &pb.SnapshotSaveRequest{}, kind: Operator, access: Write},
	pb.Snapshot_Restore_FullMethodName: {req: &pb.SnapshotChunk{}, kind: ACL, access: Write},

	pb.Internal_Apply_FullMethodName:      {req: &pb.Command{}, kind: Agent, access: Write},
	pb.Shards_PutShard_FullMethodName:     {req: &pb.PutShardRequest{}, kind: Agent, access: Write},
	pb.Shards_SyncShards_FullMethodName:   {req: &pb.SyncShardsRequest{}, kind: Agent, access: Write},
	pb.Shards_GetShard_FullMethodName:     {req: &pb.GetShardRequest{}, kind: Agent, access: Write},
	pb.Shards_DeleteShards_FullMethodName: {req: &pb.DeleteShardsRequest{}, kind: Agent, access: Write},
	pb.Shards_ReportShards_FullMethodName: {req: &pb.ReportShardsRequest{}, kind: Agent, access: Write},
	pb.Shards_Referenced_FullMethodName:   {req: &pb.ReferencedRequest{}, kind: Agent, access: Write},
	pb.Shards_HeldShards_FullMethodName:   {req: &pb.HeldShardsRequest{}, kind: Agent, access: Write},
	pb.Internal_ApplyBatch_FullMethodName: {req: &pb.ApplyBatchRequest{}, kind: Agent, access: Write},
	pb.Internal_ReadIndex_FullMethodName:  {req: &pb.ReadIndexRequest{}, kind: Agent, access: Write},

	pb.Keyring_List_FullMethodName:        {req: &pb.KeyringListRequest{}, kind: Operator, access: Write},
	pb.Keyring_Install_FullMethodName:     {req: &pb.KeyringKeyRequest{}, kind: Operator, access: Write},
	pb.Keyring_Use_FullMethodName:         {req: &pb.KeyringKeyRequest{}, kind: Operator, access: Write},
	pb.Keyring_Remove_FullMethodName:      {req: &pb.KeyringKeyRequest{}, kind: Operator, access: Write},
	pb.KeyringPeer_List_FullMethodName:    {req: &pb.KeyringListRequest{}, kind: Agent, access: Write},
	pb.KeyringPeer_Install_FullMethodName: {req: &pb.KeyringKeyRequest{}, kind: Agent, access: Write},
	pb.KeyringPeer_Use_FullMethodName:     {req: &pb.KeyringKeyRequest{}, kind: Agent, access: Write},
	pb.KeyringPeer_Remove_FullMethodName:  {req: &pb.KeyringKeyRequest{}, kind: Agent, access: Write},

	pb.ACL_Bootstrap_FullMethodName:    {req: &pb.ACLBootstrapRequest{}},
	pb.ACL_PolicyCreate_FullMethodName: {req: &pb.ACLPolicyCreateRequest{}, kind: ACL, access: Write},
	pb.ACL_PolicyGet_FullMethodName:    {req: &pb.ACLPolicyGetRequest{}, kind: ACL, access: Read},
	pb.ACL_PolicyList_FullMethodName:   {req: &pb.ACLPolicyListRequest{}, kind: ACL, access: Read},
	pb.ACL_PolicyDelete_FullMethodName: {req: &pb.ACLPolicyDeleteRequest{}, kind: ACL, access: Write},
	pb.ACL_TokenCreate_FullMethodName:  {req: &pb.ACLTokenCreateRequest{}, kind: ACL, access: Write},
	pb.ACL_TokenRead_FullMethodName:    {req: &pb.ACLTokenReadRequest{}, kind: ACL, access: Read},
	pb.ACL_TokenList_FullMethodName:    {req: &pb.ACLTokenListRequest{}, kind: ACL, access: Read},
	pb.ACL_TokenDelete_FullMethodName:  {req: &pb.ACLTokenDeleteRequest{}, kind: ACL, access: Write},
}

// fakeResolver knows tokens by secret.
type fakeResolver map[[32]byte]Authorizer

func (r fakeResolver) Resolve(hash [32]byte) (Authorizer, string, error) {
	a, ok := r[hash]
	if !ok {
		return nil, "", ErrTokenNotFound
	}
	return a, fmt.Sprintf("%x", hash[:4]), nil
}

// ruleText grants access to the resource of kind called name.
func ruleText(kind Resource, name string, access Access) string {
	if kind.named() {
		return fmt.Sprintf("%s %q { %s }", kind, name, access)
	}
	return fmt.Sprintf("%s { %s }", kind, access)
}

func withToken(secret string) context.Context {
	ctx := context.Background()
	if secret == "" {
		return ctx
	}
	return metadata.NewIncomingContext(ctx, metadata.Pairs(AuthorizationKey, "Bearer "+secret))
}

// fakeStream delivers in to the handler and records what it sends.
type fakeStream struct {
	grpc.ServerStream
	ctx  context.Context
	in   []proto.Message
	sent []any
}

func (s *fakeStream) Context() context.Context { return s.ctx }
func (s *fakeStream) RecvMsg(m any) error {
	if len(s.in) == 0 {
		return io.EOF
	}
	proto.Merge(m.(proto.Message), s.in[0])
	s.in = s.in[1:]
	return nil
}
func (s *fakeStream) SendMsg(m any) error { s.sent = append(s.sent, m); return nil }

// call runs method's request through the interceptors to a fake handler
// and returns what the client would get and whether the handler ran.
func call(ic *Interceptors, md protoreflect.MethodDescriptor, method string, s sample, ctx context.Context) (resp any, ran bool, err error) {
	out := s.resp
	if out == nil {
		out = &pb.ResponseHeader{}
	}
	if !md.IsStreamingClient() && !md.IsStreamingServer() {
		resp, err = ic.Unary(ctx, s.req, &grpc.UnaryServerInfo{FullMethod: method}, func(context.Context, any) (any, error) {
			ran = true
			return out, nil
		})
		return resp, ran, err
	}
	fs := &fakeStream{ctx: ctx, in: []proto.Message{s.req}}
	err = ic.Stream(nil, fs, &grpc.StreamServerInfo{FullMethod: method}, func(_ any, ss grpc.ServerStream) error {
		ran = true
		for {
			m := md.Input()
			msg := dynamicNew(m)
			if err := ss.RecvMsg(msg); err != nil {
				if errors.Is(err, io.EOF) {
					break
				}
				return err
			}
		}
		return ss.SendMsg(out)
	})
	if len(fs.sent) > 0 {
		resp = fs.sent[0]
	}
	return resp, ran, err
}

func dynamicNew(d protoreflect.MessageDescriptor) proto.Message {
	mt, err := protoregistry.GlobalTypes.FindMessageByName(d.FullName())
	if err != nil {
		panic(err)
	}
	return mt.New().Interface()
}

func TestEveryRPCNeedsItsPermission(t *testing.T) {
	for method, md := range apiMethods(t) {
		s, ok := samples[method]
		if !ok {
			t.Errorf("%s: no sample request in this test", method)
			continue
		}
		t.Run(strings.TrimPrefix(method, "/zrpc.v1."), func(t *testing.T) {
			if Methods[method].Public {
				ic := NewInterceptors(InterceptorConfig{Resolver: fakeResolver{}})
				if _, ran, err := call(ic, md, method, s, withToken("")); err != nil || !ran {
					t.Fatalf("public RPC without a token: ran %v, %v", ran, err)
				}
				return
			}
			with, lacking := "secret-with", "secret-lacking"
			lackingPolicy := &Policy{Name: "lacking"}
			if s.access == Write {
				lackingPolicy.Rules = []Rule{{s.kind, s.name, Read}}
			}
			withPolicy := mustPolicy(t, "with", ruleText(s.kind, s.name, s.access))
			var refused []codes.Code
			ic := NewInterceptors(InterceptorConfig{
				Resolver:  fakeResolver{HashSecret(with): Compile(withPolicy), HashSecret(lacking): Compile(lackingPolicy)},
				OnRefused: func(_ string, c codes.Code) { refused = append(refused, c) },
			})

			_, ran, err := call(ic, md, method, s, withToken(""))
			if status.Code(err) != codes.Unauthenticated || ran {
				t.Fatalf("without a token: ran %v, %v; want Unauthenticated and no handler", ran, err)
			}

			resp, ran, err := call(ic, md, method, s, withToken(lacking))
			if s.filtered != nil {
				if err != nil || !ran || s.filtered(resp) != 0 {
					t.Fatalf("List without the permission: %v, ran %v, resp %v; want it filtered to nothing", err, ran, resp)
				}
			} else {
				want := Denied(s.kind, s.name, s.access).Error()
				if status.Code(err) != codes.PermissionDenied || status.Convert(err).Message() != want {
					t.Fatalf("token lacking %s: %v; want PermissionDenied %q", ruleText(s.kind, s.name, s.access), err, want)
				}
			}

			resp, ran, err = call(ic, md, method, s, withToken(with))
			if err != nil || !ran {
				t.Fatalf("token with %s: ran %v, %v", ruleText(s.kind, s.name, s.access), ran, err)
			}
			if s.filtered != nil && s.filtered(resp) != 1 {
				t.Fatalf("List with the permission: %v; want only %q", resp, s.name)
			}
			if len(refused) < 1 || refused[0] != codes.Unauthenticated {
				t.Fatalf("refusals counted: %v", refused)
			}
		})
	}
}

func TestAgentProofGrantsAgentPermissionsAndTheForwardedToken(t *testing.T) {
	ic := NewInterceptors(InterceptorConfig{
		Resolver:   fakeResolver{},
		AgentProof: func(context.Context, string) bool { return true },
	})
	md := apiMethods(t)
	for _, m := range []string{pb.Internal_Apply_FullMethodName, pb.Shards_PutShard_FullMethodName} {
		if _, _, err := call(ic, md[m], m, samples[m], withToken("")); err != nil {
			t.Errorf("%s with an agent's proof: %v", m, err)
		}
	}
	m := pb.Registry_Register_FullMethodName
	if _, _, err := call(ic, md[m], m, samples[m], withToken("")); status.Code(err) != codes.PermissionDenied {
		t.Errorf("Register with only an agent's proof: %v, want PermissionDenied", err)
	}
	// An agent forwarding a client's call passes the client's token on:
	// the call gets what the token grants, besides agent:write.
	ic.cfg.Resolver = fakeResolver{HashSecret("client"): Compile(mustPolicy(t, "p", `service "order." { write }`))}
	if _, _, err := call(ic, md[m], m, samples[m], withToken("client")); err != nil {
		t.Errorf("forwarded Register with the client's token: %v", err)
	}
	a := pb.Internal_Apply_FullMethodName
	if _, _, err := call(ic, md[a], a, samples[a], withToken("client")); err != nil {
		t.Errorf("Apply with an agent's proof and a client's token: %v", err)
	}
	if _, _, err := call(ic, md[a], a, samples[a], withToken("unknown")); err != nil {
		t.Errorf("Apply with an agent's proof and an unknown token: %v, want the agent's own permissions", err)
	}
}

func TestUnknownTokenAndUnlistedMethodAreRefused(t *testing.T) {
	ic := NewInterceptors(InterceptorConfig{Resolver: fakeResolver{}})
	h := func(context.Context, any) (any, error) { return nil, nil }
	_, err := ic.Unary(withToken("nobody"), &pb.StatusRequest{}, &grpc.UnaryServerInfo{FullMethod: pb.Status_Status_FullMethodName}, h)
	if status.Code(err) != codes.Unauthenticated || !strings.Contains(err.Error(), "token not found") {
		t.Errorf("unknown token: %v", err)
	}
	ctx := metadata.NewIncomingContext(context.Background(), metadata.Pairs(AuthorizationKey, "Basic abc"))
	_, err = ic.Unary(ctx, &pb.StatusRequest{}, &grpc.UnaryServerInfo{FullMethod: pb.Status_Status_FullMethodName}, h)
	if status.Code(err) != codes.Unauthenticated {
		t.Errorf("Basic scheme: %v", err)
	}
	_, err = ic.Unary(withToken("nobody"), &pb.StatusRequest{}, &grpc.UnaryServerInfo{FullMethod: "/x.Y/Z"}, h)
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "no ACL rule for method /x.Y/Z") {
		t.Errorf("unlisted method: %v", err)
	}
}

func TestSessionStreamRefusesARegistrationOfAnotherService(t *testing.T) {
	secret := "s"
	ic := NewInterceptors(InterceptorConfig{Resolver: fakeResolver{HashSecret(secret): Compile(mustPolicy(t, "p", `service "user." { write }`))}})
	reg := func(svc string) *pb.SessionRequest {
		return &pb.SessionRequest{Kind: &pb.SessionRequest_Register{Register: &pb.RegisterRequest{Instance: &pb.Instance{Service: svc}}}}
	}
	fs := &fakeStream{ctx: withToken(secret), in: []proto.Message{
		&pb.SessionRequest{Kind: &pb.SessionRequest_Open{Open: &pb.SessionOpen{}}},
		&pb.SessionRequest{Kind: &pb.SessionRequest_Keepalive{Keepalive: &pb.SessionKeepAlive{}}},
		reg("user.rpc"), reg("order.rpc"), reg("user.rpc"),
	}}
	var accepted []string
	err := ic.Stream(nil, fs, &grpc.StreamServerInfo{FullMethod: pb.Registry_Session_FullMethodName}, func(_ any, ss grpc.ServerStream) error {
		for {
			var m pb.SessionRequest
			if err := ss.RecvMsg(&m); err != nil {
				return nil // a handler that ends quietly on a receive error
			}
			if r := m.GetRegister(); r != nil {
				accepted = append(accepted, r.Instance.Service)
			}
		}
	})
	want := `permission denied: token lacks service:write on "order.rpc"`
	if status.Code(err) != codes.PermissionDenied || status.Convert(err).Message() != want {
		t.Fatalf("stream ended with %v, want PermissionDenied %q", err, want)
	}
	if strings.Join(accepted, ",") != "user.rpc" {
		t.Fatalf("handler saw registrations %v, want only user.rpc", accepted)
	}
}

func TestWatchOfEveryServiceIsFilteredToReadableServices(t *testing.T) {
	secret := "s"
	ic := NewInterceptors(InterceptorConfig{Resolver: fakeResolver{HashSecret(secret): Compile(mustPolicy(t, "p", `service "user." { read }`))}})
	ev := func(svc string) *pb.Event { return &pb.Event{Instance: &pb.Instance{Service: svc}} }
	sent := &pb.WatchResponse{Snapshot: true, More: true, Events: []*pb.Event{ev("user.rpc"), ev("order.rpc"), ev("user.admin")}}
	fs := &fakeStream{ctx: withToken(secret), in: []proto.Message{&pb.WatchRequest{}}}
	err := ic.Stream(nil, fs, &grpc.StreamServerInfo{FullMethod: pb.Registry_Watch_FullMethodName}, func(_ any, ss grpc.ServerStream) error {
		var req pb.WatchRequest
		if err := ss.RecvMsg(&req); err != nil {
			return err
		}
		return ss.SendMsg(sent)
	})
	if err != nil {
		t.Fatal(err)
	}
	got := fs.sent[0].(*pb.WatchResponse)
	if len(got.Events) != 2 || got.Events[0].Instance.Service != "user.rpc" || got.Events[1].Instance.Service != "user.admin" || !got.Snapshot || !got.More {
		t.Fatalf("sent %v, want the user.* events with snapshot and more kept", got)
	}
	if len(sent.Events) != 3 {
		t.Fatal("filtering changed the handler's message")
	}
}

// countingHandler counts the log records it is given.
type countingHandler struct {
	slog.Handler
	n *int
}

func (h countingHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h countingHandler) Handle(_ context.Context, r slog.Record) error {
	r.Attrs(func(a slog.Attr) bool {
		if strings.Contains(a.Value.String(), "secret") {
			panic("a secret was logged")
		}
		return true
	})
	*h.n++
	return nil
}

func TestRefusalsAreLoggedOncePerTokenPerMinute(t *testing.T) {
	now := time.Unix(1000, 0)
	var lines int
	ic := NewInterceptors(InterceptorConfig{
		Resolver: fakeResolver{HashSecret("secret-a"): Compile()},
		Now:      func() time.Time { return now },
		Logger:   slog.New(countingHandler{slog.DiscardHandler, &lines}),
	})
	status := func(secret string) {
		h := func(context.Context, any) (any, error) { return nil, nil }
		if _, err := ic.Unary(withToken(secret), &pb.StatusRequest{}, &grpc.UnaryServerInfo{FullMethod: pb.Status_Status_FullMethodName}, h); err == nil {
			t.Fatal("a token without operator:read was allowed")
		}
	}
	for range 3 {
		status("secret-a")
	}
	if lines != 1 {
		t.Fatalf("3 refusals of one token in a minute logged %d lines, want 1", lines)
	}
	status("secret-unknown")
	if lines != 2 {
		t.Fatalf("another token's refusal: %d lines, want 2", lines)
	}
	now = now.Add(time.Minute)
	status("secret-a")
	if lines != 3 {
		t.Fatalf("a refusal a minute later: %d lines, want 3", lines)
	}
}

// TestWatchFiltersKeepTheClusterID: a watch's responses name the cluster
// whose history their revisions are of, so that a client resumes with it;
// the filters that drop what a token may not read keep it.
func TestWatchFiltersKeepTheClusterID(t *testing.T) {
	a := Compile(mustPolicy(t, "reader", `service "user." { read }`))
	resp := &pb.WatchResponse{ClusterId: "0123456789abcdef0123456789abcdef", Snapshot: true, Events: []*pb.Event{
		{Instance: &pb.Instance{Service: "user.rpc"}}, {Instance: &pb.Instance{Service: "order.rpc"}}}}
	watch := Methods[pb.Registry_Watch_FullMethodName].Filter(a, resp).(*pb.WatchResponse)
	many := Methods[pb.Registry_WatchMany_FullMethodName].Filter(a, &pb.WatchManyResponse{WatchId: 1, Response: resp}).(*pb.WatchManyResponse)
	for name, got := range map[string]*pb.WatchResponse{"Watch": watch, "WatchMany": many.Response} {
		if got.ClusterId != resp.ClusterId || len(got.Events) != 1 {
			t.Errorf("%s's filter gave cluster id %q and %d events, want %q and the 1 readable", name, got.ClusterId, len(got.Events), resp.ClusterId)
		}
	}
}
