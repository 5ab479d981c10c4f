// Command zrpcctl is the operator's tool for a zrpc cluster: it lists and
// registers services, watches the registry and shows the agents' status
// through their gRPC API. The commands live in package cli/ctlcmd.
package main

import (
	"context"
	"os"

	"github.com/zrpcio/zrpc/cli/ctlcmd"
)

func main() {
	// cobra prints the error; the exit code says it failed.
	if err := ctlcmd.NewCommand().ExecuteContext(context.Background()); err != nil {
		os.Exit(1)
	}
}
