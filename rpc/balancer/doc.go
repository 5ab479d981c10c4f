// Package balancer holds zrpc's client-side load balancers, registered with
// grpc-go under the names below by this package's init, so importing it (rpc
// does) makes them available to service configs.
//
// The resolver in package rpc describes each instance with [Attributes]
// (weight, zone, version, tags, metadata) on its resolver.Address; the
// balancers read the weight and address from there. The resolver must list
// instances in resolver.State.Addresses (the grpc base balancer these build on
// reads only those); attributes that change for a known address take effect
// with the next resolver update, without reconnecting. Filtering by zone, version
// or tags is not done here: the resolver hands over only the instances a
// client may use, and the balancer spreads calls over the ready ones.
//
// Which to choose:
//
//   - [P2CEWMA] (zrpc's default): power of two random choices scored by a
//     peak-EWMA of latency that decays with time (100 ms) whether or not
//     the instance is picked, times its unary calls in flight (streams are
//     left out: a long-lived one is no slow call); failures count as slow
//     calls. It adapts to slow or failing instances and to
//     heterogeneous machines without configuration, and an instance that
//     was slow, failed or just joined gets its share back within seconds.
//     Choose it unless one of the others fits better.
//   - [RoundRobin]: equal instances, equal calls; the cheapest pick. Good when
//     calls cost about the same and instances are alike.
//   - [WeightedRoundRobin]: like round robin but in proportion to
//     Attributes.Weight (nginx's smooth weighted round robin), for
//     deliberately unequal capacity or gradual traffic shifts (canaries).
//   - [LeastConn]: the instance with the fewest calls in flight from this
//     client; for long or highly variable calls (streams, batch jobs) where
//     latency is a poor signal.
//   - [Random]: uniform random; stateless, useful with very many clients and
//     as a baseline.
//   - [ConsistentHash]: calls with the same key (see [WithHashKey], or the
//     outgoing metadata key [HashKeyMetadataKey]) go to the same instance while
//     the set is stable, and only about 1/n of keys move when an instance is
//     added or removed; for per-key caches or affinity. Calls without a key
//     are spread at random.
//
// What it is not: no health checking of its own (grpc's health service is
// enabled on every SubConn, and SubConns that are not READY are never
// picked), no retries (the client interceptor chain does them), and no
// cross-client coordination: every ClientConn balances on what it sees.
//
// All balancers build on google.golang.org/grpc/balancer/base. Picks run on
// the path of every RPC, so they take no locks (one exception, documented on
// [WeightedRoundRobin] for very large weights) and allocate nothing, except
// [ConsistentHash] when the key comes from outgoing metadata.
package balancer
