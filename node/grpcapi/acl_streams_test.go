package grpcapi_test

import (
	"context"
	"crypto/sha256"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/zrpcio/zrpc/acl"
	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/internal/acltest"
	"github.com/zrpcio/zrpc/node/grpcapi"
	"github.com/zrpcio/zrpc/node/health"
	"github.com/zrpcio/zrpc/raftstore"
)

// noMetrics counts nothing.
type noMetrics struct{}

func (noMetrics) ObserveRPC(string, codes.Code, time.Time) {}
func (noMetrics) ObservePanic(string)                      {}
func (noMetrics) WatchStarted()                            {}
func (noMetrics) WatchEnded()                              {}
func (noMetrics) WatchTooSlow()                            {}
func (noMetrics) StreamRefused(string)                     {}

// leaderWriter is the health keeper's writer on a one-agent cluster's
// leader: proposals apply at once.
type leaderWriter struct{ *acltest.Cluster }

func (w leaderWriter) ApplyLocal(ctx context.Context, cmd *pb.Command) (uint64, error) {
	return w.Propose(ctx, cmd)
}

// narrowingResolver resolves tokens from the replica, except those the
// test narrowed, which get the narrower rules instead: the state machine
// changes no policy a token names, so this stands for what a snapshot
// restore does to a live token.
type narrowingResolver struct {
	acl.Resolver
	mu       sync.Mutex
	narrowed map[[sha256.Size]byte]acl.Authorizer
}

func (r *narrowingResolver) Resolve(hash [sha256.Size]byte) (acl.Authorizer, string, error) {
	a, accessor, err := r.Resolver.Resolve(hash)
	r.mu.Lock()
	defer r.mu.Unlock()
	if n, ok := r.narrowed[hash]; ok && err == nil {
		a = n
	}
	return a, accessor, err
}

// aclAgent is an agent's Registry (Session, Watch, WatchMany) and ACL
// service over a replica that applies writes at once, behind the ACL
// interceptors, with its management token bootstrapped.
type aclAgent struct {
	fsm      *raftstore.FSM
	resolver *narrowingResolver
	registry pb.RegistryClient
	acl      pb.ACLClient
	admin    context.Context // calls with the management token
}

// userToken is a token the test made, and the context of calls with it.
type userToken struct {
	ctx      context.Context
	secret   string
	accessor string
}

func startACLAgent(t *testing.T) *aclAgent {
	t.Helper()
	fsm := raftstore.NewFSM(16)
	cl := &acltest.Cluster{FSM: fsm}
	reg := grpcapi.NewRegistry(context.Background(), grpcapi.RegistryConfig{Agent: "a1", Replica: fsm, Cluster: cl,
		Health: health.New(health.Config{Agent: "a1", Writer: leaderWriter{cl}}), Metrics: noMetrics{}})
	r := &narrowingResolver{Resolver: acl.NewReplicaResolver(fsm), narrowed: map[[sha256.Size]byte]acl.Authorizer{}}
	srv := grpcapi.NewServer(grpcapi.ServerConfig{Metrics: noMetrics{}, Proofs: grpcapi.AgentProofs{Secret: func() []byte { return nil }},
		ACL: acl.NewInterceptors(acl.InterceptorConfig{Resolver: r})},
		grpcapi.Services{Registry: reg, ACL: grpcapi.NewACL(grpcapi.ACLConfig{Agent: "a1", Replica: fsm, Cluster: cl})})
	cc := serveAgentAPI(t, srv)
	a := &aclAgent{fsm: fsm, resolver: r, registry: pb.NewRegistryClient(cc), acl: pb.NewACLClient(cc)}
	boot, err := a.acl.Bootstrap(testContext(t), &pb.ACLBootstrapRequest{})
	if err != nil {
		t.Fatal(err)
	}
	a.admin = withSecret(testContext(t), boot.Secret)
	return a
}

// testContext ends with the test, or after 10 s.
func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func withSecret(ctx context.Context, secret string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, acl.AuthorizationKey, "Bearer "+secret)
}

// token makes a token with a policy of rules.
func (a *aclAgent) token(t *testing.T, rules string) userToken {
	t.Helper()
	name := "p" + grpcapi.NewSessionID()[:8]
	if _, err := a.acl.PolicyCreate(a.admin, &pb.ACLPolicyCreateRequest{Policy: &pb.ACLPolicy{Name: name, Rules: rules}}); err != nil {
		t.Fatal(err)
	}
	tok, err := a.acl.TokenCreate(a.admin, &pb.ACLTokenCreateRequest{Policies: []string{name}})
	if err != nil {
		t.Fatal(err)
	}
	return userToken{ctx: withSecret(testContext(t), tok.Secret), secret: tok.Secret, accessor: tok.Token.AccessorId}
}

func (a *aclAgent) deleteToken(t *testing.T, tok userToken) {
	t.Helper()
	if _, err := a.acl.TokenDelete(a.admin, &pb.ACLTokenDeleteRequest{AccessorId: tok.accessor}); err != nil {
		t.Fatal(err)
	}
}

// narrow gives tok the rights of rules alone from now on.
func (a *aclAgent) narrow(t *testing.T, tok userToken, rules string) {
	t.Helper()
	p, err := acl.ParsePolicy("narrower", rules)
	if err != nil {
		t.Fatal(err)
	}
	a.resolver.mu.Lock()
	defer a.resolver.mu.Unlock()
	a.resolver.narrowed[acl.HashSecret(tok.secret)] = acl.Compile(p)
}

// register registers service/id with the management token.
func (a *aclAgent) register(t *testing.T, service, id string) {
	t.Helper()
	if _, err := a.registry.Register(a.admin, &pb.RegisterRequest{Instance: &pb.Instance{Service: service, Id: id, Address: "127.0.0.1:1"}}); err != nil {
		t.Fatal(err)
	}
}

// wantRefused fails t unless err is a status of code whose message has
// words.
func wantRefused(t *testing.T, what string, err error, code codes.Code, words string) {
	t.Helper()
	if st := status.Convert(err); st.Code() != code || !strings.Contains(st.Message(), words) {
		t.Fatalf("%s: %v, want %v saying %q", what, err, code, words)
	}
}

// A Session stream whose token is deleted ends with Unauthenticated at
// its next message, whatever it is, and a registration it carries is not
// made: a deleted token's secret stops working on open streams too.
func TestSessionStreamEndsAtItsNextMessageOnceItsTokenIsDeleted(t *testing.T) {
	inst := func(id string) *pb.Instance { return &pb.Instance{Service: "user.rpc", Id: id, Address: "127.0.0.1:1"} }
	for _, c := range []struct {
		name string
		next *pb.SessionRequest
	}{
		{"register", &pb.SessionRequest{Seq: 3, Kind: &pb.SessionRequest_Register{Register: &pb.RegisterRequest{Instance: inst("i2")}}}},
		{"deregister", &pb.SessionRequest{Seq: 3, Kind: &pb.SessionRequest_Deregister{Deregister: &pb.DeregisterRequest{Service: "user.rpc", Id: "i1"}}}},
		{"keepalive", &pb.SessionRequest{Seq: 3, Kind: &pb.SessionRequest_Keepalive{Keepalive: &pb.SessionKeepAlive{}}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			agent := startACLAgent(t)
			user := agent.token(t, `service "user." { write }`)
			stream, err := agent.registry.Session(user.ctx)
			if err != nil {
				t.Fatal(err)
			}
			for _, req := range []*pb.SessionRequest{
				{Seq: 1, Kind: &pb.SessionRequest_Open{Open: &pb.SessionOpen{}}},
				{Seq: 2, Kind: &pb.SessionRequest_Register{Register: &pb.RegisterRequest{Instance: inst("i1")}}},
			} {
				if err := stream.Send(req); err != nil {
					t.Fatal(err)
				}
				if resp, err := stream.Recv(); err != nil || resp.Error != nil {
					t.Fatalf("request %d with a live token: %v, %v", req.Seq, err, resp.GetError())
				}
			}

			agent.deleteToken(t, user)
			if err := stream.Send(c.next); err != nil {
				t.Fatal(err)
			}
			resp, err := stream.Recv()
			wantRefused(t, "the session's next message after its token was deleted", err, codes.Unauthenticated, "token was deleted")
			if resp != nil || agent.fsm.Instance("user.rpc", "i2") != nil {
				t.Fatalf("the deleted token's session answered %v (user.rpc/i2 stored: %v)", resp, agent.fsm.Instance("user.rpc", "i2") != nil)
			}
		})
	}
}

// A Watch stream whose token is deleted ends with Unauthenticated
// instead of sending its next event, whether it watches one service or
// every service (filtered).
func TestWatchStreamEndsInsteadOfItsNextEventOnceItsTokenIsDeleted(t *testing.T) {
	for _, service := range []string{"user.rpc", ""} {
		t.Run("service="+service, func(t *testing.T) {
			agent := startACLAgent(t)
			user := agent.token(t, `service "user." { read }`)
			stream, err := agent.registry.Watch(user.ctx, &pb.WatchRequest{Service: service})
			if err != nil {
				t.Fatal(err)
			}
			for more := true; more; {
				resp, err := stream.Recv()
				if err != nil {
					t.Fatalf("snapshot with a live token: %v", err)
				}
				more = resp.More
			}

			agent.deleteToken(t, user)
			agent.register(t, "user.rpc", "i1")
			resp, err := stream.Recv()
			wantRefused(t, "the watch's next event after its token was deleted", err, codes.Unauthenticated, "token was deleted")
			if resp != nil {
				t.Fatalf("the deleted token's watch sent %v", resp)
			}
		})
	}
}

// watchMany opens a WatchMany stream with tok and a watch of each
// service (ids from 1), and reads their snapshots.
func (a *aclAgent) watchMany(t *testing.T, tok userToken, services ...string) pb.Registry_WatchManyClient {
	t.Helper()
	stream, err := a.registry.WatchMany(tok.ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i, svc := range services {
		id := uint64(i + 1)
		if err := stream.Send(&pb.WatchManyRequest{Kind: &pb.WatchManyRequest_Create{Create: &pb.WatchCreate{WatchId: id, Watch: &pb.WatchRequest{Service: svc}}}}); err != nil {
			t.Fatal(err)
		}
		for more := true; more; {
			resp, err := stream.Recv()
			if err != nil || resp.WatchId != id || resp.Ended != nil {
				t.Fatalf("watch %d of %s with a live token: %v, %v", id, svc, resp, err)
			}
			more = resp.Response.More
		}
	}
	return stream
}

// A WatchMany stream whose token is deleted opens no new watch and sends
// no further event: the create, or the next event, ends the stream with
// Unauthenticated.
func TestWatchManyStreamEndsOnceItsTokenIsDeleted(t *testing.T) {
	for _, next := range []string{"create", "event"} {
		t.Run(next, func(t *testing.T) {
			agent := startACLAgent(t)
			user := agent.token(t, `service "user." { read }`)
			stream := agent.watchMany(t, user, "user.rpc")

			agent.deleteToken(t, user)
			switch next {
			case "create":
				create := &pb.WatchCreate{WatchId: 2, Watch: &pb.WatchRequest{Service: "user.admin"}}
				if err := stream.Send(&pb.WatchManyRequest{Kind: &pb.WatchManyRequest_Create{Create: create}}); err != nil {
					t.Fatal(err)
				}
			case "event":
				agent.register(t, "user.rpc", "i1")
			}
			resp, err := stream.Recv()
			wantRefused(t, "the stream's next message after its token was deleted", err, codes.Unauthenticated, "token was deleted")
			if resp != nil {
				t.Fatalf("the deleted token's stream sent %v", resp)
			}
		})
	}
}

// A watch of a WatchMany stream whose token no longer reads its service
// ends, with PermissionDenied, at its next event, as its create would
// now be refused; the stream and its other watches go on.
func TestWatchManyEndsAWatchWhoseServiceItsTokenNoLongerReads(t *testing.T) {
	agent := startACLAgent(t)
	user := agent.token(t, `service "" { read }`)
	stream := agent.watchMany(t, user, "user.rpc", "order.rpc")

	agent.narrow(t, user, `service "user." { read }`)
	agent.register(t, "order.rpc", "o1")
	resp, err := stream.Recv()
	if err != nil || resp.WatchId != 2 || resp.Ended == nil || codes.Code(resp.Ended.Code) != codes.PermissionDenied ||
		!strings.Contains(resp.Ended.Message, `token lacks service:read on "order.rpc"`) {
		t.Fatalf("order.rpc's event after the token lost it: %v, %v; want watch 2 ended with PermissionDenied", resp, err)
	}
	agent.register(t, "user.rpc", "u1")
	resp, err = stream.Recv()
	if err != nil || resp.WatchId != 1 || len(resp.GetResponse().GetEvents()) != 1 {
		t.Fatalf("user.rpc's event, still readable: %v, %v", resp, err)
	}
}

// serveAgentAPI serves srv, an agent's API server, on a loopback port
// until the test ends and returns a connection to it.
func serveAgentAPI(t *testing.T, srv *grpc.Server) *grpc.ClientConn {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan struct{})
	go func() {
		defer close(served)
		srv.Serve(lis)
	}()
	t.Cleanup(func() {
		srv.Stop()
		<-served
	})
	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}
