package grpcapi

import (
	"context"
	"fmt"

	"google.golang.org/protobuf/proto"

	"github.com/zrpcio/zrpc/acl"
	"github.com/zrpcio/zrpc/api/apierr"
	pb "github.com/zrpcio/zrpc/api/zrpcpb"
)

// ACLReplica is what the ACL service reads of the registry replica
// (raftstore's FSM). Its methods are called from handlers, concurrently.
type ACLReplica interface {
	Revision() uint64
	ACLBootstrapped() bool
	ACLPolicy(name string) *pb.ACLPolicy
	ACLPolicies() []*pb.ACLPolicy
	ACLToken(accessorID string) *pb.ACLToken
	ACLTokenByHash(hash []byte) *pb.ACLToken
	ACLTokens() []*pb.ACLToken
}

// ACLConfig is what the ACL service needs of its agent.
type ACLConfig struct {
	// Agent is this agent's name, for answers' headers.
	Agent   string
	Replica ACLReplica
	// Cluster proposes the ACL commands (through the leader) and checks
	// that the replica may answer reads.
	Cluster Cluster
}

// ACL serves the ACL API: bootstrap, policies and tokens. Secrets come
// with the request (clients make them, so that a create whose answer was
// lost can be sent again and answers the same token) or, from clients
// that send none, are made here; they are returned once and proposed only
// as their hashes. Which caller may call what is the acl interceptors'
// business, not this service's.
type ACL struct {
	pb.UnimplementedACLServer
	cfg ACLConfig
}

// NewACL returns the ACL service of an agent.
func NewACL(cfg ACLConfig) *ACL { return &ACL{cfg: cfg} }

func (s *ACL) header(rev uint64) *pb.ResponseHeader { return header(s.cfg.Agent, rev) }

// Bootstrap creates the management token, once per cluster. Sent again
// with the secret of the first, it answers the first's token.
func (s *ACL) Bootstrap(ctx context.Context, req *pb.ACLBootstrapRequest) (*pb.ACLBootstrapResponse, error) {
	tok, secret, err := requestToken("secret", req.Secret, acl.ManagementPolicyName)
	if err != nil {
		return nil, err
	}
	if s.cfg.Replica.ACLBootstrapped() && s.cfg.Replica.ACLTokenByHash(tok.SecretHash[:]) == nil {
		return nil, fmt.Errorf("%w: ACLs already bootstrapped", apierr.ErrFailedPrecondition)
	}
	t := tokenProto(tok, "bootstrap management token")
	rev, err := s.cfg.Cluster.Propose(ctx, &pb.Command{Kind: &pb.Command_AclBootstrap{AclBootstrap: &pb.ACLBootstrap{Token: t}}})
	if err != nil {
		return nil, err
	}
	return &pb.ACLBootstrapResponse{Header: s.header(rev), Token: s.stored(t), Secret: secret}, nil
}

// requestToken returns the token of a request's secret carrying policies,
// or of a new secret when the request has none (clients from before
// clients made secrets).
func requestToken(field, secret string, policies ...string) (acl.Token, string, error) {
	if secret == "" {
		return acl.NewToken(policies...)
	}
	if err := acl.ValidateSecret(field, secret); err != nil {
		return acl.Token{}, "", err
	}
	return acl.TokenFor(secret, policies...), secret, nil
}

// PolicyCreate stores a new policy once its name and rules are valid.
func (s *ACL) PolicyCreate(ctx context.Context, req *pb.ACLPolicyCreateRequest) (*pb.ACLPolicyCreateResponse, error) {
	p := req.GetPolicy()
	if p == nil {
		return nil, apierr.Invalid("policy", "is required")
	}
	p = &pb.ACLPolicy{Name: p.Name, Description: p.Description, Rules: p.Rules}
	if err := validatePolicy("policy", p); err != nil {
		return nil, err
	}
	rev, err := s.cfg.Cluster.Propose(ctx, &pb.Command{Kind: &pb.Command_AclPolicySet{AclPolicySet: &pb.ACLPolicySet{Policy: p}}})
	if err != nil {
		return nil, err
	}
	if stored := s.cfg.Replica.ACLPolicy(p.Name); stored != nil && stored.CreateRevision == rev {
		p = stored
	}
	return &pb.ACLPolicyCreateResponse{Header: s.header(rev), Policy: p}, nil
}

// PolicyGet returns one policy.
func (s *ACL) PolicyGet(ctx context.Context, req *pb.ACLPolicyGetRequest) (*pb.ACLPolicyGetResponse, error) {
	if err := acl.ValidatePolicyName("name", req.Name); err != nil {
		return nil, err
	}
	if err := s.cfg.Cluster.CheckRead(ctx, pb.Consistency_DEFAULT); err != nil {
		return nil, err
	}
	rev := s.cfg.Replica.Revision()
	p := s.cfg.Replica.ACLPolicy(req.Name)
	if p == nil {
		return nil, fmt.Errorf("%w: policy %q", apierr.ErrNotFound, req.Name)
	}
	return &pb.ACLPolicyGetResponse{Header: s.header(rev), Policy: p}, nil
}

// PolicyList returns every policy sorted by name.
func (s *ACL) PolicyList(ctx context.Context, _ *pb.ACLPolicyListRequest) (*pb.ACLPolicyListResponse, error) {
	if err := s.cfg.Cluster.CheckRead(ctx, pb.Consistency_DEFAULT); err != nil {
		return nil, err
	}
	rev := s.cfg.Replica.Revision()
	return &pb.ACLPolicyListResponse{Header: s.header(rev), Policies: s.cfg.Replica.ACLPolicies()}, nil
}

// PolicyDelete deletes a policy no token names.
func (s *ACL) PolicyDelete(ctx context.Context, req *pb.ACLPolicyDeleteRequest) (*pb.ACLPolicyDeleteResponse, error) {
	if err := acl.ValidatePolicyName("name", req.Name); err != nil {
		return nil, err
	}
	rev, err := s.cfg.Cluster.Propose(ctx, &pb.Command{Kind: &pb.Command_AclPolicyDelete{AclPolicyDelete: &pb.ACLPolicyDelete{Name: req.Name}}})
	if err != nil {
		return nil, err
	}
	return &pb.ACLPolicyDeleteResponse{Header: s.header(rev)}, nil
}

// TokenCreate makes a token carrying existing policies and returns its
// secret, the only time it is shown. Sent again with the same secret and
// policies, it answers the token the first made and makes no second.
func (s *ACL) TokenCreate(ctx context.Context, req *pb.ACLTokenCreateRequest) (*pb.ACLTokenCreateResponse, error) {
	if err := validateTokenPolicies("policies", req.Policies); err != nil {
		return nil, err
	}
	if err := acl.ValidateDescription("description", req.Description); err != nil {
		return nil, err
	}
	tok, secret, err := requestToken("secret", req.Secret, req.Policies...)
	if err != nil {
		return nil, err
	}
	t := tokenProto(tok, req.Description)
	rev, err := s.cfg.Cluster.Propose(ctx, &pb.Command{Kind: &pb.Command_AclTokenSet{AclTokenSet: &pb.ACLTokenSet{Token: t}}})
	if err != nil {
		return nil, err
	}
	return &pb.ACLTokenCreateResponse{Header: s.header(rev), Token: s.stored(t), Secret: secret}, nil
}

// TokenRead returns one token, without its secret's hash.
func (s *ACL) TokenRead(ctx context.Context, req *pb.ACLTokenReadRequest) (*pb.ACLTokenReadResponse, error) {
	if !acl.ValidAccessorID(req.AccessorId) {
		return nil, apierr.Invalid("accessor_id", "%q is not an accessor id (32 lowercase hex digits)", req.AccessorId)
	}
	if err := s.cfg.Cluster.CheckRead(ctx, pb.Consistency_DEFAULT); err != nil {
		return nil, err
	}
	rev := s.cfg.Replica.Revision()
	t := s.cfg.Replica.ACLToken(req.AccessorId)
	if t == nil {
		return nil, fmt.Errorf("%w: token %s", apierr.ErrNotFound, req.AccessorId)
	}
	return &pb.ACLTokenReadResponse{Header: s.header(rev), Token: withoutHash(t)}, nil
}

// TokenList returns every token sorted by accessor id, without their
// secrets' hashes.
func (s *ACL) TokenList(ctx context.Context, _ *pb.ACLTokenListRequest) (*pb.ACLTokenListResponse, error) {
	if err := s.cfg.Cluster.CheckRead(ctx, pb.Consistency_DEFAULT); err != nil {
		return nil, err
	}
	rev := s.cfg.Replica.Revision()
	stored := s.cfg.Replica.ACLTokens()
	out := make([]*pb.ACLToken, len(stored))
	for i, t := range stored {
		out[i] = withoutHash(t)
	}
	return &pb.ACLTokenListResponse{Header: s.header(rev), Tokens: out}, nil
}

// TokenDelete deletes a token: its secret stops working at once on every
// agent that has applied the delete.
func (s *ACL) TokenDelete(ctx context.Context, req *pb.ACLTokenDeleteRequest) (*pb.ACLTokenDeleteResponse, error) {
	if !acl.ValidAccessorID(req.AccessorId) {
		return nil, apierr.Invalid("accessor_id", "%q is not an accessor id (32 lowercase hex digits)", req.AccessorId)
	}
	rev, err := s.cfg.Cluster.Propose(ctx, &pb.Command{Kind: &pb.Command_AclTokenDelete{AclTokenDelete: &pb.ACLTokenDelete{AccessorId: req.AccessorId}}})
	if err != nil {
		return nil, err
	}
	return &pb.ACLTokenDeleteResponse{Header: s.header(rev)}, nil
}

// stored returns the replica's copy of a token just proposed (with its
// revision and time; the first's when the create was a repeat), without
// the hash; t when the replica has not applied it yet.
func (s *ACL) stored(t *pb.ACLToken) *pb.ACLToken {
	if st := s.cfg.Replica.ACLTokenByHash(t.SecretHash); st != nil {
		t = st
	}
	return withoutHash(t)
}

func tokenProto(t acl.Token, description string) *pb.ACLToken {
	return &pb.ACLToken{AccessorId: t.AccessorID, SecretHash: t.SecretHash[:], Description: description, Policies: t.Policies}
}

// withoutHash is a copy of t without its secret's hash, as every answer
// carries tokens.
func withoutHash(t *pb.ACLToken) *pb.ACLToken {
	t = proto.Clone(t).(*pb.ACLToken)
	t.SecretHash = nil
	return t
}

// validatePolicy checks a policy's name, description and rules; a rules
// error names its line and column.
func validatePolicy(field string, p *pb.ACLPolicy) error {
	if err := acl.ValidatePolicyName(field+".name", p.GetName()); err != nil {
		return err
	}
	if p.Name == acl.ManagementPolicyName {
		return apierr.Invalid(field+".name", "%q is the built-in management policy", p.Name)
	}
	if err := acl.ValidateDescription(field+".description", p.Description); err != nil {
		return err
	}
	if _, err := acl.ParseRules(p.Rules); err != nil {
		return apierr.Invalid(field+".rules", "%v", err)
	}
	return nil
}

// maxTokenPolicies bounds the policies one token names.
const maxTokenPolicies = 32

func validateTokenPolicies(field string, policies []string) error {
	if len(policies) == 0 {
		return apierr.Invalid(field, "is empty: a token needs at least one policy")
	}
	if len(policies) > maxTokenPolicies {
		return apierr.Invalid(field, "names %d policies, the limit is %d", len(policies), maxTokenPolicies)
	}
	seen := make(map[string]bool, len(policies))
	for _, p := range policies {
		if err := acl.ValidatePolicyName(field, p); err != nil {
			return err
		}
		if seen[p] {
			return apierr.Invalid(field, "names %q twice", p)
		}
		seen[p] = true
	}
	return nil
}

// validateForwardedACL checks an ACL command a peer forwarded as the ACL
// service checks what it proposes.
func validateForwardedACL(cmd *pb.Command) error {
	switch k := cmd.Kind.(type) {
	case *pb.Command_AclBootstrap:
		return validateForwardedToken("acl_bootstrap.token", k.AclBootstrap.GetToken())
	case *pb.Command_AclPolicySet:
		if k.AclPolicySet.GetPolicy() == nil {
			return apierr.Invalid("acl_policy_set.policy", "is required")
		}
		return validatePolicy("acl_policy_set.policy", k.AclPolicySet.Policy)
	case *pb.Command_AclPolicyDelete:
		return acl.ValidatePolicyName("acl_policy_delete.name", k.AclPolicyDelete.GetName())
	case *pb.Command_AclTokenSet:
		t := k.AclTokenSet.GetToken()
		if err := validateForwardedToken("acl_token_set.token", t); err != nil {
			return err
		}
		return validateTokenPolicies("acl_token_set.token.policies", t.Policies)
	case *pb.Command_AclTokenDelete:
		if !acl.ValidAccessorID(k.AclTokenDelete.GetAccessorId()) {
			return apierr.Invalid("acl_token_delete.accessor_id", "%q is not an accessor id", k.AclTokenDelete.GetAccessorId())
		}
		return nil
	}
	return apierr.Invalid("command", "%T is not an ACL command", cmd.Kind)
}

func validateForwardedToken(field string, t *pb.ACLToken) error {
	if t == nil {
		return apierr.Invalid(field, "is required")
	}
	if !acl.ValidAccessorID(t.AccessorId) {
		return apierr.Invalid(field+".accessor_id", "%q is not an accessor id", t.AccessorId)
	}
	if len(t.SecretHash) != 32 {
		return apierr.Invalid(field+".secret_hash", "is %d bytes, want 32", len(t.SecretHash))
	}
	return acl.ValidateDescription(field+".description", t.Description)
}
