// Package agentcmd holds the cobra commands of zrpcd, the agent: agent and
// agent join (which build a node.Config from flags, environment and file
// and run a node), keygen and version. It is not the operator's tool: that
// is zrpcctl, in cli/ctlcmd.
package agentcmd
