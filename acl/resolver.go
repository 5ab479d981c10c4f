package acl

import (
	"crypto/sha256"
	"fmt"
	"sync"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
)

// TokenStore is what a replica resolver reads of the registry replica
// (raftstore's FSM). Its methods are called concurrently.
type TokenStore interface {
	// ACLTokenByHash returns the token whose secret has SHA-256 hash, or
	// nil.
	ACLTokenByHash(hash []byte) *pb.ACLToken
	// ACLPolicy returns the policy called name, or nil.
	ACLPolicy(name string) *pb.ACLPolicy
}

// NewReplicaResolver returns a Resolver that looks tokens up in the
// replica store. Parsed policies are cached by name and revision.
func NewReplicaResolver(store TokenStore) Resolver {
	return &replicaResolver{store: store, parsed: map[policyKey]*Policy{}}
}

type replicaResolver struct {
	store  TokenStore
	mu     sync.Mutex
	parsed map[policyKey]*Policy
}

type policyKey struct {
	name     string
	revision uint64
}

// maxParsedPolicies bounds the cache; past it, it starts over.
const maxParsedPolicies = 1024

func (r *replicaResolver) Resolve(hash [sha256.Size]byte) (Authorizer, string, error) {
	tok := r.store.ACLTokenByHash(hash[:])
	if tok == nil {
		return nil, "", ErrTokenNotFound
	}
	policies := make([]*Policy, 0, len(tok.Policies))
	for _, name := range tok.Policies {
		if name == ManagementPolicyName {
			return Management(), tok.AccessorId, nil
		}
		stored := r.store.ACLPolicy(name)
		if stored == nil {
			// The state machine refuses to delete a policy a token names;
			// a missing one grants nothing.
			continue
		}
		p, err := r.policy(stored)
		if err != nil {
			return nil, tok.AccessorId, err
		}
		policies = append(policies, p)
	}
	return Compile(policies...), tok.AccessorId, nil
}

func (r *replicaResolver) policy(stored *pb.ACLPolicy) (*Policy, error) {
	k := policyKey{stored.Name, stored.ModifyRevision}
	r.mu.Lock()
	p, ok := r.parsed[k]
	r.mu.Unlock()
	if ok {
		return p, nil
	}
	p, err := ParsePolicy(stored.Name, stored.Rules)
	if err != nil {
		return nil, fmt.Errorf("stored policy %s: %w", stored.Name, err)
	}
	r.mu.Lock()
	if len(r.parsed) >= maxParsedPolicies {
		clear(r.parsed)
	}
	r.parsed[k] = p
	r.mu.Unlock()
	return p, nil
}
