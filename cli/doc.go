// Package cli holds the cobra commands of zrpcd (the agent) and zrpcctl
// (the operator's tool), one file per command, and the printer that writes
// their output as a table or JSON. zrpcctl talks to agents only through
// package client; zrpcd builds a node.Config and runs a node.
package cli
