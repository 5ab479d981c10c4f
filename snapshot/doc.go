// Package snapshot is the file an operator keeps as a backup of a zrpc
// cluster (`zrpcctl snapshot save`, the agent's scheduled snapshots): a
// header (magic, format version, the Raft index and term, the registry
// revision, when it was made, the size of the state), the registry state
// machine's own snapshot stream as raft stores it, and a SHA-256 trailer
// over every byte before it.
//
// It reads and writes that file, verifies it (Verify), summarises it
// (Inspect: counts of services, instances, blobs and tokens read from the
// state stream) and writes it atomically (WriteFile: a temporary file next
// to the target, fsync, verification, rename). It is not the state
// machine: loading the state stream into a registry is raftstore's job.
// It imports only the API's messages, so zrpcctl links it without Raft.
package snapshot
