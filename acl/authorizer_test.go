package acl

import (
	"errors"
	"testing"

	"github.com/zrpcio/zrpc/api/apierr"
)

func mustPolicy(t *testing.T, name, rules string) *Policy {
	t.Helper()
	p, err := ParsePolicy(name, rules)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestAuthorizerDecisions(t *testing.T) {
	a := Compile(
		mustPolicy(t, "svc", `service "user." { write } service "user.admin" { deny } service "" { read }`),
		mustPolicy(t, "models", `blob "models/" { read } blob "models/mine/" { write } operator { read }`),
	)
	tests := []struct {
		kind    Resource
		name    string
		access  Access
		allowed bool
		err     string
	}{
		{Service, "user.rpc", Write, true, ""},
		{Service, "user.rpc", Read, true, ""},
		{Service, "order.rpc", Read, true, ""},
		{Service, "order.rpc", Write, false, `permission denied: token lacks service:write on "order.rpc"`},
		{Service, "user.admin.rpc", Read, false, `permission denied: token lacks service:read on "user.admin.rpc"`},
		{Blob, "models/a.bin", Read, true, ""},
		{Blob, "models/a.bin", Write, false, `permission denied: token lacks blob:write on "models/a.bin"`},
		{Blob, "models/mine/a.bin", Write, true, ""},
		{Blob, "other", Read, false, `permission denied: token lacks blob:read on "other"`},
		{Operator, "", Read, true, ""},
		{Operator, "", Write, false, "permission denied: token lacks operator:write"},
		{Agent, "", Write, false, "permission denied: token lacks agent:write"},
		{ACL, "", Read, false, "permission denied: token lacks acl:read"},
	}
	for _, tt := range tests {
		err := a.Allow(tt.kind, tt.name, tt.access)
		if tt.allowed {
			if err != nil {
				t.Errorf("Allow(%s, %q, %s) = %v, want allowed", tt.kind, tt.name, tt.access, err)
			}
			continue
		}
		if err == nil || err.Error() != tt.err || !errors.Is(err, apierr.ErrPermissionDenied) {
			t.Errorf("Allow(%s, %q, %s) = %v, want %q wrapping ErrPermissionDenied", tt.kind, tt.name, tt.access, err, tt.err)
		}
	}
}

func TestAuthorizerMergesSamePrefixDenyFirstThenWrite(t *testing.T) {
	a := Compile(mustPolicy(t, "r", `service "x" { read } blob "b" { deny }`), mustPolicy(t, "w", `service "x" { write } blob "b" { write }`))
	if err := a.Allow(Service, "x1", Write); err != nil {
		t.Errorf("read and write of one prefix: write refused: %v", err)
	}
	if err := a.Allow(Blob, "b1", Read); err == nil {
		t.Error("deny and write of one prefix: read allowed, want deny to win")
	}
}

func TestNoPoliciesDenyEverything(t *testing.T) {
	a := Compile()
	for _, k := range []Resource{Service, Blob, Operator, Agent, ACL} {
		if a.Allow(k, "x", Read) == nil {
			t.Errorf("no policies: %s:read allowed", k)
		}
	}
}

func TestManagementAllowsEverything(t *testing.T) {
	for _, a := range []Authorizer{Management(), Compile(mustPolicy(t, "x", ""), &Policy{Name: ManagementPolicyName})} {
		for _, k := range []Resource{Service, Blob, Operator, Agent, ACL} {
			if err := a.Allow(k, "anything", Write); err != nil {
				t.Errorf("management: %s:write refused: %v", k, err)
			}
		}
	}
}

func TestAgentAuthorizerGrantsAgentWriteAndOperatorRead(t *testing.T) {
	a := AgentAuthorizer()
	if err := a.Allow(Agent, "", Write); err != nil {
		t.Errorf("agent:write refused: %v", err)
	}
	if err := a.Allow(Operator, "", Read); err != nil {
		t.Errorf("operator:read refused: %v", err)
	}
	for _, r := range []Rule{{Service, "user.rpc", Read}, {Blob, "b", Read}, {Operator, "", Write}, {ACL, "", Read}} {
		if a.Allow(r.Resource, r.Prefix, r.Access) == nil {
			t.Errorf("agent proof granted %s", r)
		}
	}
}

func TestNewTokenKeepsOnlyTheSecretsHash(t *testing.T) {
	tok, secret, err := NewToken("svc-user")
	if err != nil {
		t.Fatal(err)
	}
	if len(secret) != len(secretPrefix)+2*secretBytes || tok.SecretHash != HashSecret(secret) {
		t.Fatalf("secret %d chars, hash match %v", len(secret), tok.SecretHash == HashSecret(secret))
	}
	if !ValidAccessorID(tok.AccessorID) {
		t.Fatalf("accessor id %q is not valid", tok.AccessorID)
	}
	tok2, secret2, _ := NewToken()
	if secret2 == secret || tok2.AccessorID == tok.AccessorID {
		t.Fatal("two tokens share a secret or an accessor id")
	}
}

func TestValidatePolicyNameNamesTheField(t *testing.T) {
	for _, bad := range []string{"", "a b", string(make([]byte, maxPolicyName+1))} {
		err := ValidatePolicyName("policy.name", bad)
		if !errors.Is(err, apierr.ErrInvalidArgument) || err == nil {
			t.Errorf("ValidatePolicyName(%q) = %v, want InvalidArgument", bad, err)
		}
	}
	if err := ValidatePolicyName("policy.name", "svc-user.v1_x"); err != nil {
		t.Errorf("good name refused: %v", err)
	}
}
