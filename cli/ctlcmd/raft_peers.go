package ctlcmd

import (
	"context"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/zrpcio/zrpc/client"
)

func newRaftPeersCommand(o *options) *cobra.Command {
	return &cobra.Command{
		Use:   "peers",
		Short: "List the Raft peers and the leader",
		Long: `List the Raft configuration: each peer's id, Raft address, suffrage (voter or
nonvoter), whether it leads, and the last index in its log, as the peer
itself answers (within 500 ms; "unreachable" when it does not).`,
		Example: `  zrpcctl raft peers
  zrpcctl raft peers -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return o.run(cmd, false, func(ctx context.Context, c *client.Client, p *printer) error {
				peers, err := c.Peers(ctx)
				if err != nil {
					return err
				}
				rows := make([][]string, 0, len(peers))
				for _, pr := range peers {
					leader := "no"
					if pr.GetLeader() {
						leader = "yes"
					}
					lastIndex := strconv.FormatUint(pr.GetLastIndex(), 10)
					if pr.GetUnreachable() {
						lastIndex = "unreachable"
					}
					rows = append(rows, []string{pr.GetId(), pr.GetAddress(), pr.GetSuffrage(), leader, lastIndex})
				}
				return p.table(protoMessages(peers), []string{"id", "address", "suffrage", "leader", "last_index"}, rows)
			})
		},
	}
}
