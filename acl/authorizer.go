package acl

import (
	"fmt"
	"sort"
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
}

// Management returns the authorizer of the management policy: it allows
// everything.
func Management() Authorizer { return management{} }

type management struct{}

func (management) Allow(Resource, string, Access) error { return nil }

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
	a := &authorizer{rules: map[Resource][]Rule{}}
	for kind, byPrefix := range merged {
		rs := make([]Rule, 0, len(byPrefix))
		for prefix, access := range byPrefix {
			rs = append(rs, Rule{Resource: kind, Prefix: prefix, Access: access})
		}
		// Longest prefix first: the first match decides.
		sort.Slice(rs, func(i, j int) bool {
			if len(rs[i].Prefix) != len(rs[j].Prefix) {
				return len(rs[i].Prefix) > len(rs[j].Prefix)
			}
			return rs[i].Prefix < rs[j].Prefix
		})
		a.rules[kind] = rs
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

// authorizer is compiled policies: per kind, rules longest prefix first.
type authorizer struct {
	rules map[Resource][]Rule
}

func (a *authorizer) Allow(kind Resource, name string, need Access) error {
	for _, r := range a.rules[kind] {
		if !strings.HasPrefix(name, r.Prefix) {
			continue
		}
		if r.Access == Write || r.Access == Read && need == Read {
			return nil
		}
		break
	}
	return Denied(kind, name, need)
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

func (agentOnly) Allow(kind Resource, name string, need Access) error {
	if kind == Agent || kind == Operator && need == Read {
		return nil
	}
	return Denied(kind, name, need)
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
