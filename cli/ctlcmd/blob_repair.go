package ctlcmd

import (
	"context"
	"fmt"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/client"
)

func newBlobRepairCommand(o *options) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "repair",
		Short: "Inspect the leader's shard repair",
		Long: `The Raft leader repairs blobs: it rebuilds, from the other shards of their
blocks, the shards that are missing, corrupt or held by agents that have
been failed longer than the agents' --blob-repair-delay, and stores them on
other agents.`,
		Example: `  zrpcctl blob repair status`,
		Args:    cobra.NoArgs,
	}
	cmd.AddCommand(newBlobRepairStatusCommand(o))
	return cmd
}

func newBlobRepairStatusCommand(o *options) *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show what shard repair has queued, in progress and done",
		Long: `Show the leader's shard repair: shards queued for rebuilding, in progress,
waiting (lost shards on failed agents whose --blob-repair-delay has not
passed, or that no agent can take: every alive agent with room already
holds a shard of their block, so add agents or free space),
retrying (lost shards whose rebuild failed, tried again one
--blob-repair-interval later), and the rebuilt (shards and bytes) and
failed repairs the leader counted since it started, its last error and
when it last scanned the blobs. Any agent
answers, asking the leader.`,
		Example: `  zrpcctl blob repair status
  zrpcctl blob repair status -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return o.run(cmd, false, func(ctx context.Context, c *client.Client, p *printer) error {
				st, err := c.RepairStatus(ctx)
				if err != nil {
					return err
				}
				count := func(n uint64) string { return strconv.FormatUint(n, 10) }
				lastScan := formatTime(st.GetLastScan())
				if lastScan == "" {
					lastScan = "never"
				}
				return p.fields(st, []field{
					{"Leader", st.GetLeader()},
					{"Queued", count(st.GetQueued())},
					{"In progress", count(st.GetInProgress())},
					{"Waiting", waitingCell(st)},
					{"Retrying", count(st.GetRetrying())},
					{"Rebuilt shards", count(st.GetRebuiltShards())},
					{"Rebuilt bytes", formatSizeExact(st.GetRebuiltBytes())},
					{"Failed", count(st.GetFailed())},
					{"Last error", st.GetLastError()},
					{"Last scan", lastScan},
				})
			})
		},
	}
}

// waitingCell shows the lost shards that wait, and how many of them wait
// for an agent to take them rather than for the repair delay.
func waitingCell(st *zrpcpb.RepairStatusResponse) string {
	n, agent := st.GetWaiting(), st.GetWaitingForAgent()
	if agent == 0 {
		return strconv.FormatUint(n, 10)
	}
	return fmt.Sprintf("%d (%d for an agent without a shard of their block: add agents or free space)", n, agent)
}
