// Package gossip finds the other zrpc agents and notices when they fail or
// leave. It wraps hashicorp/memberlist (SWIM gossip): every agent carries
// its name, gRPC and Raft addresses, role, build and zone in its node meta,
// and the package turns memberlist's callbacks into an ordered stream of
// Events and a table of Members.
//
// Gossip is only a signal. This package does not decide anything: it does
// not add Raft voters, mark instances critical or remove nodes from the
// registry. The Raft leader (package node) reads Events and Members and
// turns them into Raft writes, and every such decision is re-checked from
// Members on each reconcile pass, so a missed or late event costs time,
// not correctness. Nor is gossip a transport for application data:
// the registry travels through Raft, blobs through gRPC.
//
// Life cycle: New validates the Config and does no I/O; Start listens;
// Join or JoinRetry contacts peers; Leave broadcasts a graceful goodbye;
// Close shuts memberlist down and stops the event pump. Close is safe to
// call twice and after a failed Start.
//
// Left or failed: memberlist v0.7.0 does not tell peers whether a node that
// went away said goodbye. So Leave first sends every member a leave notice
// (a memberlist user message over TCP), then memberlist's own goodbye; a
// member that sent a notice is reported left, any other failed. A notice
// that does not get through is sent again until Leave's deadline; if some
// member still did not take it (a partial partition), up to two members
// that did are asked to pass it on to every member they reach, and they
// too try again for a few seconds. A notice passed on counts for
// relayedNoticeLife.
//
// Encryption: with a key, memberlist encrypts and authenticates all
// gossip. Its keyring holds several keys: it encrypts with the primary and
// accepts any installed one, so a key is rotated with no downtime by
// InstallKey on every agent, then UseKey, then RemoveKey of the old key.
// The keyring is kept in Config.KeyringFile across restarts. Gossip started
// without a key cannot be encrypted later.
//
// Failure detection follows the timer Profile: "lan" declares a silent
// agent dead after about 1.8 s on a quiet network, "local" is faster and
// meant for tests on loopback.
package gossip
