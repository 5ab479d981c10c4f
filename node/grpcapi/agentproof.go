package grpcapi

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"sync"

	"google.golang.org/grpc/metadata"
)

// An agent proves to a peer that a call comes from an agent of the same
// cluster with AgentProofKey: the HMAC-SHA256, keyed with the cluster's
// secret (raftstore ClusterInit), of the call's full method name and the
// gRPC address the caller dialled. The agent called checks the proof
// against its own advertised address, so a proof collected by whoever
// receives a call (a stranger that joined gossip and advertised an
// address of its own) is worth nothing at any other agent. (Not the
// call's :authority: with TLS it is the agents' certificate name.)
//
// Builds before the bound proof sent ClusterAuthKey, the HMAC of the
// method name alone, the same at every agent. It is accepted, and sent
// beside the bound proof, only while a Raft server still runs such a
// build (AgentProofs.Legacy): a rolling upgrade keeps forwarding and
// shard traffic working both ways, and once every server proves calls
// to the callee the unbound proof opens nothing.

// AgentProofKey is the metadata key of an agent's proof bound to the
// agent it calls.
const AgentProofKey = "x-zrpc-agent-proof"

// ClusterAuthKey is the metadata key of the unbound proof of older
// builds.
const ClusterAuthKey = "x-zrpc-cluster-auth"

// agentProofLabel separates the bound proof's MAC input from the unbound
// one's (a method name never starts with it).
const agentProofLabel = "zrpc agent proof 2\x00"

// AgentProof is the proof an agent sends with a call of fullMethod to the
// agent at callee, the gRPC address it dialled. Computed once
// per method and callee for the agent's one secret, then kept.
func AgentProof(secret []byte, fullMethod, callee string) string {
	return proofs.get(secret, proofKey{fullMethod, callee}, func(mac []byte) []byte {
		m := hmac.New(sha256.New, secret)
		m.Write([]byte(agentProofLabel))
		m.Write([]byte(fullMethod))
		m.Write([]byte{0})
		m.Write([]byte(callee))
		return m.Sum(mac)
	})
}

// ClusterAuth is the unbound proof of a call of fullMethod, as builds
// before AgentProof send it.
func ClusterAuth(secret []byte, fullMethod string) string {
	return proofs.get(secret, proofKey{method: fullMethod}, func(mac []byte) []byte {
		m := hmac.New(sha256.New, secret)
		m.Write([]byte(fullMethod))
		return m.Sum(mac)
	})
}

// proofKey names a kept proof: a method and, for a bound proof, the
// callee's address.
type proofKey struct{ method, callee string }

// proofCache keeps the proofs of the last secret it was given (an agent
// has one; a test process running several clusters just computes more
// often), at most maxKeptProofs of them: a few dozen methods times the
// peers an agent calls.
type proofCache struct {
	mu     sync.RWMutex
	secret string
	kept   map[proofKey]string
}

var proofs proofCache

const maxKeptProofs = 4096

func (c *proofCache) get(secret []byte, k proofKey, mac func([]byte) []byte) string {
	c.mu.RLock()
	proof, ok := c.kept[k]
	ok = ok && c.secret == string(secret)
	c.mu.RUnlock()
	if ok {
		return proof
	}
	proof = hex.EncodeToString(mac(make([]byte, 0, sha256.Size)))
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.secret != string(secret) || c.kept == nil {
		c.secret, c.kept = string(secret), make(map[proofKey]string)
	}
	if len(c.kept) < maxKeptProofs {
		c.kept[k] = proof
	}
	return proof
}

// AgentProofs is what checking a call's agent proof needs of the agent.
type AgentProofs struct {
	// Secret returns the cluster's secret, or nil while this agent has
	// not applied it.
	Secret func() []byte
	// Self returns the agent's gRPC address as it advertises it, which
	// its peers dial: the callee a bound proof must name.
	Self func() string
	// Legacy reports whether the unbound proof is still accepted: while a
	// Raft server runs a build that sends only that one. Nil: never.
	Legacy func() bool
}

// Has reports whether a call of fullMethod carries this cluster's proof
// that its caller is an agent: the proof bound to this agent when the
// call has one, else, while Legacy says so, the unbound one; compared in
// constant time, and never without a secret. With ACLs on, such a call
// has the permissions of acl.AgentAuthorizer.
func (p AgentProofs) Has(ctx context.Context, fullMethod string) bool {
	if p.Secret == nil {
		return false
	}
	secret := p.Secret()
	if secret == nil {
		return false
	}
	if got := metadata.ValueFromIncomingContext(ctx, AgentProofKey); len(got) > 0 {
		self := ""
		if p.Self != nil {
			self = p.Self()
		}
		return len(got) == 1 && self != "" && hmac.Equal([]byte(got[0]), []byte(AgentProof(secret, fullMethod, self)))
	}
	if p.Legacy == nil || !p.Legacy() {
		return false
	}
	got := metadata.ValueFromIncomingContext(ctx, ClusterAuthKey)
	return len(got) == 1 && hmac.Equal([]byte(got[0]), []byte(ClusterAuth(secret, fullMethod)))
}
