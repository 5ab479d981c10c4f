package acl

import (
	"fmt"
	"slices"
	"strings"

	"github.com/zrpcio/zrpc/api/apierr"
)

// Policy is a parsed policy: a name and its rules.
type Policy struct {
	Name  string
	Rules []Rule
}

// ParsePolicy parses a policy's rules text.
func ParsePolicy(name, rules string) (*Policy, error) {
	rs, err := ParseRules(rules)
	if err != nil {
		return nil, fmt.Errorf("policy %s: %w", name, err)
	}
	return &Policy{Name: name, Rules: rs}, nil
}

// ManagementPolicyName names the built-in policy that grants everything:
// the bootstrap token carries it. No stored policy may take its name.
const ManagementPolicyName = "management"

// Authorizer answers whether a token may do something.
type Authorizer interface {
	// Allow returns nil when access to the resource of kind called name
	// ("" for kinds without names) is granted, else an error wrapping
	// apierr.ErrPermissionDenied that names the missing permission, e.g.
	// `permission denied: token lacks service:write on "order.rpc"`.
	Allow(kind Resource, name string, access Access) error
	// Allows reports whether Allow grants the access, deciding as Allow
	// does but building no error: filtering a list of names, most of
	// them perhaps refused, costs no allocation per name.
	Allows(kind Resource, name string, access Access) bool
}

// Management returns the authorizer of the management policy: it allows
// everything.
func Management() Authorizer { return management{} }

type management struct{}

func (management) Allow(Resource, string, Access) error { return nil }
func (management) Allows(Resource, string, Access) bool { return true }

// Compile merges policies into one Authorizer. Where two policies give the
// same prefix, deny wins over write, and write over read; otherwise the
// longest matching prefix decides. A policy named ManagementPolicyName
// makes the result Management().
func Compile(policies ...*Policy) Authorizer {
	merged := map[Resource]map[string]Access{}
	for _, p := range policies {
		if p.Name == ManagementPolicyName {
			return Management()
		}
		for _, r := range p.Rules {
			byPrefix := merged[r.Resource]
			if byPrefix == nil {
				byPrefix = map[string]Access{}
				merged[r.Resource] = byPrefix
			}
			byPrefix[r.Prefix] = stronger(byPrefix[r.Prefix], r.Access)
		}
	}
	a := &authorizer{}
	for kind, byPrefix := range merged {
		if int(kind) < len(a.grants) { // a rule of no known kind grants nothing
			a.grants[kind] = sortedGrants(byPrefix)
		}
	}
	return a
}

// stronger merges two grants of the same prefix: deny, then write, then
// read (0 is no grant).
func stronger(a, b Access) Access {
	switch {
	case a == Deny || b == Deny:
		return Deny
	case a == Write || b == Write:
		return Write
	default:
		return max(a, b)
	}
}

// authorizer is compiled policies: per kind, the prefixes its rules
// grant, sorted, each with its merged access.
type authorizer struct {
	grants [ACL + 1][]grant
}

// grant is what the rules of one kind give a prefix, and parent the
// index of its nearest ancestor: the longest other prefix of its kind
// that it starts with (-1 for none).
type grant struct {
	prefix string
	parent int32
	access Access
}

func (a *authorizer) Allow(kind Resource, name string, need Access) error {
	if a.Allows(kind, name, need) {
		return nil
	}
	return Denied(kind, name, need)
}

func (a *authorizer) Allows(kind Resource, name string, need Access) bool {
	if int(kind) >= len(a.grants) {
		return false
	}
	g, ok := longestPrefix(a.grants[kind], name)
	return ok && (g.access == Write || g.access == Read && need == Read)
}

// sortedGrants sorts the prefixes of byPrefix and links each to its
// nearest ancestor.
func sortedGrants(byPrefix map[string]Access) []grant {
	gs := make([]grant, 0, len(byPrefix))
	for prefix, access := range byPrefix {
		gs = append(gs, grant{prefix: prefix, access: access})
	}
	slices.SortFunc(gs, func(a, b grant) int { return strings.Compare(a.prefix, b.prefix) })
	// chain holds the previous prefix and its ancestors, the longest
	// last. Sorted, the ancestors of a prefix come before it, and every
	// prefix between an ancestor and it starts with that ancestor too: its
	// ancestors are the ones of chain that it starts with.
	var chain []int32
	for i := range gs {
		for len(chain) > 0 && !strings.HasPrefix(gs[i].prefix, gs[chain[len(chain)-1]].prefix) {
			chain = chain[:len(chain)-1]
		}
		gs[i].parent = -1
		if len(chain) > 0 {
			gs[i].parent = chain[len(chain)-1]
		}
		chain = append(chain, int32(i))
	}
	return gs
}

// longestPrefix returns the grant of the longest prefix of name in gs
// (sorted by sortedGrants). Every prefix of name sorts between itself and
// name, so it starts the last prefix p that does not sort after name:
// the longest prefix of name is the first ancestor of p (or p) no
// longer than what p and name have in common. A binary search and a
// walk of at most as many steps as p has bytes.
func longestPrefix(gs []grant, name string) (grant, bool) {
	i, found := slices.BinarySearchFunc(gs, name, func(g grant, name string) int { return strings.Compare(g.prefix, name) })
	if !found {
		i--
	}
	if i < 0 {
		return grant{}, false
	}
	common := commonPrefixLen(gs[i].prefix, name)
	for i >= 0 && len(gs[i].prefix) > common {
		i = int(gs[i].parent)
	}
	if i < 0 {
		return grant{}, false
	}
	return gs[i], true
}

// commonPrefixLen returns the length of the longest common prefix of a
// and b.
func commonPrefixLen(a, b string) int {
	n := min(len(a), len(b))
	for i := range n {
		if a[i] != b[i] {
			return i
		}
	}
	return n
}

// Denied is the error of a missing permission.
func Denied(kind Resource, name string, need Access) error {
	return fmt.Errorf("%w: token lacks %s", apierr.ErrPermissionDenied, permission(kind, name, need))
}

// permission names a permission as errors do: `service:write on
// "order.rpc"`, `operator:read`.
func permission(kind Resource, name string, need Access) string {
	if kind.named() {
		return fmt.Sprintf("%s:%s on %q", kind, need, name)
	}
	return fmt.Sprintf("%s:%s", kind, need)
}

// agentOnly is what a peer's proof of cluster membership stands for:
// agent:write (the agent-to-agent API) and operator:read (agents ask each
// other for their status and Raft peers, and for the leader's repair
// status), and nothing else. A call an agent forwards for a client carries
// the client's token for the rest.
type agentOnly struct{}

func (a agentOnly) Allow(kind Resource, name string, need Access) error {
	if a.Allows(kind, name, need) {
		return nil
	}
	return Denied(kind, name, need)
}

func (agentOnly) Allows(kind Resource, _ string, need Access) bool {
	return kind == Agent || kind == Operator && need == Read
}

// AgentAuthorizer returns the authorizer of a caller proven to be an agent
// of the cluster: agent:write and operator:read.
func AgentAuthorizer() Authorizer { return agentOnly{} }

// anyOf allows what any of its authorizers allows; it refuses with the
// last one's error.
type anyOf []Authorizer

func (as anyOf) Allow(kind Resource, name string, need Access) error {
	var err error
	for _, a := range as {
		if err = a.Allow(kind, name, need); err == nil {
			return nil
		}
	}
	return err
}

func (as anyOf) Allows(kind Resource, name string, need Access) bool {
	for _, a := range as {
		if a.Allows(kind, name, need) {
			return true
		}
	}
	return false
}
