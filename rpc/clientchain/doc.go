// Package clientchain holds zrpc's client-side gRPC interceptors and the
// default chain that rpc.Dial installs:
//
//		Propagate → Metrics → Breaker → Retry → Hedge → Timeout → (balancer, transport)
//
//	  - [Propagate] copies trace context (traceparent, tracestate, baggage) and
//	    every x-zrpc-* key from the incoming metadata of a server handler's
//	    context to the outgoing metadata, so they cross hops without code in
//	    every handler.
//	  - [Metrics] counts calls by method and status code and observes their
//	    duration, once per logical call (retries are not counted separately).
//	  - [Breaker] is per-method client-side adaptive throttling (Google SRE
//	    book, "Handling Overload"): when the backend accepts too few requests
//	    the client rejects a growing share locally. Per-instance breaking is
//	    not done here: the p2c_ewma balancer in rpc/balancer scores instances
//	    by recent errors and latency and steers calls away from bad ones.
//	  - [Retry] retries failed attempts with exponential backoff and full
//	    jitter, within the caller's deadline and a retry budget, and records the
//	    address of each failed attempt in the context ([ExcludedFrom]) so that a
//	    balancer can avoid picking the same instance twice; rpc/balancer honours
//	    it. It learns each attempt's instance from a [PickNote] when the
//	    connection's balancer fills one in (rpc/balancer's p2c_ewma), else
//	    from grpc's peer call option.
//	  - Hedge (off unless [HedgeConfig] names methods, which must be
//	    idempotent) sends a second attempt of a call still unanswered after
//	    its method's recent 95th-percentile latency to another instance (the
//	    first attempt's instance is noted through [PickNote] and excluded);
//	    the first answer wins, the other attempt is cancelled, and each hedge
//	    spends a retry-budget token.
//	  - [Timeout] bounds each attempt (default 2 s) through the context, with
//	    no goroutine and no timer per call (calls of the same few
//	    milliseconds share one deadline), never later than the caller's
//	    deadline. The bound is not sent to the server as grpc-timeout; a
//	    caller's own deadline is.
//
// The hot path starts no goroutines and logs nothing; its only locks are
// the context package's, spread over shards (see [Timeout]). Breaker and
// Retry are unary only: a stream cannot be replayed once messages have been
// sent, and its outcome is known only when it ends. Streams get propagation, metrics and (opt-in) a lifetime timeout.
//
// What it is not: no tracing spans (the trace stage lives with the tracing
// package and is off when nothing is exported), no load balancing, no
// server-side interceptors (see rpc/serverchain).
package clientchain
