package acl

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/zrpcio/zrpc/api/apierr"
	pb "github.com/zrpcio/zrpc/api/zrpcpb"
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
		if got := a.Allows(tt.kind, tt.name, tt.access); got != tt.allowed {
			t.Errorf("Allows(%s, %q, %s) = %v, want %v", tt.kind, tt.name, tt.access, got, tt.allowed)
		}
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

// TestAuthorizerPicksTheLongestMatchingPrefix: among prefixes that
// start one another, or sort between a name and its prefixes, the
// longest one the name starts with decides.
func TestAuthorizerPicksTheLongestMatchingPrefix(t *testing.T) {
	a := Compile(mustPolicy(t, "p", `
		service "a" { write }
		service "aa" { deny }
		service "aaa" { read }
		service "aaaa" { write }
		service "ab" { read }
		service "abz" { write }
		service "b" { read }
		service "bb/x" { write }
	`))
	tests := []struct {
		name string
		want Access // 0: nothing matches
	}{
		{"", 0},
		{"a", Write},
		{"aab", Deny},
		{"aaab", Read},
		{"aaaaaaa", Write},
		{"ab", Read},
		{"aby", Read},
		{"abzz", Write},
		{"ac", Write},
		{"b", Read},
		{"bb/", Read},
		{"bb/xy", Write},
		{"c", 0},
		{"0", 0},
	}
	for _, tt := range tests {
		read, write := a.Allow(Service, tt.name, Read) == nil, a.Allow(Service, tt.name, Write) == nil
		wantRead, wantWrite := tt.want == Read || tt.want == Write, tt.want == Write
		if read != wantRead || write != wantWrite {
			t.Errorf("%q: read %v, write %v; want %s (read %v, write %v)", tt.name, read, write, tt.want, wantRead, wantWrite)
		}
	}
}

// longestMatch is what rules grant name, found rule by rule: the
// longest prefix decides, and of one prefix deny, then write, then read.
func longestMatch(rules []Rule, kind Resource, name string) Access {
	best, access := -1, Access(0)
	for _, r := range rules {
		if r.Resource != kind || !strings.HasPrefix(name, r.Prefix) || len(r.Prefix) < best {
			continue
		}
		if len(r.Prefix) > best {
			best, access = len(r.Prefix), 0
		}
		switch {
		case r.Access == Deny || access == Deny:
			access = Deny
		case r.Access == Write || access == Write:
			access = Write
		default:
			access = Read
		}
	}
	return access
}

// TestAuthorizerDecidesAsTheLongestMatchingRule: on random rules and
// names (over few letters, so that prefixes share much), the compiled
// authorizer decides as the rules do one by one.
func TestAuthorizerDecidesAsTheLongestMatchingRule(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	word := func(maxLen int) string {
		b := make([]byte, rng.IntN(maxLen+1))
		for i := range b {
			b[i] = "ab/"[rng.IntN(3)]
		}
		return string(b)
	}
	for round := range 200 {
		var policies []*Policy
		var all []Rule
		for p := range 1 + rng.IntN(3) {
			var rules []Rule
			for range rng.IntN(30) {
				rules = append(rules, Rule{Resource: []Resource{Service, Blob}[rng.IntN(2)], Prefix: word(6), Access: Access(1 + rng.IntN(3))})
			}
			policies = append(policies, &Policy{Name: fmt.Sprintf("p%d", p), Rules: rules})
			all = append(all, rules...)
		}
		a := Compile(policies...)
		for range 100 {
			kind, name, need := []Resource{Service, Blob}[rng.IntN(2)], word(8), Access(2+rng.IntN(2))
			want := longestMatch(all, kind, name)
			allowed := want == Write || want == Read && need == Read
			if got := a.Allow(kind, name, need) == nil; got != allowed {
				t.Fatalf("round %d: rules %v: Allow(%s, %q, %s) allowed %v, want %v (the longest match grants %d)", round, all, kind, name, need, got, allowed, want)
			}
			if got := a.Allows(kind, name, need); got != allowed {
				t.Fatalf("round %d: rules %v: Allows(%s, %q, %s) = %v, want %v (the longest match grants %d)", round, all, kind, name, need, got, allowed, want)
			}
		}
	}
}

// TestAllowsAllocatesNothing: deciding on a name, refused or not, builds
// nothing, whatever the authorizer: a list of 100,000 blob names filtered
// for a token that may read a few of them costs no allocation per name.
func TestAllowsAllocatesNothing(t *testing.T) {
	compiled := Compile(mustPolicy(t, "few", `blob "models/" { read } blob "models/secret/" { deny }`))
	for name, a := range map[string]Authorizer{
		"compiled":              compiled,
		"management":            Management(),
		"agent":                 AgentAuthorizer(),
		"agent for a token":     anyOf{AgentAuthorizer(), compiled},
		"agent for no rights":   anyOf{AgentAuthorizer(), Compile()},
		"unknown resource kind": Compile(&Policy{Name: "odd", Rules: []Rule{{Resource: ACL + 1, Prefix: "x", Access: Write}}}),
	} {
		for _, blob := range []string{"datasets/train.csv", "models/secret/key", "models/a.bin"} {
			if n := testing.AllocsPerRun(100, func() { a.Allows(Blob, blob, Read) }); n != 0 {
				t.Errorf("%s authorizer: Allows(blob, %q, read) allocated %v times, want 0", name, blob, n)
			}
		}
	}
	blobs := make([]*pb.BlobSummary, 1000)
	for i := range blobs {
		blobs[i] = &pb.BlobSummary{Name: fmt.Sprintf("datasets/%d", i)}
	}
	resp := &pb.BlobListResponse{Blobs: blobs}
	if n := testing.AllocsPerRun(10, func() { filterBlobs(compiled, resp) }); n > 1 {
		t.Errorf("filtering 1000 blobs the token may not read allocated %v times, want at most 1 (the response)", n)
	}
}

// BenchmarkAllow decides on a name that matches one rule among many
// and on one that matches none; nested: of 1,024 prefixes that each
// start the next, a name that the shortest only starts.
func BenchmarkAllow(b *testing.B) {
	var nested []Rule
	for n := 1; n <= maxPrefixBytes; n++ {
		nested = append(nested, Rule{Resource: Service, Prefix: strings.Repeat("a", n), Access: Read})
	}
	a := Compile(&Policy{Name: "nested", Rules: nested})
	b.Run("rules=1024/nested", func(b *testing.B) {
		for b.Loop() {
			a.Allow(Service, "ab", Read)
		}
	})

	for _, n := range []int{1, 100, 32 << 10} {
		var policies []*Policy
		for p := 0; p*maxRules < n; p++ {
			var rules []Rule
			for i := p * maxRules; i < min(n, (p+1)*maxRules); i++ {
				rules = append(rules, Rule{Resource: Blob, Prefix: fmt.Sprintf("models/%d/", i), Access: Read})
			}
			policies = append(policies, &Policy{Name: fmt.Sprintf("p%d", p), Rules: rules})
		}
		a := Compile(policies...)
		for _, c := range []struct{ what, name string }{
			{"match", fmt.Sprintf("models/%d/weights.bin", n/2)},
			{"none", "datasets/train.csv"},
		} {
			b.Run(fmt.Sprintf("rules=%d/%s", n, c.what), func(b *testing.B) {
				for b.Loop() {
					a.Allow(Blob, c.name, Read)
				}
			})
		}
	}
}
