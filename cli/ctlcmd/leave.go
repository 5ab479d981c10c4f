package ctlcmd

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/client"
)

func newLeaveCommand(o *options) *cobra.Command {
	var allowDegraded bool
	cmd := &cobra.Command{
		Use:   "leave",
		Short: "Make an agent leave the cluster for good",
		Long: `Make the agent at --addr (the first address only) leave the cluster for
good: it first hands its blob shards to the other agents (their bytes are
copied, so this takes as long as they do; progress is printed), then hands
Raft leadership to another voter if it leads, announces its departure,
waits until the leader has removed it from Raft and the registry (its
instances go with it), and shuts down.

An agent holding shards that no agent can take, because every other alive
agent with room already holds a shard of their block (three agents with
2+1 blobs), is not allowed to leave: its blobs would survive one loss
fewer. Add an agent first, or pass --allow-degraded; such shards then go
with the agent, as do shards not handed off within --timeout (a third of
it, at most 10 s, is kept for the removal; for this command --timeout
defaults to 30 minutes). The command says how many, and repair rebuilds
them from the other shards where it can.

Interrupting the command (Ctrl-C) while shards are handed off calls the
leave off: the agent stays in the cluster, the shards moved so far stay
where they went. To restart an agent without leaving, stop it with SIGTERM
instead.`,
		Example: `  zrpcctl leave --addr 127.0.0.3:8400
  zrpcctl leave --addr 127.0.0.3:8400 --timeout 2h   # many shards to hand off
  zrpcctl leave --addr 127.0.0.3:8400 --allow-degraded  # shrink a cluster whose blobs span every agent`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !cmd.Flags().Changed("timeout") {
				o.timeout = 30 * time.Minute // handing shards off moves their bytes
			}
			defer transferContext(cmd)()
			return o.run(cmd, false, func(ctx context.Context, c *client.Client, p *printer) error {
				progress, stop := context.WithCancel(ctx)
				done := make(chan struct{})
				go func() {
					defer close(done)
					printHandoff(progress, c, cmd.ErrOrStderr())
				}()
				resp, err := c.Leave(ctx, &zrpcpb.LeaveRequest{AllowDegraded: allowDegraded})
				stop()
				<-done
				if err != nil && cmd.Context().Err() != nil {
					return fmt.Errorf("leave %w: an agent still handing its blob shards off calls the leave off and stays in the cluster (zrpcctl status shows no \"Leaving\"); one that had begun to leave Raft goes on", errInterrupted)
				}
				if err != nil {
					return err
				}
				out := cmd.OutOrStdout()
				addr := c.Endpoints()[0]
				if n := resp.GetShardsHandedOff(); n > 0 {
					fmt.Fprintf(out, "agent at %s handed %d blob shards to the other agents\n", addr, n)
				}
				if n := resp.GetShardsLeft(); n > 0 {
					fmt.Fprintf(out, "warning: %d blob shards went with the agent (not handed off within --timeout, or every other agent holds a shard of their block): their blobs have a shard less until repair rebuilds them; see zrpcctl blob repair status\n", n)
				}
				if resp.GetRemoved() {
					fmt.Fprintf(out, "agent at %s left the cluster and is shutting down\n", addr)
				} else {
					fmt.Fprintf(out, "agent at %s announced its departure and is shutting down; the leader did not confirm the removal in time and will reap it after dead_node_reap\n", addr)
				}
				return nil
			})
		},
	}
	cmd.Flags().BoolVar(&allowDegraded, "allow-degraded", false,
		"leave even when some blob shards have no agent to go to (every other agent holds a shard of their block); their blobs then survive one loss fewer until an agent joins")
	return cmd
}

// printHandoff prints, every few seconds until ctx ends, how many blob
// shards the leaving agent still hands off, when that changed.
func printHandoff(ctx context.Context, c *client.Client, w io.Writer) {
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	var last uint64
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		st, err := c.Status(ctx)
		if err != nil {
			continue
		}
		if n := st.GetHandoffShards(); n > 0 && n != last {
			fmt.Fprintf(w, "handing off blob shards: %d left\n", n)
			last = n
		}
	}
}
