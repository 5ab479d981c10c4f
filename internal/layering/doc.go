// Package layering holds the test that keeps zrpc's package layering true:
// every package's imports of other zrpc packages must be the ones its row in
// docs/ARCHITECTURE.md's package table allows, and the packages a service
// binary or zrpcctl links must not pull in the agent's consensus and storage
// libraries. It has no code of its own.
package layering
