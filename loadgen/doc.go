// Package loadgen sends unary gRPC calls to a service as fast as it
// answers, or at a given rate, and measures them: calls and errors by
// status code, throughput and the latency distribution in a log-linear
// histogram (no sample is kept). It knows a method only by its descriptor,
// found through the server's reflection service (Reflect) or in compiled
// .proto files, and sends dynamic messages built from JSON, so it can load
// any gRPC service, zrpc or not. `zrpcctl bench` is its command line; the
// connections it is given are dialled by the caller.
//
// It is not a benchmark harness for comparisons (bench/ is): it runs one
// load against one target and reports what it saw.
package loadgen
