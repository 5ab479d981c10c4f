// Package gen turns a .proto file into Go without a protoc binary: message
// code identical to protoc-gen-go's (its own generator, used as a library),
// gRPC stubs with protoc-gen-go-grpc's API, and a goctl-style zrpc service
// around them (main, config, ServiceContext, one logic file per RPC, server
// glue, and a typed client package).
//
// Parsing is bufbuild/protocompile's; errors point at file:line:column.
// Generation happens in memory: a Plan holds every file, formatted and
// checked, before Plan.Write touches the disk, and Write never overwrites
// the files a user owns (logic, config, main) once they changed them.
// ManifestName in the output directory records what gen wrote, so that a
// later run removes the files it no longer writes (unless changed since).
// gen does not build or run what it writes; cli's `zrpcctl gen` is its
// command line.
package gen
