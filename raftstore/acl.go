package raftstore

import (
	"crypto/sha256"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"

	"google.golang.org/protobuf/proto"

	"github.com/zrpcio/zrpc/api/apierr"
	pb "github.com/zrpcio/zrpc/api/zrpcpb"
)

// ACL state: whether the cluster's ACLs were bootstrapped, its policies
// by name and its tokens by accessor id and by the SHA-256 of their
// secret (the only form of a secret the registry holds). Policies' rules
// are checked by the API before they are proposed (package acl); the
// state machine checks only what keeps the state consistent: names and
// hashes present and unique, a token's policies existing, one bootstrap.
//
// A bootstrap or token create repeated with the secret of a stored token
// and its policies is the same write again and changes nothing (the
// client chose the secret and retried after a lost answer); with other
// policies, or a bootstrap with another secret, it is refused.
//
// A policy still named by a token is not deleted: the delete is refused
// with FailedPrecondition naming the tokens, so that a token never
// silently loses (or, after a policy of the same name is created again,
// gains) rights.

// ManagementPolicy names the built-in policy that grants everything
// (acl.ManagementPolicyName); no stored policy takes its name.
const ManagementPolicy = "management"

// ErrFailedPrecondition is apierr's.
var ErrFailedPrecondition = apierr.ErrFailedPrecondition

// aclState has its own lock so that the per-call token lookup of every
// API request does not contend with the registry's lock. Writers hold
// FSM.mu too.
type aclState struct {
	mu           sync.RWMutex
	bootstrapped bool
	policies     map[string]*pb.ACLPolicy
	tokens       map[string]*pb.ACLToken // by accessor id
	byHash       map[string]*pb.ACLToken // by string(secret_hash)
	// changed is closed, and replaced, when the state changes
	// (FSM.ACLChanged).
	changed chan struct{}
}

func (a *aclState) reset() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.bootstrapped = false
	a.policies = map[string]*pb.ACLPolicy{}
	a.tokens = map[string]*pb.ACLToken{}
	a.byHash = map[string]*pb.ACLToken{}
	a.signal()
}

// signal wakes those waiting for a change; the caller holds a.mu.
func (a *aclState) signal() {
	if a.changed != nil {
		close(a.changed)
	}
	a.changed = make(chan struct{})
}

// ACLChanged returns a channel closed at the next change of the ACL
// state: a policy or token created or deleted, a bootstrap, a snapshot
// restored. A stream authorized by a token waits on it to learn that its
// token was deleted while it sends nothing.
func (f *FSM) ACLChanged() <-chan struct{} {
	f.acl.mu.RLock()
	defer f.acl.mu.RUnlock()
	return f.acl.changed
}

// putToken stores t; the caller holds a.mu.
func (a *aclState) putToken(t *pb.ACLToken) {
	a.tokens[t.AccessorId] = t
	a.byHash[string(t.SecretHash)] = t
}

// checkToken validates a token from a log entry or a snapshot.
func checkToken(field string, t *pb.ACLToken) error {
	if t == nil {
		return apierr.Invalid(field, "is required")
	}
	if t.AccessorId == "" {
		return apierr.Invalid(field+".accessor_id", "is required")
	}
	if len(t.SecretHash) != sha256.Size {
		return apierr.Invalid(field+".secret_hash", "is %d bytes, want %d", len(t.SecretHash), sha256.Size)
	}
	return nil
}

// applyACL applies the ACL commands; the caller holds f.mu.
func (f *FSM) applyACL(cmd *pb.Command, rev uint64) (err error) {
	a := &f.acl
	a.mu.Lock()
	defer a.mu.Unlock()
	defer func() {
		if err == nil {
			a.signal()
		}
	}()
	switch k := cmd.Kind.(type) {
	case *pb.Command_AclBootstrap:
		t := k.AclBootstrap.GetToken()
		if a.bootstrapped {
			if t != nil && a.repeated(t) {
				return nil
			}
			return fmt.Errorf("%w: ACLs already bootstrapped", ErrFailedPrecondition)
		}
		if err := checkToken("acl_bootstrap.token", t); err != nil {
			return err
		}
		if len(t.Policies) != 1 || t.Policies[0] != ManagementPolicy {
			return apierr.Invalid("acl_bootstrap.token.policies", "must be [%s], got %v", ManagementPolicy, t.Policies)
		}
		if err := a.newToken(t); err != nil {
			return err
		}
		a.bootstrapped = true
		a.putToken(stamped(t, cmd.Time, rev))
		return nil
	case *pb.Command_AclPolicySet:
		p := k.AclPolicySet.GetPolicy()
		if p.GetName() == "" {
			return apierr.Invalid("acl_policy_set.policy.name", "is required")
		}
		if p.Name == ManagementPolicy || a.policies[p.Name] != nil {
			return fmt.Errorf("%w: policy %s", ErrAlreadyExists, p.Name)
		}
		p = proto.Clone(p).(*pb.ACLPolicy)
		p.CreateRevision, p.ModifyRevision = rev, rev
		a.policies[p.Name] = p
		return nil
	case *pb.Command_AclPolicyDelete:
		name := k.AclPolicyDelete.GetName()
		if a.policies[name] == nil {
			return fmt.Errorf("%w: policy %q", ErrNotFound, name)
		}
		if users := a.tokensNaming(name); len(users) > 0 {
			return fmt.Errorf("%w: policy %s is named by %d token(s) (%s); delete them first",
				ErrFailedPrecondition, name, len(users), strings.Join(users, ", "))
		}
		delete(a.policies, name)
		return nil
	case *pb.Command_AclTokenSet:
		t := k.AclTokenSet.GetToken()
		if err := checkToken("acl_token_set.token", t); err != nil {
			return err
		}
		if a.repeated(t) {
			return nil
		}
		for _, p := range t.Policies {
			if p != ManagementPolicy && a.policies[p] == nil {
				return fmt.Errorf("%w: acl_token_set.token.policies: policy %q", ErrNotFound, p)
			}
		}
		if err := a.newToken(t); err != nil {
			return err
		}
		a.putToken(stamped(t, cmd.Time, rev))
		return nil
	case *pb.Command_AclTokenDelete:
		id := k.AclTokenDelete.GetAccessorId()
		t := a.tokens[id]
		if t == nil {
			return fmt.Errorf("%w: token %q", ErrNotFound, id)
		}
		delete(a.tokens, id)
		delete(a.byHash, string(t.SecretHash))
		return nil
	}
	return fmt.Errorf("%w: not an ACL command: %T", ErrInvalidArgument, cmd.Kind)
}

// repeated reports whether t is a create already applied: a token with
// its secret and policies is stored (clients choose secrets, and send a
// create again when its answer was lost). The caller holds a.mu.
func (a *aclState) repeated(t *pb.ACLToken) bool {
	stored := a.byHash[string(t.SecretHash)]
	return stored != nil && slices.Equal(stored.Policies, t.Policies)
}

// newToken refuses a token whose accessor id or secret is taken.
func (a *aclState) newToken(t *pb.ACLToken) error {
	if a.tokens[t.AccessorId] != nil {
		return fmt.Errorf("%w: token %s", ErrAlreadyExists, t.AccessorId)
	}
	if a.byHash[string(t.SecretHash)] != nil {
		return fmt.Errorf("%w: a token with this secret", ErrAlreadyExists)
	}
	return nil
}

// stamped is a copy of t created at rev, on the leader's clock now.
func stamped(t *pb.ACLToken, now int64, rev uint64) *pb.ACLToken {
	t = proto.Clone(t).(*pb.ACLToken)
	t.CreateRevision, t.Created = rev, now
	return t
}

// tokensNaming returns the accessor ids of the tokens that name policy,
// sorted.
func (a *aclState) tokensNaming(policy string) []string {
	var out []string
	for id, t := range a.tokens {
		for _, p := range t.Policies {
			if p == policy {
				out = append(out, id)
				break
			}
		}
	}
	sort.Strings(out)
	return out
}

// ACLBootstrapped reports whether the cluster's ACLs were bootstrapped.
func (f *FSM) ACLBootstrapped() bool {
	f.acl.mu.RLock()
	defer f.acl.mu.RUnlock()
	return f.acl.bootstrapped
}

// ACLPolicy returns the policy called name, or nil.
func (f *FSM) ACLPolicy(name string) *pb.ACLPolicy {
	f.acl.mu.RLock()
	defer f.acl.mu.RUnlock()
	return f.acl.policies[name]
}

// ACLPolicies returns every policy sorted by name.
func (f *FSM) ACLPolicies() []*pb.ACLPolicy {
	f.acl.mu.RLock()
	defer f.acl.mu.RUnlock()
	out := make([]*pb.ACLPolicy, 0, len(f.acl.policies))
	for _, p := range f.acl.policies {
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// ACLToken returns the token with accessor id, or nil. Callers must not
// serve its secret_hash.
func (f *FSM) ACLToken(accessorID string) *pb.ACLToken {
	f.acl.mu.RLock()
	defer f.acl.mu.RUnlock()
	return f.acl.tokens[accessorID]
}

// ACLTokens returns every token sorted by accessor id.
func (f *FSM) ACLTokens() []*pb.ACLToken {
	f.acl.mu.RLock()
	defer f.acl.mu.RUnlock()
	return f.acl.sortedTokens()
}

func (a *aclState) sortedTokens() []*pb.ACLToken {
	out := make([]*pb.ACLToken, 0, len(a.tokens))
	for _, t := range a.tokens {
		out = append(out, t)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].AccessorId < out[j].AccessorId })
	return out
}

// ACLTokenByHash returns the token whose secret has SHA-256 hash, or nil.
func (f *FSM) ACLTokenByHash(hash []byte) *pb.ACLToken {
	f.acl.mu.RLock()
	defer f.acl.mu.RUnlock()
	return f.acl.byHash[string(hash)]
}

// aclSnapshot copies the ACL state for a snapshot (stored values are
// immutable).
func (a *aclState) snapshot() (bool, []*pb.ACLPolicy, []*pb.ACLToken) {
	a.mu.RLock()
	defer a.mu.RUnlock()
	policies := make([]*pb.ACLPolicy, 0, len(a.policies))
	for _, p := range a.policies {
		policies = append(policies, p)
	}
	sort.Slice(policies, func(i, j int) bool { return policies[i].Name < policies[j].Name })
	return a.bootstrapped, policies, a.sortedTokens()
}

// adopt replaces the ACL state with loaded's, a state no one else holds
// (a snapshot loaded apart, FSM.RestoreWithin).
func (a *aclState) adopt(loaded *aclState) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.bootstrapped, a.policies, a.tokens, a.byHash = loaded.bootstrapped, loaded.policies, loaded.tokens, loaded.byHash
	a.signal()
}
