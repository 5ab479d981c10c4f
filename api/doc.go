// Package api holds the .proto files of the agent's API. The generated Go code
// is in api/zrpcpb and is checked in, so building needs no protoc; run
// `make proto` to regenerate it. Package api/apierr maps errors to gRPC status
// codes and back.
package api
