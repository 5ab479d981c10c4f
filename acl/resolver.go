package acl

import (
	"crypto/sha256"
	"fmt"
	"slices"
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
// replica store. Parsed policies are cached by name and rules, and a
// token's compiled Authorizer by its hash for as long as its policies
// hold the rules it was compiled from. Not by revision: a snapshot
// restored from another cluster brings policies whose names and
// revisions may be those of other rules here.
func NewReplicaResolver(store TokenStore) Resolver {
	return &replicaResolver{store: store, parsed: map[policyKey]*Policy{}, compiled: map[[sha256.Size]byte]compiledToken{}}
}

type replicaResolver struct {
	store TokenStore
	// mu guards the caches; a stream's every message reads them
	// (Interceptors.Stream), so reads share it.
	mu       sync.RWMutex
	parsed   map[policyKey]*Policy
	compiled map[[sha256.Size]byte]compiledToken
}

// compiledToken is a token's Authorizer and the rules of each of its
// policies ("" for a missing one, which grants nothing as empty rules
// do) it was compiled from: what the Authorizer is made of.
type compiledToken struct {
	rules []string
	auth  Authorizer
}

type policyKey struct {
	name, rules string
}

// maxParsedPolicies and maxCompiledTokens bound the caches; past them,
// a cache starts over.
const (
	maxParsedPolicies = 1024
	maxCompiledTokens = 4096
)

func (r *replicaResolver) Resolve(hash [sha256.Size]byte) (Authorizer, string, error) {
	tok := r.store.ACLTokenByHash(hash[:])
	if tok == nil {
		return nil, "", ErrTokenNotFound
	}
	stored := make([]*pb.ACLPolicy, len(tok.Policies))
	rules := make([]string, len(tok.Policies))
	for i, name := range tok.Policies {
		if name == ManagementPolicyName {
			return Management(), tok.AccessorId, nil
		}
		if stored[i] = r.store.ACLPolicy(name); stored[i] != nil {
			rules[i] = stored[i].Rules
		}
	}
	r.mu.RLock()
	c, ok := r.compiled[hash]
	r.mu.RUnlock()
	// The replica hands out the rules it stores, so an unchanged policy's
	// compare is of one pointer.
	if ok && slices.Equal(c.rules, rules) {
		return c.auth, tok.AccessorId, nil
	}
	auth, err := r.compile(stored)
	if err != nil {
		return nil, tok.AccessorId, err
	}
	r.mu.Lock()
	if len(r.compiled) >= maxCompiledTokens {
		clear(r.compiled)
	}
	r.compiled[hash] = compiledToken{rules: rules, auth: auth}
	r.mu.Unlock()
	return auth, tok.AccessorId, nil
}

// compile merges the token's stored policies (nil ones grant nothing).
func (r *replicaResolver) compile(stored []*pb.ACLPolicy) (Authorizer, error) {
	policies := make([]*Policy, 0, len(stored))
	for _, sp := range stored {
		if sp == nil {
			// The state machine refuses to delete a policy a token names;
			// a missing one grants nothing.
			continue
		}
		p, err := r.policy(sp)
		if err != nil {
			return nil, err
		}
		policies = append(policies, p)
	}
	return Compile(policies...), nil
}

func (r *replicaResolver) policy(stored *pb.ACLPolicy) (*Policy, error) {
	k := policyKey{stored.Name, stored.Rules}
	r.mu.RLock()
	p, ok := r.parsed[k]
	r.mu.RUnlock()
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
