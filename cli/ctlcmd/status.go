package ctlcmd

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/client"
)

func newStatusCommand(o *options) *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show the answering agent and its view of the Raft cluster",
		Long: `Show the agent that answers (the first reachable one of --addr): its name,
the leader it follows ("no leader" while it knows none), how many voters
its gossip sees alive and which it does not (failed, left, or unknown, and
for how long), its Raft state and log indexes, and how long ago it heard
from the leader. An agent whose disk failed an fsync of its Raft log
stops its Raft node and exits; until it has, it says why under "Raft
stopped", and restarted it takes part in the cluster again. An agent no
leader has reached within stale_read_bound, or that knows no leader and
hears from too few voters for one (on the minority side of a partition,
or in a cluster without a quorum), says so under "Cut off". A leader
needs a majority of the voters: with fewer reachable, writes fail until
the others are back. A follower whose applied index lags the commit
index, or whose last contact keeps growing, is falling behind. "Watch
streams" and "Session streams" count what the agent serves against
max_watches and max_sessions: at the limit, new ones are refused. "TLS
certificate" (with TLS on) says when the agent's certificate, or its CA,
expires; peers refuse an agent whose certificate has expired. "Leaving"
shows an agent that leaves the cluster for good still handing its blob
shards to the others.`,
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
					lastContact = st.GetLastContact().AsDuration().Round(time.Millisecond).String()
				}
				fields := []field{
					{"Node", st.GetNode()},
					{"Cluster ID", st.GetClusterId()},
					{"Leader", statusLeader(st)},
					{"Leader address", st.GetLeaderAddress()},
				}
				if st.GetVoters() > 0 { // agents before voters were reported send none
					fields = append(fields, field{"Voters", statusVoters(st)})
				}
				fields = append(fields, []field{
					{"Term", strconv.FormatUint(st.GetTerm(), 10)},
					{"Raft state", st.GetRaftState()},
				}...)
				if why := st.GetRaftStopped(); why != "" {
					fields = append(fields, field{"Raft stopped", why})
				}
				if why := st.GetCutOff(); why != "" {
					fields = append(fields, field{"Cut off", why + "; writes through it fail at once, its watches that require a leader end, its default reads refuse once no leader has reached it for stale_read_bound"})
				}
				if n := st.GetHandoffShards(); n > 0 {
					fields = append(fields, field{"Leaving", fmt.Sprintf("handing %d blob shards to the other agents (zrpcctl leave)", n)})
				}
				fields = append(fields, []field{
					{"Commit index", strconv.FormatUint(st.GetCommitIndex(), 10)},
					{"Applied index", strconv.FormatUint(st.GetAppliedIndex(), 10)},
					{"Last log index", strconv.FormatUint(st.GetLastLogIndex(), 10)},
					{"Last contact", lastContact},
				}...)
				if st.GetMaxWatches() > 0 || st.GetMaxSessions() > 0 || st.GetWatchStreams() > 0 || st.GetSessionStreams() > 0 {
					fields = append(fields,
						field{"Watches", statusStreams(st.GetWatchStreams(), st.GetMaxWatches(), "max_watches")},
						field{"Session streams", statusStreams(st.GetSessionStreams(), st.GetMaxSessions(), "max_sessions")})
				}
				if t := st.GetTlsCertExpires(); t != nil {
					fields = append(fields, field{"TLS certificate", statusCertExpiry(t.AsTime(), time.Now())})
				}
				fields = append(fields, field{"Build", st.GetBuild()})
				return p.fields(st, fields)
			})
		},
	}
}

// statusCertExpiry says when the agent's certificate expires: "expires
// 2027-12-05 (in 364 days)", with a warning in its last 30 days.
func statusCertExpiry(expires, now time.Time) string {
	left := expires.Sub(now)
	day := expires.UTC().Format("2006-01-02 15:04 MST")
	switch {
	case left <= 0:
		return fmt.Sprintf("EXPIRED %s: peers refuse this agent; issue a new certificate and send the agent SIGHUP", day)
	case left < 30*24*time.Hour:
		return fmt.Sprintf("expires %s (in %s): renew it (zrpcctl tls cert create --agent, then SIGHUP)", day, roundLeft(left))
	}
	return fmt.Sprintf("expires %s (in %s)", day, roundLeft(left))
}

// roundLeft is a time left in days, or hours under two days.
func roundLeft(d time.Duration) string {
	if d < 48*time.Hour {
		return d.Round(time.Hour).String()
	}
	return fmt.Sprintf("%d days", int(d/(24*time.Hour)))
}

// statusStreams is how many streams of a kind the agent serves and its
// limit: "812 of at most 65536 (max_watches)", or "812 (no limit)".
func statusStreams(open, max uint32, key string) string {
	if max == 0 {
		return fmt.Sprintf("%d (no limit)", open)
	}
	return fmt.Sprintf("%d of at most %d (%s)", open, max, key)
}

// statusLeader is the leader's name, or "no leader" and, when too few
// voters are reachable for one, why.
func statusLeader(st *pb.StatusResponse) string {
	if st.GetLeader() != "" {
		return st.GetLeader()
	}
	if st.GetRaftStopped() != "" {
		return "no leader: this agent stopped its Raft node (Raft stopped, below)"
	}
	if f := st.GetForming(); f != "" {
		return "no cluster yet: " + f
	}
	if needed := st.GetVoters()/2 + 1; st.GetVoters() > 0 && st.GetReachableVoters() < needed {
		return fmt.Sprintf("no leader: %d of %d voters reachable, a leader needs %d (restart them or mend the network to them; if a majority is gone for good, see `zrpcd agent recover --help`)", st.GetReachableVoters(), st.GetVoters(), needed)
	}
	if st.GetVoters() == 0 && st.GetLastLogIndex() == 0 && st.GetClusterId() == "" {
		return "no leader: this agent has no Raft state yet (a new, wiped or replaced data dir): a leader sends it the log once gossip has joined it to the cluster; until then it refuses votes and default reads (`zrpcctl members` shows whom it sees)"
	}
	if st.GetVoters() > 0 {
		// Enough voters by gossip's count: the usual cause is passing.
		return "no leader: enough voters reachable, so an election may be under way, or a voter went down too recently for gossip to have noticed"
	}
	return "no leader"
}

// statusVoters says how many voters are reachable and names the others:
// "1 of 3 reachable; n2 failed for 12s, n3 unknown".
func statusVoters(st *pb.StatusResponse) string {
	s := fmt.Sprintf("%d of %d reachable", st.GetReachableVoters(), st.GetVoters())
	if len(st.GetUnreachableVoters()) == 0 {
		return s
	}
	parts := make([]string, 0, len(st.GetUnreachableVoters()))
	for _, v := range st.GetUnreachableVoters() {
		p := v.GetName() + " " + v.GetStatus()
		if v.GetDownFor() != nil {
			p += " for " + v.GetDownFor().AsDuration().Round(time.Second).String()
		}
		parts = append(parts, p)
	}
	return s + "; " + strings.Join(parts, ", ")
}
