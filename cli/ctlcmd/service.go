package ctlcmd

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/client"
)

func newCtlServiceCommand(o *ctlOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "service",
		Short: "List, inspect, register and watch services",
		Long: `Commands on the service registry: which services exist, their instances and
health, and manual registrations (for instances that do not register
themselves through the rpc package).`,
		Example: `  zrpcctl service list
  zrpcctl service get user.rpc
  zrpcctl service register user.rpc --id user-1 --address 10.0.0.5:9000 --ttl 30s
  zrpcctl service watch user.rpc`,
		Args: cobra.NoArgs,
	}
	cmd.AddCommand(
		newCtlServiceListCommand(o),
		newCtlServiceGetCommand(o),
		newCtlServiceRegisterCommand(o),
		newCtlServiceDeregisterCommand(o),
		newCtlServiceRenewCommand(o),
		newCtlServiceWatchCommand(o),
	)
	return cmd
}

// ctlConsistencyFlag is --consistency of the read commands.
const ctlConsistencyUsage = "read consistency: default (local copy, refused when the agent lost the leader), stale (local copy, any age) or consistent (on the leader)"

// ctlReadOptions turns --consistency into a read option.
func ctlReadOptions(consistency string) ([]client.ReadOption, error) {
	c, ok := zrpcpb.Consistency_value[strings.ToUpper(consistency)]
	if !ok {
		return nil, fmt.Errorf("invalid --consistency %q: want default, stale or consistent", consistency)
	}
	return []client.ReadOption{client.WithConsistency(zrpcpb.Consistency(c))}, nil
}

// ctlHealth shows a health as passing, warning or critical ("" when unknown).
func ctlHealth(h zrpcpb.Health) string {
	if h == zrpcpb.Health_HEALTH_UNSPECIFIED {
		return ""
	}
	return strings.ToLower(h.String())
}

// ctlInstanceName is how commands name one instance: service/id.
func ctlInstanceName(service, id string) string {
	return service + "/" + id
}
