package grpcapi

import (
	"context"
	"testing"

	"google.golang.org/grpc/metadata"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
)

// TestAgentProofNamesTheAgentCalled: a proof an agent sends to one peer
// proves nothing at another, nor for another method or secret; the
// unbound proof of older builds passes only while Legacy says so, and
// never beside a bound proof that fails.
func TestAgentProofNamesTheAgentCalled(t *testing.T) {
	secret := []byte("cluster secret")
	const self, stranger = "10.0.0.1:8400", "10.0.0.66:8400"
	method := pb.Internal_Apply_FullMethodName
	legacy := false
	proofs := AgentProofs{
		Secret: func() []byte { return secret },
		Self:   func() string { return self },
		Legacy: func() bool { return legacy },
	}
	call := func(kv ...string) context.Context {
		return metadata.NewIncomingContext(context.Background(), metadata.Pairs(kv...))
	}
	cases := []struct {
		name         string
		ctx          context.Context
		want, legacy bool
	}{
		{"the proof for this agent", call(AgentProofKey, AgentProof(secret, method, self)), true, false},
		{"a proof for another agent", call(AgentProofKey, AgentProof(secret, method, stranger)), false, false},
		{"a proof for another method", call(AgentProofKey, AgentProof(secret, pb.Shards_PutShard_FullMethodName, self)), false, false},
		{"a proof with another secret", call(AgentProofKey, AgentProof([]byte("another secret"), method, self)), false, false},
		{"two proofs", call(AgentProofKey, AgentProof(secret, method, self), AgentProofKey, AgentProof(secret, method, self)), false, false},
		{"no proof", call(), false, true},
		{"the unbound proof, no server of an older build", call(ClusterAuthKey, ClusterAuth(secret, method)), false, false},
		{"the unbound proof during an upgrade", call(ClusterAuthKey, ClusterAuth(secret, method)), true, true},
		{"a wrong unbound proof during an upgrade", call(ClusterAuthKey, ClusterAuth(secret, pb.Shards_PutShard_FullMethodName)), false, true},
		{"a failing bound proof beside a good unbound one", call(AgentProofKey, AgentProof(secret, method, stranger), ClusterAuthKey, ClusterAuth(secret, method)), false, true},
		{"both proofs during an upgrade", call(AgentProofKey, AgentProof(secret, method, self), ClusterAuthKey, ClusterAuth(secret, method)), true, true},
	}
	for _, tc := range cases {
		legacy = tc.legacy
		if got := proofs.Has(tc.ctx, method); got != tc.want {
			t.Errorf("%s: Has = %v, want %v", tc.name, got, tc.want)
		}
	}

	secret = nil // an agent still joining proves and accepts nothing
	if proofs.Has(call(AgentProofKey, AgentProof([]byte("cluster secret"), method, self)), method) {
		t.Error("Has without a secret accepted a proof")
	}
	if (AgentProofs{}).Has(call(ClusterAuthKey, ClusterAuth([]byte("x"), method)), method) {
		t.Error("Has of zero AgentProofs accepted a proof")
	}
}

// TestAgentProofAllocatesNothingOnceKept: a proof is computed once per
// method, callee and secret, then reused.
func TestAgentProofAllocatesNothingOnceKept(t *testing.T) {
	method := pb.Internal_Apply_FullMethodName
	for _, secret := range [][]byte{[]byte("first secret"), []byte("second secret"), []byte("first secret")} {
		a, b := AgentProof(secret, method, "10.0.0.1:8400"), AgentProof(secret, method, "10.0.0.2:8400")
		if a == b || a == ClusterAuth(secret, method) {
			t.Fatalf("proofs for two callees or the unbound one are equal: %s %s", a, b)
		}
		if allocs := testing.AllocsPerRun(100, func() { AgentProof(secret, method, "10.0.0.1:8400") }); allocs != 0 {
			t.Errorf("AgentProof of a kept proof allocates %.0f times per call, want 0", allocs)
		}
	}
}
