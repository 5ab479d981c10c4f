package ctlcmd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

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
				if err := leavePreflight(ctx, c, min(defaultTimeout, o.timeout)); err != nil {
					return err
				}
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
				return printLeave(p, c.Endpoints()[0], resp)
			})
		},
	}
	cmd.Flags().BoolVar(&allowDegraded, "allow-degraded", false,
		"leave even when some blob shards have no agent to go to (every other agent holds a shard of their block); their blobs then survive one loss fewer until an agent joins")
	return cmd
}

// leavePreflight asks the agent for its status within wait before it is
// asked to leave: an agent that is stopped or cut off would otherwise
// hold the command, silent, for the whole of --timeout (30 minutes by
// default).
func leavePreflight(ctx context.Context, c *client.Client, wait time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	_, err := c.Status(ctx)
	switch {
	case err == nil:
		return nil
	case errors.Is(ctx.Err(), context.DeadlineExceeded), status.Code(err) == codes.DeadlineExceeded:
		return fmt.Errorf("the agent at %s did not answer its status within %s, so it was not asked to leave: "+
			"is it stopped, overloaded or partitioned? Once it answers `zrpcctl status`, run leave again; "+
			"an agent that is gone for good is removed with `zrpcctl raft remove-peer NAME` through another agent",
			c.Endpoints()[0], wait)
	}
	return fmt.Errorf("ask the agent's status before it leaves: %w", err)
}

// printLeave says what became of the leaving agent and its shards, or, in
// JSON, resp.
func printLeave(p *printer, addr string, resp *zrpcpb.LeaveResponse) error {
	if p.json {
		return p.printJSON(resp)
	}
	if n := resp.GetShardsHandedOff(); n > 0 {
		fmt.Fprintf(p.w, "agent at %s handed %d blob shards to the other agents\n", addr, n)
	}
	if n := resp.GetShardsLeft(); n > 0 {
		fmt.Fprintf(p.w, "warning: %d blob shards went with the agent (not handed off within --timeout, or every other agent holds a shard of their block): their blobs have a shard less until repair rebuilds them; see zrpcctl blob repair status\n", n)
	}
	if resp.GetRemoved() {
		_, err := fmt.Fprintf(p.w, "agent at %s left the cluster and is shutting down\n", addr)
		return err
	}
	_, err := fmt.Fprintf(p.w, "agent at %s announced its departure and is shutting down; the leader did not confirm the removal in time and will reap it after dead_node_reap\n", addr)
	return err
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
