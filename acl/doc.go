// Package acl is zrpc's access control: the rules language of policies,
// tokens (a public accessor id and a random secret kept only as its
// SHA-256), the Authorizer that answers whether a token may do something,
// the table of the permission every RPC of the agent's API needs, and the
// gRPC server interceptors that enforce it.
//
// Rules grant access by resource kind and name prefix:
//
//	service "user." { write }   # services whose name starts with "user."
//	blob "models/" { read }
//	service "" { read }         # "" matches every name
//	operator { read }           # status, members, peers, repair status
//	agent { write }             # the agent-to-agent API
//	acl { write }               # policies and tokens
//
// The longest matching prefix decides; write implies read; deny refuses
// even where a shorter prefix allows. With ACLs on, what no rule grants
// is denied.
//
// It is not the ACL state: policies and tokens live in the registry's Raft
// state machine (raftstore), and the agent reaches them through the
// Resolver this package declares.
package acl
