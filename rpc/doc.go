// Package rpc is what Go services import: a gRPC server that registers
// itself with the local zrpc agent and leaves cleanly, and (with
// rpc/resolver and rpc/balancer) clients that discover and balance over the
// registry. It links only the agent's client API: no Raft, gossip or bbolt
// ends up in a service binary.
package rpc
