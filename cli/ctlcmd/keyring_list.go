package ctlcmd

import (
	"context"
	"fmt"
	"strconv"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/proto"

	"github.com/zrpcio/zrpc/client"
)

func newKeyringListCommand(o *options) *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List the gossip keys of every agent",
		Long: `List every key the alive agents hold, with how many agents hold it and how
many encrypt with it (primary), then each agent's primary key and number of
keys. A rotation is done when one key is held by all agents and is primary on
all of them. The command fails if an agent did not answer.`,
		Example: `  zrpcctl keyring list
  zrpcctl keyring list -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return o.run(cmd, false, func(ctx context.Context, c *client.Client, p *printer) error {
				resp, err := c.KeyringList(ctx)
				if resp == nil {
					return err
				}
				if p.json {
					if perr := p.printJSON(resp); perr != nil {
						return perr
					}
					return err
				}
				total := len(resp.GetAgents())
				keyRows := make([][]string, 0, len(resp.GetKeys()))
				for _, k := range resp.GetKeys() {
					keyRows = append(keyRows, []string{k.GetKey(), fmt.Sprintf("%d/%d", k.GetAgents(), total), fmt.Sprintf("%d/%d", k.GetPrimary(), total)})
				}
				if perr := p.table(nil, []string{"key", "agents", "primary"}, keyRows); perr != nil {
					return perr
				}
				if _, perr := fmt.Fprintln(p.w); perr != nil {
					return perr
				}
				agentRows := make([][]string, 0, total)
				for _, r := range resp.GetAgents() {
					agentRows = append(agentRows, []string{r.GetAgent(), okOrFailed(r), r.GetPrimaryKey(), strconv.Itoa(len(r.GetKeys())), r.GetError()})
				}
				if perr := p.table([]proto.Message{resp}, []string{"agent", "result", "primary", "keys", "error"}, agentRows); perr != nil {
					return perr
				}
				return err
			})
		},
	}
}
