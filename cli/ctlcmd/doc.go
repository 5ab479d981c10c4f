// Package ctlcmd holds the cobra commands of zrpcctl, the operator's tool,
// one file per command, and the printer that writes their output as a
// table or JSON. It talks to agents only through package client: it must
// not import node or the agent's storage and consensus packages (the test
// of cmd/zrpcctl checks what the binary links).
package ctlcmd
