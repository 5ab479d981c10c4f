// Package client is the Go client of the agent API (api/registry.proto): the
// service registry (Register, Get, Watch, Session, ...) and agent status. It is
// to zrpc what clientv3 is to etcd.
//
// A Client holds one lazily dialled gRPC connection per agent endpoint. Unary
// calls fail over to the next endpoint when an agent is unreachable or answers
// codes.Unavailable; a WatchStream resumes across agent failures without gaps;
// a Session does not reconnect (the rpc package above it re-registers).
// Errors from the agent wrap the sentinels of api/apierr, so callers branch
// with errors.Is(err, apierr.ErrNotFound).
//
// The package is not the RPC runtime (load balancing, resolvers): that lives
// in the rpc package, which builds on this one.
package client
