package ctlcmd

import (
	"context"
	"time"

	"github.com/spf13/cobra"

	"github.com/zrpcio/zrpc/client"
)

func newMembersCommand(o *options) *cobra.Command {
	return &cobra.Command{
		Use:   "members",
		Short: "List the agents of the cluster",
		Long: `List the agents of the cluster as the answering agent's gossip sees them:
name, gossip address, status (alive, suspect, failed, left; unknown for a
Raft server gossip has never seen; "shards full" when the agent's shard
store has no room for new blob shards, which then go to other agents;
"leaving" while the agent hands its blob shards off before it leaves for
good), Raft role, build, zone, and for how long gossip has reported that status.`,
		Example: `  zrpcctl members
  zrpcctl members -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return o.run(cmd, false, func(ctx context.Context, c *client.Client, p *printer) error {
				members, err := c.Members(ctx)
				if err != nil {
					return err
				}
				rows := make([][]string, 0, len(members))
				for _, m := range members {
					statusFor := ""
					if m.GetStatusFor() != nil {
						statusFor = m.GetStatusFor().AsDuration().Round(time.Second).String()
					}
					status := m.GetStatus()
					if m.GetNoRaftState() {
						status += " (no Raft state yet)"
					}
					if m.GetShardsFull() {
						status += " (shards full)"
					}
					if m.GetLeaving() {
						status += " (leaving: handing its shards off)"
					}
					rows = append(rows, []string{m.GetName(), m.GetAddress(), status, m.GetRole(), m.GetBuild(), m.GetZone(), statusFor})
				}
				return p.table(protoMessages(members), []string{"name", "address", "status", "role", "build", "zone", "for"}, rows)
			})
		},
	}
}
