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
