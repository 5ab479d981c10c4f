package acl

import (
	"errors"
	"testing"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
)

type fakeStore struct {
	tokens   map[string]*pb.ACLToken
	policies map[string]*pb.ACLPolicy
}

func (s fakeStore) ACLTokenByHash(h []byte) *pb.ACLToken { return s.tokens[string(h)] }
func (s fakeStore) ACLPolicy(name string) *pb.ACLPolicy  { return s.policies[name] }

func TestReplicaResolverAuthorizesByTheTokensPolicies(t *testing.T) {
	user, mgmt := HashSecret("u"), HashSecret("m")
	store := fakeStore{
		tokens: map[string]*pb.ACLToken{
			string(user[:]): {AccessorId: "a1", Policies: []string{"svc-user", "gone"}},
			string(mgmt[:]): {AccessorId: "a2", Policies: []string{ManagementPolicyName}},
		},
		policies: map[string]*pb.ACLPolicy{"svc-user": {Name: "svc-user", Rules: `service "user." { write }`, ModifyRevision: 3}},
	}
	r := NewReplicaResolver(store)
	a, id, err := r.Resolve(user)
	if err != nil || id != "a1" {
		t.Fatalf("Resolve(user) = %q, %v", id, err)
	}
	if a.Allow(Service, "user.rpc", Write) != nil || a.Allow(Service, "order.rpc", Write) == nil {
		t.Fatal("user token: want user.* writable, order.rpc not")
	}
	a, _, _ = r.Resolve(mgmt)
	if a.Allow(ACL, "", Write) != nil {
		t.Fatal("management token refused acl:write")
	}
	if _, _, err := r.Resolve(HashSecret("nobody")); !errors.Is(err, ErrTokenNotFound) {
		t.Fatalf("unknown secret: %v", err)
	}
}

// TestReplicaResolverFollowsPolicyChanges: a token's compiled rules are
// reused while its policies are unchanged, and recompiled when one of
// them changes, appears or goes.
func TestReplicaResolverFollowsPolicyChanges(t *testing.T) {
	user := HashSecret("u")
	store := fakeStore{
		tokens:   map[string]*pb.ACLToken{string(user[:]): {AccessorId: "a1", Policies: []string{"svc", "extra"}, CreateRevision: 2}},
		policies: map[string]*pb.ACLPolicy{"svc": {Name: "svc", Rules: `service "user." { write }`, ModifyRevision: 3}},
	}
	r := NewReplicaResolver(store)
	resolve := func() Authorizer {
		t.Helper()
		a, _, err := r.Resolve(user)
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	first := resolve()
	if again := resolve(); again != first {
		t.Error("an unchanged token was compiled again")
	}
	store.policies["svc"] = &pb.ACLPolicy{Name: "svc", Rules: `service "order." { write }`, ModifyRevision: 5}
	a := resolve()
	if a.Allow(Service, "order.rpc", Write) != nil || a.Allow(Service, "user.rpc", Write) == nil {
		t.Fatal("after the policy changed: want order.* writable and user.* not")
	}
	store.policies["extra"] = &pb.ACLPolicy{Name: "extra", Rules: `blob "models/" { read }`, ModifyRevision: 6}
	if resolve().Allow(Blob, "models/a", Read) != nil {
		t.Fatal("a policy created after the token was resolved grants nothing")
	}
	delete(store.policies, "extra")
	if resolve().Allow(Blob, "models/a", Read) == nil {
		t.Fatal("a removed policy still grants")
	}
}

// TestReplicaResolverFollowsARestoredState: a snapshot restored from
// another cluster replaces the tokens and policies with its own, whose
// names and revisions may be those of other rules here. A token resolves
// to the rules its policies hold now, whether it was resolved before the
// restore or only its policy was.
func TestReplicaResolverFollowsARestoredState(t *testing.T) {
	resolved, fresh := HashSecret("resolved"), HashSecret("fresh")
	store := fakeStore{
		tokens: map[string]*pb.ACLToken{
			string(resolved[:]): {AccessorId: "a1", Policies: []string{"svc"}, CreateRevision: 4},
			string(fresh[:]):    {AccessorId: "a2", Policies: []string{"svc"}, CreateRevision: 5},
		},
		policies: map[string]*pb.ACLPolicy{"svc": {Name: "svc", Rules: `service "user." { write }`, CreateRevision: 3, ModifyRevision: 3}},
	}
	r := NewReplicaResolver(store)
	if a, _, err := r.Resolve(resolved); err != nil || a.Allow(Service, "user.rpc", Write) != nil {
		t.Fatalf("before the restore: %v; want user.* writable", err)
	}

	// The restored file's policy svc, at the same revisions, grants
	// order.* only; its tokens are at the same revisions too.
	store.policies["svc"] = &pb.ACLPolicy{Name: "svc", Rules: `service "order." { write }`, CreateRevision: 3, ModifyRevision: 3}
	for name, hash := range map[string][32]byte{"the token resolved before": resolved, "a token first resolved after": fresh} {
		a, _, err := r.Resolve(hash)
		if err != nil {
			t.Fatalf("%s the restore: %v", name, err)
		}
		if a.Allow(Service, "user.rpc", Write) == nil {
			t.Errorf("%s the restore keeps user.* writable, which the restored policy no longer grants", name)
		}
		if err := a.Allow(Service, "order.rpc", Write); err != nil {
			t.Errorf("%s the restore: %v; want order.* writable, as the restored policy grants", name, err)
		}
	}
}
