// Package client is the Go client of the agent API (api/registry.proto): the
// service registry (Register, Get, Watch, Session, ...) and agent status. It is
// to zrpc what clientv3 is to etcd.
//
// A Client holds one lazily dialled gRPC connection per agent endpoint. Unary
// calls fail over to the next endpoint when an agent is unreachable or answers
// codes.Unavailable; a write keeps its request id across those attempts, so
// it is applied once. Get follows an agent's pages and a WatchStream
// assembles responses sent in parts, so a service of any size reads whole.
// A Client's watches of one agent share one WatchMany stream (a Watch
// stream each on agents that predate it). A WatchStream resumes without
// gaps across agent failures and when it is ended for reading too slowly;
// a Session does not reconnect (the rpc package above it re-registers).
// Errors from the agent wrap the sentinels of api/apierr, so callers branch
// with errors.Is(err, apierr.ErrNotFound).
//
// The package is not the RPC runtime (load balancing, resolvers): that lives
// in the rpc package, which builds on this one.
package client
