package ctlcmd

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/client"
)

func newServiceRenewCommand(o *options) *cobra.Command {
	return &cobra.Command{
		Use:   "renew SERVICE ID",
		Short: "Renew the TTL check of an instance",
		Long: `Mark instance ID of SERVICE alive for one more TTL. Only instances registered
with a TTL check (--ttl) can be renewed; run this more often than the TTL,
from cron or a supervisor script, to keep the instance passing.`,
		Example: `  zrpcctl service renew user.rpc user-1
  while sleep 10; do zrpcctl service renew user.rpc user-1; done`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			service, id := args[0], args[1]
			return o.run(cmd, false, func(ctx context.Context, c *client.Client, p *printer) error {
				if err := c.RenewTTL(ctx, service, id); err != nil {
					return fmt.Errorf("renew %s: %w", instanceName(service, id), err)
				}
				return p.sentence(&zrpcpb.RenewTTLResponse{}, "renewed "+instanceName(service, id))
			})
		},
	}
}
