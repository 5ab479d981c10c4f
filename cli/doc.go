// Package cli holds what the commands of zrpcd and zrpcctl share: the
// build's version (set at link time). The commands themselves live in
// cli/agentcmd (zrpcd: agent, keygen, version) and cli/ctlcmd (zrpcctl), so
// that each binary links only its own: zrpcctl, which talks to agents
// through package client, links none of the agent's storage or consensus.
package cli
