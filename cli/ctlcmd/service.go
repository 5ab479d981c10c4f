package ctlcmd

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/client"
)

func newServiceCommand(o *options) *cobra.Command {
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
		newServiceListCommand(o),
		newServiceGetCommand(o),
		newServiceRegisterCommand(o),
		newServiceDeregisterCommand(o),
		newServiceRenewCommand(o),
		newServiceWatchCommand(o),
	)
	return cmd
}

// consistencyFlag is --consistency of the read commands.
const consistencyUsage = "read consistency: default (local copy, refused when the agent lost the leader), stale (local copy, any age) or consistent (on the leader)"

// readOptions turns --consistency into a read option.
func readOptions(consistency string) ([]client.ReadOption, error) {
	c, err := parseConsistency(consistency)
	if err != nil {
		return nil, err
	}
	return []client.ReadOption{client.WithConsistency(c)}, nil
}

// parseConsistency reads --consistency.
func parseConsistency(consistency string) (zrpcpb.Consistency, error) {
	c, ok := zrpcpb.Consistency_value[strings.ToUpper(consistency)]
	if !ok {
		return 0, fmt.Errorf("invalid --consistency %q: want default, stale or consistent", consistency)
	}
	return zrpcpb.Consistency(c), nil
}

// formatHealth shows a health as passing, warning or critical ("" when unknown).
func formatHealth(h zrpcpb.Health) string {
	if h == zrpcpb.Health_HEALTH_UNSPECIFIED {
		return ""
	}
	return strings.ToLower(h.String())
}

// instanceName is how commands name one instance: service/id.
func instanceName(service, id string) string {
	return service + "/" + id
}
