package node

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/gossip"
	"github.com/zrpcio/zrpc/internal/testlog"
	"github.com/zrpcio/zrpc/node/health"
	"github.com/zrpcio/zrpc/raftstore"
)

// fakeMembership is a Raft configuration without Raft: changes apply at
// once, as on a leader whose followers all answer.
type fakeMembership struct {
	servers []raftstore.Server
	changes []string // "voter id" or "nonvoter id", in the order asked
}

func (f *fakeMembership) Servers() ([]raftstore.Server, error) { return slices.Clone(f.servers), nil }

func (f *fakeMembership) AddVoter(_ context.Context, id, addr string) error {
	return f.add(id, addr, raftstore.Voter)
}

// AddNonvoter leaves a voter a voter, as raft does.
func (f *fakeMembership) AddNonvoter(_ context.Context, id, addr string) error {
	return f.add(id, addr, raftstore.Nonvoter)
}

func (f *fakeMembership) add(id, addr string, sf raftstore.Suffrage) error {
	kind := "voter"
	if sf == raftstore.Nonvoter {
		kind = "nonvoter"
	}
	f.changes = append(f.changes, kind+" "+id)
	for i, s := range f.servers {
		if s.ID == id {
			f.servers[i].Address = addr
			if sf == raftstore.Voter {
				f.servers[i].Suffrage = sf
			}
			return nil
		}
	}
	f.servers = append(f.servers, raftstore.Server{ID: id, Address: addr, Suffrage: sf})
	return nil
}

func (f *fakeMembership) DemoteVoter(_ context.Context, id string) error {
	f.changes = append(f.changes, "demote "+id)
	for i, s := range f.servers {
		if s.ID == id {
			f.servers[i].Suffrage = raftstore.Nonvoter
		}
	}
	return nil
}

func (f *fakeMembership) RemoveServer(_ context.Context, id string) error {
	f.servers = slices.DeleteFunc(f.servers, func(s raftstore.Server) bool { return s.ID == id })
	return nil
}

// Quorum counts the voters as the leader "self" would, reach telling for
// the others.
func (f *fakeMembership) Quorum(reach raftstore.ReachFunc) (raftstore.Quorum, error) {
	var q raftstore.Quorum
	for _, s := range f.servers {
		if s.Suffrage != raftstore.Voter {
			continue
		}
		q.Voters++
		if r := reach(s.ID); s.ID != "self" && !r.Alive {
			q.Unreachable = append(q.Unreachable, raftstore.Unreachable{ID: s.ID, Status: r.Status})
		}
	}
	return q, nil
}

// suffrage returns id's suffrage, and false when it is not a server.
func (f *fakeMembership) suffrage(id string) (raftstore.Suffrage, bool) {
	for _, s := range f.servers {
		if s.ID == id {
			return s.Suffrage, true
		}
	}
	return 0, false
}

// reconcileFixture is a leader "self" reconciling against fakes: gossip
// members set by the test, a fake Raft configuration, and a real registry
// state machine fed in order by its apply.
type reconcileFixture struct {
	t       *testing.T
	r       *reconciler
	raft    *fakeMembership
	fsm     *raftstore.FSM
	members []gossip.Member
	next    uint64
	start   time.Time
}

const testReap = 30 * time.Second

func newReconcileFixture(t *testing.T, voters int, servers ...raftstore.Server) *reconcileFixture {
	f := &reconcileFixture{t: t, raft: &fakeMembership{servers: servers}, fsm: raftstore.NewFSM(64), next: 1,
		start: time.Unix(1_700_000_000, 0)}
	f.r = &reconciler{
		self: "self", voters: voters, reap: testReap,
		members: func() []gossip.Member {
			return append([]gossip.Member{member("self", gossip.StatusAlive)}, f.members...)
		},
		raft: f.raft, nodes: f.fsm, apply: f.apply, log: testlog.New(t, "self"),
		failedSince: map[string]time.Time{},
	}
	return f
}

func (f *reconcileFixture) apply(_ context.Context, cmd *pb.Command) (uint64, error) {
	data, err := proto.Marshal(cmd)
	if err != nil {
		return 0, err
	}
	idx := f.next
	f.next++
	if err, ok := f.fsm.Apply(&raft.Log{Index: idx, Term: 1, Type: raft.LogCommand, Data: data}).(error); ok {
		return idx, err
	}
	return idx, nil
}

func member(name, status string) gossip.Member {
	return gossip.Member{Name: name, Addr: name + ":8402", Status: status,
		Meta: gossip.Meta{Name: name, Role: "server", GRPCAddr: name + ":8400", RaftAddr: name + ":8401"}}
}

func voter(name string) raftstore.Server {
	return raftstore.Server{ID: name, Address: name + ":8401", Suffrage: raftstore.Voter}
}

func nonvoter(name string) raftstore.Server {
	return raftstore.Server{ID: name, Address: name + ":8401", Suffrage: raftstore.Nonvoter}
}

// gossip sets what gossip reports, besides self: name=status pairs.
func (f *reconcileFixture) gossip(statuses ...string) {
	f.members = nil
	for i := 0; i < len(statuses); i += 2 {
		f.members = append(f.members, member(statuses[i], statuses[i+1]))
	}
}

// pass runs a reconcile pass at start+at.
func (f *reconcileFixture) pass(at time.Duration) {
	f.t.Helper()
	if err := f.r.reconcile(f.t.Context(), f.start.Add(at)); err != nil {
		f.t.Fatalf("reconcile at +%s: %v", at, err)
	}
}

// record puts agents in the registry, each owning an instance with no
// session (id: the agent's name) and one bound to a session of the agent
// (id: the name and "-s").
func (f *reconcileFixture) record(names ...string) {
	f.t.Helper()
	for _, n := range names {
		cmds := []*pb.Command{
			{Kind: &pb.Command_NodeUpsert{NodeUpsert: &pb.Node{Name: n, GrpcAddress: n + ":8400", RaftAddress: n + ":8401", Health: pb.Health_PASSING}}},
			{Kind: &pb.Command_Register{Register: &pb.Instance{Service: "api", Id: n, Node: n, Address: "127.0.0.1:9000", Health: pb.Health_PASSING}}},
			{Kind: &pb.Command_SessionCreate{SessionCreate: &pb.SessionCreate{Session: &pb.Session{Id: n + "-session", Node: n}}}},
			{Kind: &pb.Command_Register{Register: &pb.Instance{Service: "api", Id: n + "-s", Node: n, Session: n + "-session", Address: "127.0.0.1:9001", Health: pb.Health_PASSING}}},
		}
		for _, c := range cmds {
			if _, err := f.apply(f.t.Context(), c); err != nil {
				f.t.Fatal(err)
			}
		}
	}
}

func (f *reconcileFixture) wantSuffrage(id string, want raftstore.Suffrage) {
	f.t.Helper()
	if got, ok := f.raft.suffrage(id); !ok || got != want {
		f.t.Errorf("%s: suffrage %v (in Raft: %v), want %v; servers %+v", id, got, ok, want, f.raft.servers)
	}
}

// wantOutOfRaft checks that agent id is not a Raft server.
func (f *reconcileFixture) wantOutOfRaft(id string) {
	f.t.Helper()
	if _, ok := f.raft.suffrage(id); ok {
		f.t.Errorf("%s is still a Raft server: %+v", id, f.raft.servers)
	}
}

func (f *reconcileFixture) wantGone(id string) {
	f.t.Helper()
	f.wantOutOfRaft(id)
	if f.fsm.Node(id) != nil || f.fsm.NodeOwnsAnything(id) {
		f.t.Errorf("%s is still in the registry (node %v)", id, f.fsm.Node(id))
	}
}

// wantReaped checks that agent id is out of Raft and the registry, with
// its session and the instance bound to it, while its instance without a
// session stays, critical, saying why.
func (f *reconcileFixture) wantReaped(id string) {
	f.t.Helper()
	f.wantOutOfRaft(id)
	if f.fsm.Node(id) != nil || f.fsm.NodeHasSessions(id) {
		f.t.Errorf("%s still has its node record (%v) or a session", id, f.fsm.Node(id))
	}
	if in := f.fsm.Instance("api", id+"-s"); in != nil {
		f.t.Errorf("the instance of %s's session outlived it: %v", id, in)
	}
	in := f.fsm.Instance("api", id)
	if in == nil || in.Health != pb.Health_CRITICAL || !strings.HasPrefix(in.HealthOutput, raftstore.ReapedOutputPrefix+" "+id+": ") {
		f.t.Errorf("the instance registered through %s without a session: %v, want it kept, critical, with output %q...", id, in, raftstore.ReapedOutputPrefix+" "+id)
	}
}

// wantHealth checks agent id's node record and its instance.
func (f *reconcileFixture) wantHealth(id string, want pb.Health) {
	f.t.Helper()
	if _, ok := f.raft.suffrage(id); !ok {
		f.t.Errorf("%s is not a Raft server", id)
	}
	n := f.fsm.Node(id)
	if n == nil || n.Health != want {
		f.t.Errorf("node %s: %v, want health %v", id, n, want)
	}
	insts, _ := f.fsm.Instances("api")
	for _, in := range insts {
		if in.Id == id && in.Health != want {
			f.t.Errorf("instance of %s: health %v, want %v", id, in.Health, want)
		}
	}
}

func TestReconcileAddsAliveServersAsVotersUpToTheTargetThenAsNonvoters(t *testing.T) {
	f := newReconcileFixture(t, 3, voter("self"))
	f.gossip("a", gossip.StatusAlive, "b", gossip.StatusSuspect, "c", gossip.StatusAlive)
	f.pass(0)
	f.wantSuffrage("a", raftstore.Voter)
	f.wantSuffrage("b", raftstore.Voter)
	f.wantSuffrage("c", raftstore.Nonvoter)
	for _, name := range []string{"a", "b", "c"} {
		n := f.fsm.Node(name)
		if n == nil || n.GrpcAddress != name+":8400" || n.RaftAddress != name+":8401" || n.Health != pb.Health_PASSING {
			t.Errorf("registry node %s = %v, want it recorded passing with its addresses", name, n)
		}
	}
	// A second pass changes nothing.
	rev := f.next
	f.pass(time.Second)
	if f.next != rev || len(f.raft.servers) != 4 {
		t.Errorf("a second pass wrote %d entries; servers %+v", f.next-rev, f.raft.servers)
	}
}

// TestReconcileAddsANewVoterAsANonvoterFirst: a voter hashicorp/raft adds
// at once may be committed by the leader and the new agent alone; a
// follower that has not stored it refuses the new agent's votes, and with
// the leader gone then no one can be elected. Added as a nonvoter first,
// the agent is in a majority's configuration before it counts.
func TestReconcileAddsANewVoterAsANonvoterFirst(t *testing.T) {
	f := newReconcileFixture(t, 3, voter("self"), voter("a"))
	f.gossip("a", gossip.StatusAlive, "b", gossip.StatusAlive)
	f.pass(0)
	f.wantSuffrage("b", raftstore.Voter)
	if want := []string{"nonvoter b", "voter b"}; !slices.Equal(f.raft.changes, want) {
		t.Errorf("configuration changes %q, want %q", f.raft.changes, want)
	}
	// A nonvoter promoted, or a voter's address updated, is in every
	// configuration already: one change.
	f = newReconcileFixture(t, 3, voter("self"), voter("a"), nonvoter("b"))
	f.gossip("a", gossip.StatusAlive, "b", gossip.StatusAlive)
	f.pass(0)
	if want := []string{"voter b"}; !slices.Equal(f.raft.changes, want) {
		t.Errorf("promoting a nonvoter: changes %q, want %q", f.raft.changes, want)
	}
}

// A new agent that has not received the cluster's log (its gossip meta
// carries no cluster id) stays a nonvoter while voters are missing: as a
// voter it would refuse every vote until a leader sent it the log, and a
// leader that stepped down could not be elected again where its vote is
// needed. It is promoted once its meta shows the cluster's id.
func TestReconcilePromotesANewAgentOnlyOnceItHasTheLog(t *testing.T) {
	f := newReconcileFixture(t, 3, voter("self"))
	f.r.clusterID = func() string { return "c1" }
	f.gossip("a", gossip.StatusAlive)
	withLog := func(id string) {
		for i := range f.members {
			f.members[i].Meta.FSMVersion, f.members[i].Meta.ClusterID = raftstore.FSMVersion, id
		}
	}
	withLog("")
	f.pass(0)
	f.wantSuffrage("a", raftstore.Nonvoter)
	f.pass(time.Second)
	if want := []string{"nonvoter a"}; !slices.Equal(f.raft.changes, want) {
		t.Errorf("before a has the log: changes %q, want %q", f.raft.changes, want)
	}
	withLog("c1")
	f.pass(2 * time.Second)
	f.wantSuffrage("a", raftstore.Voter)
	if want := []string{"nonvoter a", "voter a"}; !slices.Equal(f.raft.changes, want) {
		t.Errorf("once a has the log: changes %q, want %q", f.raft.changes, want)
	}
	// A voter (here one whose disk was replaced) is not demoted.
	withLog("")
	f.pass(3 * time.Second)
	f.wantSuffrage("a", raftstore.Voter)
}

func TestReconcileFollowsAServersNewAddress(t *testing.T) {
	f := newReconcileFixture(t, 3, voter("self"), voter("a"), nonvoter("b"))
	f.record("a", "b")
	f.gossip("a", gossip.StatusAlive, "b", gossip.StatusAlive)
	for i := range f.members {
		f.members[i].Meta.RaftAddr = f.members[i].Name + ":9401"
	}
	f.pass(0)
	for _, s := range f.raft.servers[1:] {
		if s.Address != s.ID+":9401" {
			t.Errorf("server %s at %s, want its new address", s.ID, s.Address)
		}
	}
	f.wantSuffrage("a", raftstore.Voter)
	if n := f.fsm.Node("a"); n.GetRaftAddress() != "a:9401" {
		t.Errorf("registry keeps a's old address: %v", n)
	}
}

func TestReconcilePromotesANonvoterOnceAVoterIsGone(t *testing.T) {
	f := newReconcileFixture(t, 3, voter("self"), voter("a"), voter("b"), nonvoter("c"))
	f.record("a", "b", "c")
	f.gossip("a", gossip.StatusAlive, "b", gossip.StatusFailed, "c", gossip.StatusAlive)
	f.pass(0)
	f.wantSuffrage("c", raftstore.Nonvoter) // b may come back
	f.pass(testReap + time.Second)
	f.pass(testReap + 2*time.Second)
	f.wantReaped("b")
	f.wantSuffrage("c", raftstore.Voter)
	f.wantSuffrage("a", raftstore.Voter)
}

// TestReconcileNeverPromotesANonVoter: an agent set non_voter is added as
// a nonvoter and stays one when a voter is lost (another agent takes the
// voter's place); one that was a voter before its setting changed is
// demoted.
func TestReconcileNeverPromotesANonVoter(t *testing.T) {
	f := newReconcileFixture(t, 3, voter("self"), voter("a"), voter("b"), nonvoter("c"))
	f.record("a", "b", "c")
	f.gossip("a", gossip.StatusAlive, "b", gossip.StatusFailed, "c", gossip.StatusAlive, "d", gossip.StatusAlive)
	setNonVoter(f, "c")
	f.pass(0)
	f.pass(testReap + time.Second)
	f.pass(testReap + 2*time.Second)
	f.wantReaped("b")
	f.wantSuffrage("c", raftstore.Nonvoter)
	f.wantSuffrage("d", raftstore.Voter)

	setNonVoter(f, "a") // restarted with non_voter while a voter
	f.pass(testReap + 3*time.Second)
	f.wantSuffrage("a", raftstore.Nonvoter)
	if !slices.Contains(f.raft.changes, "demote a") {
		t.Errorf("changes %v: a, set non_voter, was not demoted", f.raft.changes)
	}
	if slices.Contains(f.raft.changes, "voter c") {
		t.Errorf("changes %v: c, set non_voter, was made a voter", f.raft.changes)
	}
}

// TestReconcileDemotesANonVoterOnlyWhileTheOtherVotersMakeAQuorum: a
// voter restarted with non_voter while another voter is down is not
// demoted before that voter is back or reaped. Demoted at once, the
// voters left (self and the failed b) would need both for a majority: the
// leader could commit nothing more, not even b's reap, and the cluster
// would have no leader until b returned.
func TestReconcileDemotesANonVoterOnlyWhileTheOtherVotersMakeAQuorum(t *testing.T) {
	f := newReconcileFixture(t, 3, voter("self"), voter("a"), voter("b"))
	f.record("a", "b")
	f.gossip("a", gossip.StatusAlive, "b", gossip.StatusFailed)
	setNonVoter(f, "a")
	f.pass(0)
	f.pass(time.Second)
	f.wantSuffrage("a", raftstore.Voter)
	if slices.Contains(f.raft.changes, "demote a") {
		t.Fatalf("changes %v: a was demoted while b, the only other voter, is failed", f.raft.changes)
	}

	f.pass(testReap + time.Second) // b reaped: self alone is a majority of the voters left
	f.pass(testReap + 2*time.Second)
	f.wantReaped("b")
	f.wantSuffrage("a", raftstore.Nonvoter)
}

// setNonVoter makes gossip announce agent name non_voter.
func setNonVoter(f *reconcileFixture, name string) {
	for i := range f.members {
		if f.members[i].Name == name {
			f.members[i].Meta.NonVoter = true
		}
	}
}

func TestReconcileMarksAFailedMemberCriticalAndReapsItAfterTheDelay(t *testing.T) {
	f := newReconcileFixture(t, 3, voter("self"), voter("a"), voter("b"))
	f.record("a", "b")
	f.gossip("a", gossip.StatusAlive, "b", gossip.StatusFailed)
	f.pass(0)
	f.wantHealth("b", pb.Health_CRITICAL)
	f.wantHealth("a", pb.Health_PASSING)
	f.pass(testReap) // not past the delay yet
	f.wantHealth("b", pb.Health_CRITICAL)
	f.pass(testReap + time.Second)
	f.wantReaped("b")
	f.wantHealth("a", pb.Health_PASSING)
	// Passes after the reap write nothing more.
	before := f.next
	f.pass(testReap + 2*time.Second)
	if f.next != before {
		t.Errorf("%d more registry writes after the reap", f.next-before)
	}

	// b comes back: it is a Raft member and a node again, and what it kept
	// passes; its old session does not come back.
	f.gossip("a", gossip.StatusAlive, "b", gossip.StatusAlive)
	f.pass(testReap + 3*time.Second)
	f.wantHealth("b", pb.Health_PASSING)
	if in := f.fsm.Instance("api", "b"); in == nil || in.HealthOutput != health.AgentAliveAgain {
		t.Errorf("b's kept instance after b came back: %v, want passing with output %q", in, health.AgentAliveAgain)
	}
	if f.fsm.Instance("api", "b-s") != nil {
		t.Error("the instance of b's old session came back")
	}
}

// A new agent may register an instance before the leader records the
// agent: its first pass does not take that for an agent back after a
// reap, and leaves the instance's health alone.
func TestReconcileLeavesANewAgentsFirstInstancesAlone(t *testing.T) {
	f := newReconcileFixture(t, 3, voter("self"), voter("a"))
	f.record("a")
	if _, err := f.apply(t.Context(), &pb.Command{Kind: &pb.Command_Register{Register: &pb.Instance{
		Service: "api", Id: "c1", Node: "c", Address: "127.0.0.1:9002", Health: pb.Health_CRITICAL, HealthOutput: health.AwaitingFirstCheck}}}); err != nil {
		t.Fatal(err)
	}
	f.gossip("a", gossip.StatusAlive, "c", gossip.StatusAlive)
	f.pass(0)
	if f.fsm.Node("c") == nil {
		t.Fatal("the new agent c was not recorded")
	}
	if in := f.fsm.Instance("api", "c1"); in == nil || in.Health != pb.Health_CRITICAL || in.HealthOutput != health.AwaitingFirstCheck {
		t.Errorf("c's first instance after c was recorded: %v, want it still critical, awaiting its first check", in)
	}
}

// An agent an operator removes (raft remove-peer) after it was reaped
// takes what it kept with it.
func TestReconcileRemovePeerAfterAReapRemovesWhatItKept(t *testing.T) {
	f := newReconcileFixture(t, 3, voter("self"), voter("a"), voter("b"))
	f.record("a", "b")
	f.gossip("a", gossip.StatusAlive, "b", gossip.StatusFailed)
	f.pass(0)
	f.pass(testReap + time.Second)
	f.wantReaped("b")
	if err := f.r.removeMember(t.Context(), "b", "removed by an operator (raft remove-peer)", map[string]raftstore.Server{}, false); err != nil {
		t.Fatal(err)
	}
	f.wantGone("b")
	f.wantHealth("a", pb.Health_PASSING)
}

func TestReconcileRemovesARaftServerUnknownToGossipAfterTheDelay(t *testing.T) {
	f := newReconcileFixture(t, 3, voter("self"), voter("a"), voter("ghost"))
	f.record("a", "ghost")
	f.gossip("a", gossip.StatusAlive)
	f.pass(0)
	f.pass(testReap)
	f.wantSuffrage("ghost", raftstore.Voter)
	f.pass(testReap + time.Second)
	f.wantReaped("ghost")
}

// An agent the registry records (with what it owns) but neither gossip
// nor Raft knows, as after the restore of another cluster's snapshot, is
// removed after the reap delay, not before.
func TestReconcileRemovesARecordedAgentUnknownToGossipAndRaftAfterTheDelay(t *testing.T) {
	f := newReconcileFixture(t, 3, voter("self"))
	f.record("self", "ghost")
	f.pass(0)
	f.pass(testReap)
	if f.fsm.Node("ghost") == nil || !f.fsm.NodeOwnsAnything("ghost") {
		t.Fatal("the unknown agent was removed before the reap delay")
	}
	f.pass(testReap + time.Second)
	f.wantReaped("ghost")
	if f.fsm.Node("self") == nil || !f.fsm.NodeOwnsAnything("self") {
		t.Fatal("the leader's own record was removed")
	}
}

func TestReconcileRemovesALeftMemberAtOnce(t *testing.T) {
	f := newReconcileFixture(t, 3, voter("self"), voter("a"), nonvoter("b"))
	f.record("a", "b")
	f.gossip("a", gossip.StatusLeft, "b", gossip.StatusLeft)
	f.pass(0)
	f.wantGone("a")
	f.wantGone("b")
}

func TestReconcileKeepsAMemberThatComesBackBeforeTheReap(t *testing.T) {
	f := newReconcileFixture(t, 3, voter("self"), voter("a"), voter("b"))
	f.record("a", "b")
	f.gossip("a", gossip.StatusAlive, "b", gossip.StatusFailed)
	f.pass(0)
	f.wantHealth("b", pb.Health_CRITICAL)
	f.gossip("a", gossip.StatusAlive, "b", gossip.StatusAlive)
	f.pass(testReap / 2)
	f.wantHealth("b", pb.Health_PASSING)
	f.wantSuffrage("b", raftstore.Voter)
	// Failing again starts a new delay: the first failure does not count.
	f.gossip("a", gossip.StatusAlive, "b", gossip.StatusFailed)
	f.pass(testReap + time.Second)
	f.wantHealth("b", pb.Health_CRITICAL)
	f.wantSuffrage("b", raftstore.Voter)
	f.pass(2*testReap + 2*time.Second)
	f.wantReaped("b")
}

func TestReconcileIgnoresClientsAndWaitsForGossip(t *testing.T) {
	f := newReconcileFixture(t, 3, voter("self"))
	client := member("cli", gossip.StatusAlive)
	client.Meta.Role = "client"
	f.members = []gossip.Member{client}
	f.pass(0)
	if len(f.raft.servers) != 1 || f.fsm.Node("cli") != nil {
		t.Errorf("a client agent was made a member: servers %+v, node %v", f.raft.servers, f.fsm.Node("cli"))
	}
	f.r.members = func() []gossip.Member { return nil } // gossip not started
	f.raft.servers = append(f.raft.servers, voter("x"))
	f.pass(testReap * 2)
	f.wantSuffrage("x", raftstore.Voter)
	if got := fmt.Sprint(f.r.failedSince); got != "map[]" {
		t.Errorf("a pass without gossip recorded failures: %s", got)
	}
}

// keptCounter counts the registry walks of KeptInstances.
type keptCounter struct {
	nodeTable
	walks int
}

func (k *keptCounter) KeptInstances(name string) []*pb.InstanceRef {
	k.walks++
	return k.nodeTable.KeptInstances(name)
}

// A pass over agents the registry records does not walk the registry for
// what a reap kept (reconcile runs every second on the leader, and the
// walk visits every instance); an agent without a record is looked up.
func TestReconcileLooksForKeptInstancesOnlyForAnAgentWithoutARecord(t *testing.T) {
	f := newReconcileFixture(t, 3, voter("self"), voter("a"), voter("b"))
	f.record("a", "b")
	counter := &keptCounter{nodeTable: f.fsm}
	f.r.nodes = counter
	f.gossip("a", gossip.StatusAlive, "b", gossip.StatusAlive)
	for i := range 3 {
		f.pass(time.Duration(i) * time.Second)
	}
	if counter.walks != 0 {
		t.Errorf("%d walks for kept instances over agents with records, want 0", counter.walks)
	}
	f.gossip("a", gossip.StatusAlive, "b", gossip.StatusAlive, "c", gossip.StatusAlive)
	f.pass(4 * time.Second)
	if counter.walks != 1 {
		t.Errorf("%d walks after agent c (no record) showed up, want 1", counter.walks)
	}
}

// TestReconcileReapRemovesEverythingWhileAnOlderBuildRuns: while a Raft
// server (or the agent reaped) runs a build whose state machine predates
// keep_unbound, a reap removes the agent's instances without a session
// too, as those replicas would, so that no two replicas differ.
func TestReconcileReapRemovesEverythingWhileAnOlderBuildRuns(t *testing.T) {
	f := newReconcileFixture(t, 3, voter("self"), voter("a"), voter("b"))
	var asked []string
	f.r.fsmVersion = func(names ...string) int {
		asked = append(asked, names...)
		return 1
	}
	f.record("a", "b")
	f.gossip("a", gossip.StatusAlive, "b", gossip.StatusFailed)
	f.pass(0)
	f.pass(testReap + time.Second)
	f.wantGone("b")
	if f.fsm.Instance("api", "b") != nil {
		t.Error("the reap kept b's instance without a session while an older build runs")
	}
	if !slices.Contains(asked, "b") {
		t.Errorf("the reap asked the versions of %v, want the reaped agent's among them", asked)
	}
}

// Gossip only infers that an agent failed: one whose gossip port is
// blocked, or whose gossip the leader's does not reach, may still run and
// serve its sessions. Past the reap delay, an agent that answers at its
// gRPC address stays a Raft server with its record and sessions (critical
// while gossip counts it failed), and no more is probed once nothing is
// left to remove; once it stops answering it is reaped.
func TestReconcileDoesNotReapAnAgentThatStillAnswers(t *testing.T) {
	cases := []struct {
		name   string
		gossip []string
	}{
		{"failed in gossip", []string{"b", gossip.StatusFailed}},
		{"unknown to gossip", nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newReconcileFixture(t, 3, voter("self"), voter("b"))
			f.record("b")
			answering, probes := true, 0
			f.r.answers = func(_ context.Context, name string) bool {
				probes++
				return name == "b" && answering
			}
			f.gossip(tc.gossip...)
			f.pass(0)
			f.pass(testReap + time.Second)
			f.pass(testReap + 2*time.Second)
			f.wantSuffrage("b", raftstore.Voter)
			if f.fsm.Node("b") == nil || !f.fsm.NodeHasSessions("b") || f.fsm.Instance("api", "b-s") == nil {
				t.Fatalf("an agent that answers lost its record (%v) or its session", f.fsm.Node("b"))
			}
			answering = false
			f.pass(testReap + 3*time.Second)
			f.wantReaped("b")
			before := probes
			f.pass(testReap + 4*time.Second)
			if probes != before {
				t.Errorf("the reaped agent was probed %d more times", probes-before)
			}
		})
	}
}

// TestAnswersAsFindsARunningAgentByItsName: the leader's probe before a
// reap finds a running agent of its cluster at the gRPC address its
// replica records; a name without an address and a halted agent do not
// answer.
func TestAnswersAsFindsARunningAgentByItsName(t *testing.T) {
	cfg1, cfg2 := testConfig(t), testConfig(t)
	cfg2.Name, cfg2.Bootstrap = "n2", false
	a := startNode(t, cfg1)
	b := startJoined(t, cfg2, a.gossip().LocalAddr())
	waitFor(t, 10*time.Second, "n1 records n2", func() bool { return a.Store().FSM().Node("n2") != nil })
	if !a.answersAs(ctxT(t), "n2") {
		t.Fatal("n2 runs but does not answer as n2")
	}
	if a.answersAs(ctxT(t), "n3") {
		t.Fatal("n3, which no agent is, answers")
	}
	b.Halt()
	if a.answersAs(ctxT(t), "n2") {
		t.Fatal("the halted n2 answers")
	}
}
