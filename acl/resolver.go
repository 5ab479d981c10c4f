package acl

import (
	"container/list"
	"crypto/sha256"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"unsafe"

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
// hold the rules it was compiled from; so is a compile that failed (a
// stored policy this agent cannot parse): a caller repeating such a
// token costs a lookup, not a parse of its policies each time, and the
// token is compiled again once a policy of it changes. Not by revision:
// a snapshot restored from another cluster brings policies whose names and
// revisions may be those of other rules here. Both caches are bounded
// by an estimate of the memory they hold, the least recently used
// entries going first: a token naming 32 policies of 1,024 rules
// compiles to 32,768 rules. Calls that miss the cache while the token
// is being compiled from the same rules wait for that compile.
func NewReplicaResolver(store TokenStore) Resolver {
	return &replicaResolver{
		store:    store,
		parsed:   newLRU[policyKey, *Policy](maxParsedPolicies, maxParsedBytes),
		compiled: newLRU[[sha256.Size]byte, compiledToken](maxCompiledTokens, maxCompiledBytes),
		flights:  map[[sha256.Size]byte]*tokenCompile{},
	}
}

type replicaResolver struct {
	store TokenStore
	// mu guards the caches and flights. Every call and a stream's every
	// message use the caches (Interceptors.Stream), each for a lookup and
	// a move to the front of its cache's order.
	mu       sync.Mutex
	parsed   *lru[policyKey, *Policy]
	compiled *lru[[sha256.Size]byte, compiledToken]
	// flights holds the compile in progress of each token, which calls
	// that miss the cache for the same rules meanwhile wait for rather
	// than compile the token again. A compile's entry goes when it ends,
	// whether it failed or not.
	flights map[[sha256.Size]byte]*tokenCompile
	// compiles counts the compiles run.
	compiles atomic.Int64
}

// tokenCompile is one compile of a token's policies: its result is
// set before done is closed.
type tokenCompile struct {
	rules []string
	done  chan struct{}
	auth  Authorizer
	err   error
}

// compiledToken is a token's Authorizer, or the error its compile
// failed with, and the rules of each of its policies ("" for a missing
// one, which grants nothing as empty rules do) it was compiled from:
// what the Authorizer is made of.
type compiledToken struct {
	rules []string
	auth  Authorizer
	err   error
}

type policyKey struct {
	name, rules string
}

// The caches' bounds: entries, and the estimated bytes they hold
// (ruleBytes a rule, and the texts of the rules they keep).
const (
	maxParsedPolicies = 1024
	maxParsedBytes    = 16 << 20
	maxCompiledTokens = 4096
	maxCompiledBytes  = 64 << 20
)

// ruleBytes is the size of a Rule, and grantBytes of a compiled
// grant, their prefixes' bytes apart.
const (
	ruleBytes  = int(unsafe.Sizeof(Rule{}))
	grantBytes = int(unsafe.Sizeof(grant{}))
)

// rulesBytes estimates the memory of rules: the structs and their
// prefixes (which may share the bytes of the text they were parsed
// from; counted apart, the estimate is high rather than low).
func rulesBytes(rules []Rule) int {
	n := len(rules) * ruleBytes
	for _, r := range rules {
		n += len(r.Prefix)
	}
	return n
}

// bytes estimates the memory of a's grants (which may share the bytes
// of the rules' texts, counted apart: the estimate is high rather than
// low).
func (a *authorizer) bytes() int {
	n := 0
	for _, gs := range a.grants {
		n += len(gs) * grantBytes
		for _, g := range gs {
			n += len(g.prefix)
		}
	}
	return n
}

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
	r.mu.Lock()
	c, ok := r.compiled.get(hash)
	// The replica hands out the rules it stores, so an unchanged policy's
	// compare is of one pointer.
	if ok && slices.Equal(c.rules, rules) {
		r.mu.Unlock()
		return c.auth, tok.AccessorId, c.err
	}
	if f, ok := r.flights[hash]; ok && slices.Equal(f.rules, rules) {
		r.mu.Unlock()
		<-f.done
		return f.auth, tok.AccessorId, f.err
	}
	// A compile of other rules in progress is of rules the token no
	// longer has: calls from now on wait for this one.
	f := &tokenCompile{rules: rules, done: make(chan struct{})}
	r.flights[hash] = f
	r.mu.Unlock()
	r.runCompile(hash, f, tok.AccessorId, stored)
	return f.auth, tok.AccessorId, f.err
}

// runCompile runs compile f of the token whose hash and accessor id are given,
// caches its result, a failure too, and ends it, even should the compile
// panic.
func (r *replicaResolver) runCompile(hash [sha256.Size]byte, f *tokenCompile, accessor string, stored []*pb.ACLPolicy) {
	r.compiles.Add(1)
	f.err = fmt.Errorf("token %s: compiling its policies failed", accessor)
	defer func() {
		r.mu.Lock()
		size := 0
		switch a, ok := f.auth.(*authorizer); {
		case f.err != nil:
			size = len(f.err.Error()) // a parse error quotes the rules
		case ok:
			size = a.bytes()
		}
		for _, text := range f.rules {
			size += len(text)
		}
		r.compiled.put(hash, compiledToken{rules: f.rules, auth: f.auth, err: f.err}, size)
		if r.flights[hash] == f {
			delete(r.flights, hash)
		}
		r.mu.Unlock()
		close(f.done)
	}()
	f.auth, f.err = r.compile(stored)
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
	r.mu.Lock()
	p, ok := r.parsed.get(k)
	r.mu.Unlock()
	if ok {
		return p, nil
	}
	rules, err := parseStoredRules(stored.Rules)
	if err != nil {
		return nil, fmt.Errorf("stored policy %s: %w", stored.Name, err)
	}
	p = &Policy{Name: stored.Name, Rules: rules}
	r.mu.Lock()
	r.parsed.put(k, p, len(k.name)+len(k.rules)+rulesBytes(rules))
	r.mu.Unlock()
	return p, nil
}

// lru is a cache of at most maxEntries values whose sizes (as put
// estimates them) add up to at most maxBytes; past either, the least
// recently used go. A value larger than maxBytes is not kept. Its
// caller serializes its calls.
type lru[K comparable, V any] struct {
	maxEntries, maxBytes int
	bytes                int
	order                *list.List // of *lruEntry[K, V], the most recently used first
	byKey                map[K]*list.Element
}

type lruEntry[K comparable, V any] struct {
	key   K
	value V
	size  int
}

func newLRU[K comparable, V any](maxEntries, maxBytes int) *lru[K, V] {
	return &lru[K, V]{maxEntries: maxEntries, maxBytes: maxBytes, order: list.New(), byKey: map[K]*list.Element{}}
}

func (c *lru[K, V]) get(k K) (V, bool) {
	e, ok := c.byKey[k]
	if !ok {
		var zero V
		return zero, false
	}
	c.order.MoveToFront(e)
	return e.Value.(*lruEntry[K, V]).value, true
}

func (c *lru[K, V]) put(k K, v V, size int) {
	if e, ok := c.byKey[k]; ok {
		c.remove(e)
	}
	if size > c.maxBytes {
		return
	}
	c.byKey[k] = c.order.PushFront(&lruEntry[K, V]{key: k, value: v, size: size})
	c.bytes += size
	for c.order.Len() > c.maxEntries || c.bytes > c.maxBytes {
		c.remove(c.order.Back())
	}
}

func (c *lru[K, V]) remove(e *list.Element) {
	ent := c.order.Remove(e).(*lruEntry[K, V])
	delete(c.byKey, ent.key)
	c.bytes -= ent.size
}
