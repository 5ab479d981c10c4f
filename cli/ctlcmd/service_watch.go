package ctlcmd

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/client"
)

// Columns of `service watch`; rows print as they come, so widths are fixed.
var (
	watchHeaders = []string{"rev", "type", "service", "id", "address", "health"}
	watchWidths  = []int{8, 6, 20, 20, 21}
)

func newServiceWatchCommand(o *options) *cobra.Command {
	var rev uint64
	cmd := &cobra.Command{
		Use:   "watch [SERVICE]",
		Short: "Print registry changes as they happen",
		Long: `Print one line per change to SERVICE (or to every service): its revision,
PUT or DELETE, and the instance. It starts with a snapshot of the current
state, or with the changes after --rev. When the agent fails, the watch goes
on through another agent of --addr without losing changes; a snapshot line
means the agent sent the whole state again, which replaces what came before.
It runs until Ctrl-C. With -o json it prints one WatchResponse per line.`,
		Example: `  zrpcctl service watch
  zrpcctl service watch user.rpc --rev 1200
  zrpcctl service watch user.rpc -o json | jq .events`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var service string
			if len(args) == 1 {
				service = args[0]
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			cmd.SetContext(ctx)
			return o.run(cmd, true, func(ctx context.Context, c *client.Client, p *printer) error {
				return runWatch(ctx, c, p, service, rev)
			})
		},
	}
	cmd.Flags().Uint64Var(&rev, "rev", 0, "print the changes after this revision (0: start with a snapshot)")
	return cmd
}

// runWatch prints the watch until ctx ends (a clean exit) or it fails.
func runWatch(ctx context.Context, c *client.Client, p *printer, service string, rev uint64) error {
	w, err := c.Watch(ctx, service, rev)
	if err != nil {
		return watchEnded(ctx, err)
	}
	defer w.Close()
	if err := p.streamHeader(watchWidths, watchHeaders); err != nil {
		return err
	}
	for {
		resp, err := w.Recv()
		if err != nil {
			return watchEnded(ctx, err)
		}
		if err := printWatchResponse(p, resp); err != nil {
			return err
		}
	}
}

func printWatchResponse(p *printer, resp *zrpcpb.WatchResponse) error {
	if resp.GetSnapshot() {
		note := fmt.Sprintf("-- snapshot at revision %d: %d instances --", resp.GetHeader().GetRevision(), len(resp.GetEvents()))
		if err := p.streamNote(note); err != nil {
			return err
		}
	}
	if p.json {
		return p.streamRow(resp, nil, nil)
	}
	for _, ev := range resp.GetEvents() {
		in := ev.GetInstance()
		row := []string{strconv.FormatUint(ev.GetRevision(), 10), ev.GetType().String(),
			in.GetService(), in.GetId(), in.GetAddress(), formatHealth(in.GetHealth())}
		if err := p.streamRow(ev, watchWidths, row); err != nil {
			return err
		}
	}
	return nil
}

// watchEnded turns the end of a watch into the command's result: Ctrl-C
// is a clean exit.
func watchEnded(ctx context.Context, err error) error {
	if ctx.Err() != nil && errors.Is(err, ctx.Err()) {
		return nil
	}
	return fmt.Errorf("watch: %w", err)
}
