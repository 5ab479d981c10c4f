package gossip

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/zrpcio/zrpc/internal/testport"
	"github.com/zrpcio/zrpc/internal/testwait"
)

const (
	clusterX = "0123456789abcdef0123456789abcdef"
	clusterY = "fedcba9876543210fedcba9876543210"
)

func inCluster(id string) func(*Config) {
	return func(c *Config) { c.Meta.ClusterID = id }
}

func TestMembersOfAnotherClusterAreRefused(t *testing.T) {
	a := startAgent(t, "a", inCluster(clusterX))
	b := startAgent(t, "b", inCluster(clusterX))
	if n, err := b.Join(context.Background(), []string{a.LocalAddr()}); err != nil || n != 1 {
		t.Fatalf("b joins a in the same cluster: joined %d, err %v", n, err)
	}
	// An agent not in any cluster yet is welcome.
	d := startAgent(t, "d", nil)
	if n, err := d.Join(context.Background(), []string{a.LocalAddr()}); err != nil || n != 1 {
		t.Fatalf("d (no cluster yet) joins a: joined %d, err %v", n, err)
	}

	c := startAgent(t, "c", inCluster(clusterY))
	for _, peer := range []*agent{a, b} {
		_, err := c.Join(context.Background(), []string{peer.LocalAddr()})
		if err == nil || !strings.Contains(err.Error(), clusterX) || !strings.Contains(err.Error(), clusterY) {
			t.Fatalf("c of cluster Y joins %s of cluster X: %v, want an error naming both clusters", peer.name, err)
		}
	}

	// d goes over to cluster Y: its new meta is refused by a and b, which
	// never see it in Y.
	dm := d.meta
	dm.ClusterID = clusterY
	if err := d.UpdateMeta(dm); err != nil {
		t.Fatalf("UpdateMeta: %v", err)
	}
	// Let gossip run: a meta update of a reaching b takes several rounds,
	// during which c, or d's new meta, would have shown up.
	am := a.meta
	am.Build = "v2"
	if err := a.UpdateMeta(am); err != nil {
		t.Fatalf("UpdateMeta: %v", err)
	}
	// The update goes out by UDP gossip; one lost packet (a loaded
	// machine) leaves it to a's and b's push/pull with each other, and
	// each picks d, which they refuse, half the time: allow many rounds.
	testwait.For(t, 45*time.Second, "b to see a's new meta", func() bool {
		m, _ := memberNamed(b.Gossip, "a")
		return m.Meta == am
	})
	for _, peer := range []*agent{a, b} {
		if _, ok := memberNamed(peer.Gossip, "c"); ok || peer.rec.mentions("c") {
			t.Errorf("%s knows c, a member of another cluster", peer.name)
		}
		if m, ok := memberNamed(peer.Gossip, "d"); ok && m.Meta.ClusterID == clusterY {
			t.Errorf("%s accepted d's meta of another cluster: %+v", peer.name, m.Meta)
		}
	}
	if ms := c.Members(); len(ms) != 1 {
		t.Errorf("c lists %+v, want only itself", ms)
	}
}

// TestRefusalsSayWhenAClusterWasRecovered: a cluster recovered from
// another (its meta's RecoveredFrom) is refused by the agents still in
// the other, each telling the operator that its own state is the stale
// one; the recovered cluster's agents refuse those agents, saying that
// they hold state from before the recovery; both are counted by reason.
func TestRefusalsSayWhenAClusterWasRecovered(t *testing.T) {
	const clusterZ = "00112233445566778899aabbccddeeff"
	for _, tc := range []struct {
		name           string
		own, former    string
		theirs, theirF string
		reason         Refusal
		says           string
	}{
		{"another cluster", clusterX, "", clusterY, "", RefusedOtherCluster, "is in cluster " + clusterY},
		{"state from before this cluster's recovery", clusterY, clusterX, clusterX, "", RefusedBeforeRecovery,
			"holds Raft state of cluster " + clusterX + " from before it was recovered"},
		{"this agent's cluster recovered elsewhere", clusterX, "", clusterY, clusterX, RefusedRecoveredElsewhere,
			"this agent's cluster " + clusterX + " was recovered (zrpcd agent recover) as cluster " + clusterY},
		{"recovered from a third cluster", clusterY, clusterZ, clusterX, "", RefusedOtherCluster, "is in cluster " + clusterX},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := newDelegate(slog.New(slog.DiscardHandler), "self", nil,
				func() (string, string) { return tc.own, tc.former }, newEventQueue())
			m := testMeta("p")
			m.ClusterID, m.RecoveredFrom = tc.theirs, tc.theirF
			for range 3 {
				err := d.NotifyAlive(fakeNode(t, "p", 1, m))
				if !errors.Is(err, ErrOtherCluster) || !strings.Contains(err.Error(), tc.says) {
					t.Fatalf("NotifyAlive: %v, want %v saying %q", err, ErrOtherCluster, tc.says)
				}
			}
			for r := range numRefusals {
				want := uint64(0)
				if r == tc.reason {
					want = 3
				}
				if got := d.refused[r].Load(); got != want {
					t.Errorf("refusals counted as %s: %d, want %d", r, got, want)
				}
			}
			m.ClusterID = tc.own
			if err := d.NotifyAlive(fakeNode(t, "p", 1, m)); err != nil {
				t.Errorf("a member of this agent's cluster: %v", err)
			}
		})
	}
}

func TestMetaClusterIDMustBeHex(t *testing.T) {
	m := testMeta("a")
	m.ClusterID = "not hex!"
	if _, err := m.encode(); err == nil || !strings.Contains(err.Error(), "cluster id") {
		t.Fatalf("encode with a non-hex cluster id: %v, want an error naming the cluster id", err)
	}
	m.ClusterID, m.RecoveredFrom = clusterX, "not hex!"
	if _, err := m.encode(); err == nil || !strings.Contains(err.Error(), "recovered-from cluster id") {
		t.Fatalf("encode with a non-hex recovered-from id: %v, want an error naming it", err)
	}
	m.RecoveredFrom = clusterY
	b, err := m.encode()
	if err != nil {
		t.Fatal(err)
	}
	got, err := decodeMeta(b)
	if err != nil || got != m {
		t.Fatalf("round trip: %+v, %v; want %+v", got, err, m)
	}
}

// TestNewAgentWithATakenNameIsRefused: an agent in no cluster yet that
// joins one where an alive agent has its name gets ErrNameTaken (JoinRetry
// stops once nameTakenWait has passed, naming both addresses) and the cluster keeps the other.
// An agent whose name is free joins as before.
func TestNewAgentWithATakenNameIsRefused(t *testing.T) {
	a := startAgent(t, "a", inCluster(clusterX))
	b := startAgent(t, "b", inCluster(clusterX))
	if _, err := b.Join(context.Background(), []string{a.LocalAddr()}); err != nil {
		t.Fatalf("b joins a: %v", err)
	}
	// b's Join returns once it has a's state; a merges b's after sending
	// its own, so the duplicate could find a not listing b yet.
	waitFor(t, "a to list b alive", func() bool { return hasStatus(a.Gossip, "b", StatusAlive) })
	dup := startAgent(t, "b", nil)
	dup.nameTakenWait = 2 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err := dup.JoinRetry(ctx, []string{a.LocalAddr()}, time.Second)
	if !errors.Is(err, ErrNameTaken) || !strings.Contains(err.Error(), b.LocalAddr()) || !strings.Contains(err.Error(), dup.LocalAddr()) {
		t.Fatalf("a second b joins: %v, want ErrNameTaken naming %s and %s", err, b.LocalAddr(), dup.LocalAddr())
	}
	if ctx.Err() != nil {
		t.Fatal("JoinRetry kept retrying a taken name")
	}
	if m, ok := memberNamed(a.Gossip, "b"); !ok || m.Addr != b.LocalAddr() || m.Status != StatusAlive {
		t.Errorf("a's member b after the refused join: %+v, want the first b, alive", m)
	}
	c := startAgent(t, "c", nil)
	if err := c.JoinRetry(ctx, []string{a.LocalAddr()}, time.Second); err != nil {
		t.Errorf("c, whose name is free, joins: %v", err)
	}
}

// A name-taken refusal is the error of the join whose merge it refused,
// and of no other: a merge refused for another join of this agent (the
// rejoin loop's and JoinRetry's run at the same time) or for an agent
// joining this one made the next join that failed for another reason
// report the name taken (and JoinRetry give up on it), while the join
// whose merge was refused reported memberlist's text, without
// ErrNameTaken.
func TestANameTakenRefusalIsTheErrorOfItsOwnJoinOnly(t *testing.T) {
	a := startAgent(t, "a", nil)
	// A merge refused, as memberlist calls NotifyMerge for an agent
	// joining a that knows another a.
	other := fakeNode(t, "a", 1, testMeta("a"))
	if err := a.delegate.NotifyMerge([]*memberlist.Node{other}); !errors.Is(err, ErrNameTaken) {
		t.Fatalf("merge naming a at %s: %v, want ErrNameTaken", other.Address(), err)
	}
	dead := testport.Unused(t)
	_, err := a.Join(context.Background(), []string{dead})
	if err == nil || errors.Is(err, ErrNameTaken) {
		t.Fatalf("a joins %s, where nothing listens: %v, want its own error, not ErrNameTaken", dead, err)
	}

	// The join whose merge is refused still reports ErrNameTaken, also
	// after that refusal was stored.
	b := startAgent(t, "b", nil)
	dup := startAgent(t, "a", nil)
	if _, err := a.Join(context.Background(), []string{b.LocalAddr()}); err != nil {
		t.Fatalf("a joins b: %v", err)
	}
	waitFor(t, "b to list a alive", func() bool { return hasStatus(b.Gossip, "a", StatusAlive) })
	for range 2 {
		_, err = dup.Join(context.Background(), []string{b.LocalAddr()})
		if !errors.Is(err, ErrNameTaken) || !strings.Contains(err.Error(), a.LocalAddr()) {
			t.Fatalf("a second a joins b: %v, want ErrNameTaken naming %s", err, a.LocalAddr())
		}
	}
}
