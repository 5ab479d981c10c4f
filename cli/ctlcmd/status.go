package ctlcmd

import (
	"context"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/zrpcio/zrpc/client"
)

func newStatusCommand(o *options) *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show the answering agent and its view of the Raft cluster",
		Long: `Show the agent that answers (the first reachable one of --addr): its name,
the leader it follows, its Raft state and log indexes, and how long ago it
heard from the leader. A follower whose applied index lags the commit index,
or whose last contact keeps growing, is falling behind.`,
		Example: `  zrpcctl status
  zrpcctl --addr 10.0.0.2:8400 status -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return o.run(cmd, false, func(ctx context.Context, c *client.Client, p *printer) error {
				st, err := c.Status(ctx)
				if err != nil {
					return err
				}
				lastContact := ""
				if st.GetLastContact() != nil {
					lastContact = st.GetLastContact().AsDuration().String()
				}
				return p.fields(st, []field{
					{"Node", st.GetNode()},
					{"Cluster ID", st.GetClusterId()},
					{"Leader", st.GetLeader()},
					{"Leader address", st.GetLeaderAddress()},
					{"Term", strconv.FormatUint(st.GetTerm(), 10)},
					{"Raft state", st.GetRaftState()},
					{"Commit index", strconv.FormatUint(st.GetCommitIndex(), 10)},
					{"Applied index", strconv.FormatUint(st.GetAppliedIndex(), 10)},
					{"Last log index", strconv.FormatUint(st.GetLastLogIndex(), 10)},
					{"Last contact", lastContact},
					{"Build", st.GetBuild()},
				})
			})
		},
	}
}
