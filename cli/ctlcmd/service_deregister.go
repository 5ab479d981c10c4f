package ctlcmd

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/client"
)

func newServiceDeregisterCommand(o *options) *cobra.Command {
	return &cobra.Command{
		Use:   "deregister SERVICE ID",
		Short: "Remove an instance from the registry",
		Long: `Remove instance ID of SERVICE from the registry. Clients stop routing to it
once they see the change. An instance that belongs to a live session (one the
rpc package registered) is removed too, but its process may register it
again.`,
		Example: `  zrpcctl service deregister user.rpc user-1`,
		Args:    cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			service, id := args[0], args[1]
			return o.run(cmd, false, func(ctx context.Context, c *client.Client, p *printer) error {
				rev, err := c.Deregister(ctx, service, id)
				if err != nil {
					return fmt.Errorf("deregister %s: %w", instanceName(service, id), err)
				}
				resp := &zrpcpb.DeregisterResponse{Header: &zrpcpb.ResponseHeader{Revision: rev}}
				return p.sentence(resp, fmt.Sprintf("deregistered %s at revision %d", instanceName(service, id), rev))
			})
		},
	}
}
