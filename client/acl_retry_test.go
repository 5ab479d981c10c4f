package client

import (
	"context"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/zrpcio/zrpc/api/apierr"
	"github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/internal/grpctest"
)

// aclState is the ACL tables two fake agents share, as replicas of one
// cluster do.
type aclState struct {
	mu       sync.Mutex
	policies map[string]*zrpcpb.ACLPolicy
	tokens   map[string]bool
}

// aclAgent serves aclState; with loseAnswers it applies each write and
// then answers Unavailable, as an agent whose connection broke after the
// write committed.
type aclAgent struct {
	zrpcpb.UnimplementedACLServer
	s           *aclState
	loseAnswers bool
}

func (a *aclAgent) answer() error {
	if a.loseAnswers {
		return status.Error(codes.Unavailable, "the connection broke after the write was applied")
	}
	return nil
}

func (a *aclAgent) PolicyCreate(_ context.Context, req *zrpcpb.ACLPolicyCreateRequest) (*zrpcpb.ACLPolicyCreateResponse, error) {
	a.s.mu.Lock()
	defer a.s.mu.Unlock()
	if a.s.policies[req.Policy.Name] != nil {
		return nil, status.Errorf(codes.AlreadyExists, "policy %s already exists", req.Policy.Name)
	}
	a.s.policies[req.Policy.Name] = req.Policy
	return &zrpcpb.ACLPolicyCreateResponse{Policy: req.Policy}, a.answer()
}

func (a *aclAgent) PolicyGet(_ context.Context, req *zrpcpb.ACLPolicyGetRequest) (*zrpcpb.ACLPolicyGetResponse, error) {
	a.s.mu.Lock()
	defer a.s.mu.Unlock()
	p := a.s.policies[req.Name]
	if p == nil {
		return nil, status.Errorf(codes.NotFound, "policy %s not found", req.Name)
	}
	return &zrpcpb.ACLPolicyGetResponse{Policy: p}, nil
}

func (a *aclAgent) PolicyDelete(_ context.Context, req *zrpcpb.ACLPolicyDeleteRequest) (*zrpcpb.ACLPolicyDeleteResponse, error) {
	a.s.mu.Lock()
	defer a.s.mu.Unlock()
	if a.s.policies[req.Name] == nil {
		return nil, status.Errorf(codes.NotFound, "policy %s not found", req.Name)
	}
	delete(a.s.policies, req.Name)
	return &zrpcpb.ACLPolicyDeleteResponse{}, a.answer()
}

func (a *aclAgent) TokenDelete(_ context.Context, req *zrpcpb.ACLTokenDeleteRequest) (*zrpcpb.ACLTokenDeleteResponse, error) {
	a.s.mu.Lock()
	defer a.s.mu.Unlock()
	if !a.s.tokens[req.AccessorId] {
		return nil, status.Errorf(codes.NotFound, "token %s not found", req.AccessorId)
	}
	delete(a.s.tokens, req.AccessorId)
	return &zrpcpb.ACLTokenDeleteResponse{}, a.answer()
}

// ACL writes carry no request id, and the client sends a write that failed
// Unavailable to the next agent: after the first agent applied it and its
// answer was lost, the next said AlreadyExists (a create) or NotFound (a
// delete), and the write the cluster had applied was reported failed. A
// create whose policy reads back as asked, and a delete of what is gone,
// succeed; a create of a name another policy holds still fails.
func TestACLWritesAppliedBeforeTheirAnswerWasLostSucceed(t *testing.T) {
	st := &aclState{policies: map[string]*zrpcpb.ACLPolicy{}, tokens: map[string]bool{"acc-1": true}}
	a1 := grpctest.Serve(t, func(s *grpc.Server) { zrpcpb.RegisterACLServer(s, &aclAgent{s: st, loseAnswers: true}) })
	a2 := grpctest.Serve(t, func(s *grpc.Server) { zrpcpb.RegisterACLServer(s, &aclAgent{s: st}) })
	c := newTestClient(t, a1, a2)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	rules := `service "" { read }`
	if p, err := c.ACLPolicyCreate(ctx, "ops", "operators", rules); err != nil || p.GetRules() != rules {
		t.Fatalf("create applied by the first agent, its answer lost = %v, %v; want the policy", p, err)
	}
	if err := c.ACLPolicyDelete(ctx, "ops"); err != nil {
		t.Fatalf("policy delete applied by the first agent, its answer lost: %v", err)
	}
	if err := c.ACLTokenDelete(ctx, "acc-1"); err != nil {
		t.Fatalf("token delete applied by the first agent, its answer lost: %v", err)
	}

	st.policies["taken"] = &zrpcpb.ACLPolicy{Name: "taken", Rules: `service "" { write }`}
	if _, err := c.ACLPolicyCreate(ctx, "taken", "", rules); !is(err, apierr.ErrAlreadyExists, codes.AlreadyExists) {
		t.Fatalf("create of a name another policy holds = %v, want AlreadyExists", err)
	}
	if err := c.ACLTokenDelete(ctx, "acc-never"); !is(err, apierr.ErrNotFound, codes.NotFound) {
		t.Fatalf("delete of a token that never was = %v, want NotFound", err)
	}
}
