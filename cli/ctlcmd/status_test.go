package ctlcmd

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/zrpcio/zrpc/api/apierr"
	"github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/client"
	"github.com/zrpcio/zrpc/client/clienttest"
)

// statusFields runs zrpcctl status against an agent answering st and
// returns its lines by label, and what it printed.
func statusFields(t *testing.T, st *zrpcpb.StatusResponse) (map[string]string, runResult) {
	t.Helper()
	a := (&clienttest.Agent{OnStatus: func(context.Context, *zrpcpb.StatusRequest) (*zrpcpb.StatusResponse, error) {
		return st, nil
	}}).Start(t)
	res := runZrpcctl(testContext(t), t, a.Addr, "status")
	if res.err != nil {
		t.Fatalf("status: %v", res.err)
	}
	fields := map[string]string{}
	for line := range strings.SplitSeq(strings.TrimSpace(res.stdout), "\n") {
		k, v, _ := strings.Cut(line, ":")
		fields[k] = strings.TrimSpace(v)
	}
	return fields, res
}

func TestStatusSaysWhichVotersAreUnreachable(t *testing.T) {
	t.Setenv(addrEnv, "")
	tests := []struct {
		name       string
		status     *zrpcpb.StatusResponse
		wantLeader string
		wantVoters string // "" : no Voters line
		// wantStopped is the Raft stopped line ("": none).
		wantStopped string
	}{
		{"a leader and every voter reachable",
			&zrpcpb.StatusResponse{Node: "n1", Leader: "n1", Voters: 3, ReachableVoters: 3, LastContact: durationpb.New(2656192261)},
			"n1", "3 of 3 reachable", ""},
		{"a leader and one voter down",
			&zrpcpb.StatusResponse{Node: "n1", Leader: "n1", Voters: 3, ReachableVoters: 2, UnreachableVoters: []*zrpcpb.UnreachableVoter{
				{Name: "n3", Status: "failed", DownFor: durationpb.New(75*time.Second + 300*time.Millisecond)},
			}},
			"n1", "2 of 3 reachable; n3 failed for 1m15s", ""},
		{"the quorum lost",
			&zrpcpb.StatusResponse{Node: "n1", Voters: 3, ReachableVoters: 1, UnreachableVoters: []*zrpcpb.UnreachableVoter{
				{Name: "n2", Status: "failed", DownFor: durationpb.New(4 * time.Second)}, {Name: "n3", Status: "unknown"},
			}},
			"no leader: 1 of 3 voters reachable, a leader needs 2 (restart them or mend the network to them; if a majority is gone for good, see `zrpcd agent recover --help`)", "1 of 3 reachable; n2 failed for 4s, n3 unknown", ""},
		{"no leader with the voters reachable (an election)",
			&zrpcpb.StatusResponse{Node: "n1", Voters: 3, ReachableVoters: 3},
			"no leader: enough voters reachable, so an election may be under way, or a voter went down too recently for gossip to have noticed", "3 of 3 reachable", ""},
		{"an agent that does not report voters",
			&zrpcpb.StatusResponse{Node: "n1", ClusterId: "c1", LastLogIndex: 7},
			"no leader", "", ""},
		{"an agent without Raft state (a new or wiped data dir)",
			&zrpcpb.StatusResponse{Node: "n1"},
			"no leader: this agent has no Raft state yet (a new, wiped or replaced data dir): a leader sends it the log once gossip has joined it to the cluster; until then it refuses votes and default reads (`zrpcctl members` shows whom it sees)", "", ""},
		{"an agent whose Raft node stopped",
			&zrpcpb.StatusResponse{Node: "n1", RaftState: "Shutdown", Voters: 3, ReachableVoters: 3,
				RaftStopped: "fsync of the Raft log failed (input/output error): check the disk, then restart the agent"},
			"no leader: this agent stopped its Raft node (Raft stopped, below)", "3 of 3 reachable",
			"fsync of the Raft log failed (input/output error): check the disk, then restart the agent"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fields, res := statusFields(t, tt.status)
			if fields["Leader"] != tt.wantLeader {
				t.Errorf("Leader: %q, want %q\n%s", fields["Leader"], tt.wantLeader, res.stdout)
			}
			if v, ok := fields["Voters"]; v != tt.wantVoters || ok != (tt.wantVoters != "") {
				t.Errorf("Voters: %q (shown %v), want %q\n%s", v, ok, tt.wantVoters, res.stdout)
			}
			if v, ok := fields["Raft stopped"]; v != tt.wantStopped || ok != (tt.wantStopped != "") {
				t.Errorf("Raft stopped: %q (shown %v), want %q\n%s", v, ok, tt.wantStopped, res.stdout)
			}
			if c := tt.status.GetLastContact(); c != nil && fields["Last contact"] != "2.656s" {
				t.Errorf("Last contact: %q, want it to the millisecond: 2.656s", fields["Last contact"])
			}
		})
	}
}

// TestStatusShowsTheStreamsAndTheirLimits: the agent's open Watch and
// Session streams are shown against their limits, "no limit" for a limit
// of 0, and not at all for an agent that does not report them.
func TestStatusShowsTheStreamsAndTheirLimits(t *testing.T) {
	t.Setenv(addrEnv, "")
	tests := []struct {
		name                  string
		status                *zrpcpb.StatusResponse
		wantWatch, wantSessns string // "": no line
	}{
		{"limits", &zrpcpb.StatusResponse{Node: "n1", WatchStreams: 812, MaxWatches: 65536, SessionStreams: 40, MaxSessions: 16384},
			"812 of at most 65536 (max_watches)", "40 of at most 16384 (max_sessions)"},
		{"no limits", &zrpcpb.StatusResponse{Node: "n1", WatchStreams: 3, SessionStreams: 1},
			"3 (no limit)", "1 (no limit)"},
		{"an agent that does not report streams", &zrpcpb.StatusResponse{Node: "n1"}, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fields, res := statusFields(t, tt.status)
			for _, c := range []struct{ key, want string }{{"Watches", tt.wantWatch}, {"Session streams", tt.wantSessns}} {
				if v, ok := fields[c.key]; v != c.want || ok != (c.want != "") {
					t.Errorf("%s: %q (shown %v), want %q\n%s", c.key, v, ok, c.want, res.stdout)
				}
			}
		})
	}
}

// TestNoLeaderAndStaleReadsSayWhatToDo: a write refused for want of a
// leader and a read refused as stale fail with the agent's reason and a
// hint at what to run next.
func TestNoLeaderAndStaleReadsSayWhatToDo(t *testing.T) {
	t.Setenv(addrEnv, "")
	a := (&clienttest.Agent{
		OnRegister: func(context.Context, *zrpcpb.RegisterRequest) (*zrpcpb.RegisterResponse, error) {
			return nil, apierr.ToStatus(fmt.Errorf("%w: 1 of 3 voters reachable (n2 failed, n3 failed); a leader needs 2", apierr.ErrNoLeader))
		},
		OnList: func(context.Context, *zrpcpb.ListRequest) (*zrpcpb.ListResponse, error) {
			return nil, apierr.ToStatus(fmt.Errorf("%w: this agent knows no leader", apierr.ErrStaleRead))
		},
	}).Start(t)
	tests := []struct {
		name  string
		args  []string
		wants []string
	}{
		{"write", []string{"service", "register", "user.rpc", "--id", "u1", "--address", "127.0.0.1:9001"}, []string{
			"Error: ", "agent " + a.Addr + ": no cluster leader: 1 of 3 voters reachable (n2 failed, n3 failed); a leader needs 2",
			"Hint: the cluster has no leader now; `zrpcctl status` says which voters the agent cannot reach",
		}},
		{"default read", []string{"service", "list"}, []string{
			"Error: ", "agent " + a.Addr + ": replica is stale",
			"Hint: the agent has lost contact with the leader; --consistency stale reads its copy anyway",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := runZrpcctl(testContext(t), t, a.Addr, tt.args...)
			if res.err == nil {
				t.Fatal("command succeeded, want an error (a non-zero exit)")
			}
			for _, want := range tt.wants {
				if !strings.Contains(res.stderr, want) {
					t.Errorf("stderr does not contain %q:\n%s", want, res.stderr)
				}
			}
		})
	}
}

// TestLeaderlessSaysWhatTheAgentSees: when a put or a snapshot save got no
// first answer, zrpcctl asks the agent whether the cluster has a leader
// and, without one, says so (ErrNoLeader, with the voters it reaches).
func TestLeaderlessSaysWhatTheAgentSees(t *testing.T) {
	t.Setenv(addrEnv, "")
	f := startFake(t)
	c, err := client.New(client.Config{Endpoints: []string{f.Addr}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	o := &options{timeout: 2 * time.Second}
	if err := o.leaderless(c)(); err != nil {
		t.Fatalf("with a leader (node-2): %v, want nil", err)
	}
	f.OnStatus = func(context.Context, *zrpcpb.StatusRequest) (*zrpcpb.StatusResponse, error) {
		return &zrpcpb.StatusResponse{Node: "node-1", Voters: 3, ReachableVoters: 1}, nil
	}
	err = o.leaderless(c)()
	if !errors.Is(err, apierr.ErrNoLeader) || !strings.Contains(err.Error(), "1 of 3 voters reachable, a leader needs 2") {
		t.Fatalf("without a leader: %v, want ErrNoLeader naming the voters reachable", err)
	}
}

func TestStatusCertExpiry(t *testing.T) {
	now := time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		expires time.Time
		want    []string
		not     string
	}{
		{now.Add(364 * 24 * time.Hour), []string{"expires 2027-12-04 12:00 UTC (in 364 days)"}, "renew"},
		{now.Add(10 * 24 * time.Hour), []string{"(in 10 days)", "renew it", "zrpcctl tls cert create --agent", "SIGHUP"}, "EXPIRED"},
		{now.Add(5 * time.Hour), []string{"(in 5h0m0s)", "renew it"}, "EXPIRED"},
		{now.Add(-time.Hour), []string{"EXPIRED 2026-12-05 11:00 UTC", "peers refuse", "SIGHUP"}, "(in"},
	} {
		got := statusCertExpiry(tc.expires, now)
		for _, w := range tc.want {
			if !strings.Contains(got, w) {
				t.Errorf("statusCertExpiry(%v) = %q, want it to say %q", tc.expires, got, w)
			}
		}
		if strings.Contains(got, tc.not) {
			t.Errorf("statusCertExpiry(%v) = %q, should not say %q", tc.expires, got, tc.not)
		}
	}
}

// TestStatusSaysWhenTheAgentIsCutOff: an agent no leader has reached
// within its stale-read bound says so, and what follows from it; one in
// contact shows no such line.
func TestStatusSaysWhenTheAgentIsCutOff(t *testing.T) {
	t.Setenv(addrEnv, "")
	why := "replica is stale: the leader last replicated its log to this agent 12.3s ago (stale_read_bound 5s)"
	fields, res := statusFields(t, &zrpcpb.StatusResponse{Node: "n3", Voters: 3, ReachableVoters: 1, CutOff: why})
	if got, want := fields["Cut off"], why+"; writes through it fail at once, its watches that require a leader end, its default reads refuse once no leader has reached it for stale_read_bound"; got != want {
		t.Errorf("Cut off: %q, want %q\n%s", got, want, res.stdout)
	}
	fields, res = statusFields(t, &zrpcpb.StatusResponse{Node: "n1", Leader: "n1", Voters: 3, ReachableVoters: 3})
	if v, ok := fields["Cut off"]; ok {
		t.Errorf("an agent in contact shows Cut off: %q\n%s", v, res.stdout)
	}
}

// TestMembersNotesAnAgentCutOffFromTheLeader: members from an agent cut
// off from the leader says so on stderr, after the table, since its
// gossip lists the peers it cannot reach alive for seconds; from an agent
// in contact it says nothing more.
func TestMembersNotesAnAgentCutOffFromTheLeader(t *testing.T) {
	t.Setenv(addrEnv, "")
	var cutOff atomic.Value
	cutOff.Store("replica is stale: the leader last replicated its log to this agent 4.1s ago (stale_read_bound 2s)")
	a := (&clienttest.Agent{
		OnMembers: func(context.Context, *zrpcpb.MembersRequest) (*zrpcpb.MembersResponse, error) {
			return &zrpcpb.MembersResponse{Members: []*zrpcpb.Member{{Name: "n1", Status: "alive"}, {Name: "n2", Status: "alive"}}}, nil
		},
		OnStatus: func(context.Context, *zrpcpb.StatusRequest) (*zrpcpb.StatusResponse, error) {
			return &zrpcpb.StatusResponse{Node: "n1", CutOff: cutOff.Load().(string)}, nil
		},
	}).Start(t)
	res := runZrpcctl(testContext(t), t, a.Addr, "members")
	want := "zrpcctl: note: n1 is cut off from the leader (the leader last replicated its log to this agent 4.1s ago (stale_read_bound 2s))"
	if res.err != nil || !strings.Contains(res.stdout, "n2") || !strings.Contains(res.stderr, want) {
		t.Fatalf("members from a cut-off agent: %v\nstdout:\n%s\nstderr:\n%s\nwant the table and %q on stderr", res.err, res.stdout, res.stderr, want)
	}
	cutOff.Store("")
	res = runZrpcctl(testContext(t), t, a.Addr, "members")
	if res.err != nil || strings.Contains(res.stderr, "cut off") {
		t.Fatalf("members from an agent in contact: %v, stderr %q", res.err, res.stderr)
	}
}
