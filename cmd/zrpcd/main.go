// Command zrpcd is the zrpc agent. See `zrpcd agent --help`. The commands
// live in package cli/agentcmd.
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/zrpcio/zrpc/cli/agentcmd"
)

func main() {
	if err := agentcmd.NewCommand().ExecuteContext(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, "Error:", err)
		os.Exit(1)
	}
}
