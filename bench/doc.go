// Package bench holds zrpc's out-of-process benchmarks. It is its own
// module (replace github.com/zrpcio/zrpc => ../) so that the load tools'
// dependencies never become the main module's, and `go test ./...` of the
// main module does not run them.
//
// Its tools measure the way an outsider would: the agents and services
// run as their own processes (the zrpcd binary, cmd/zrpcecho), the load
// comes from another (cmd/zrpcload), and each comparison runs its
// baseline in the same run, interleaved. Package registry compares zrpc's
// registry with etcd 3.4 (cmd/zrpcregbench, `make bench-registry`);
// package security is the TLS + ACL vs plaintext comparison (cmd/zrpcload);
// cmd/zrpcdnsbench asks an agent's DNS from its own process (`make bench-dns`);
// package blobbench compares zrpcctl's blob put and get with a plain gRPC
// stream into an fsynced file (cmd/zrpcblobbench, `make bench-blob`);
// internal/proc runs and measures their child processes. Results are in
// docs/benchmarks.md.
package bench
