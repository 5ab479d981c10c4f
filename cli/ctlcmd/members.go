package ctlcmd

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/zrpcio/zrpc/api/apierr"
	"github.com/zrpcio/zrpc/client"
)

// clockShownFrom is the clock offset past which members shows it: the
// agents' own warning threshold (gossip.ClockSkewWarn, which zrpcctl does
// not link).
const clockShownFrom = time.Second

// clockOff says how far off a clock is: "1h0m0s ahead", "2.5s behind".
func clockOff(d time.Duration) string {
	if d < 0 {
		return d.Abs().Round(100*time.Millisecond).String() + " behind"
	}
	return d.Round(100*time.Millisecond).String() + " ahead"
}

func newMembersCommand(o *options) *cobra.Command {
	return &cobra.Command{
		Use:   "members",
		Short: "List the agents of the cluster",
		Long: `List the agents of the cluster as the answering agent's gossip sees them:
name, gossip address, status (alive, suspect, failed, left; unknown for a
Raft server gossip has never seen; "shards full" when the agent's shard
store has no room for new blob shards, which then go to other agents;
"leaving" while it leaves for good, handing its blob shards off first;
"clock 1m5s ahead" or "behind" when its wall clock is off from the
answering agent's by a second or more, as gossip's probes measure it),
Raft role, build, zone, and for how long gossip has reported that status.
-o json gives every clock offset measured (clock_offset).`,
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
					if m.GetLeaving() && (m.GetStatus() == "alive" || m.GetStatus() == "suspect") {
						status += " (leaving)" // once gone, its status says "left"
					}
					if d := m.GetClockOffset().AsDuration(); m.GetClockOffset() != nil && d.Abs() >= clockShownFrom {
						status += " (clock " + clockOff(d) + ")"
					}
					rows = append(rows, []string{m.GetName(), m.GetAddress(), status, m.GetRole(), m.GetBuild(), m.GetZone(), statusFor})
				}
				if err := p.table(protoMessages(members), []string{"name", "address", "status", "role", "build", "zone", "for"}, rows); err != nil {
					return err
				}
				noteCutOff(ctx, c, cmd.ErrOrStderr())
				return nil
			})
		},
	}
}

// noteCutOff tells, on w, when the agent that answered is cut off from
// the leader: its gossip takes seconds to call a peer it cannot reach
// failed, and lists it alive meanwhile, which would send an operator the
// wrong way. Nothing is said when the agent does not answer its status.
func noteCutOff(ctx context.Context, c *client.Client, w io.Writer) {
	st, err := c.Status(ctx)
	if err != nil || st.GetCutOff() == "" {
		return
	}
	fmt.Fprintf(w, "zrpcctl: note: %s is cut off from the leader (%s); the statuses above are its gossip's view, "+
		"which lists a peer it cannot reach alive for seconds; `zrpcctl status` asks the voters\n",
		st.GetNode(), strings.TrimPrefix(st.GetCutOff(), apierr.ErrStaleRead.Error()+": "))
}
