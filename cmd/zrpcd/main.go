// Command zrpcd is the zrpc agent. See `zrpcd agent --help`.
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/zrpcio/zrpc/cli"
)

func main() {
	if err := cli.NewAgentdCommand().ExecuteContext(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, "Error:", err)
		os.Exit(1)
	}
}
