package ctlcmd

import (
	"github.com/spf13/cobra"
)

// newGenCommand is `zrpcctl gen`: code generation from .proto files,
// without protoc. It needs no agent.
func newGenCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "gen",
		Short: "Generate a zrpc service from a .proto file (no protoc needed)",
		Long: `Generate Go code and a runnable zrpc service from a .proto file, like
goctl rpc protoc, from this one binary: no protoc and no plugins to install.
Message code is protoc-gen-go's, gRPC stubs have protoc-gen-go-grpc's API.`,
		Example: `  zrpcctl gen proto user
  zrpcctl gen rpc user.proto --out ./user --module example.com/user
  cd user && go run . -f etc/user.yaml`,
	}
	cmd.AddCommand(newGenProtoCommand(), newGenRPCCommand())
	return cmd
}
