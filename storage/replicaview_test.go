package storage

// What the blob store makes of this agent's own view of the cluster: the
// agents its gossip sees down, and a replica that cannot vouch for a
// blob it lacks.

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/zrpcio/zrpc/api/apierr"
	pb "github.com/zrpcio/zrpc/api/zrpcpb"
)

// threeAgentBlob is the store of agent n1 of three, all passing in the
// registry, holding a 2+1 blob called name with a shard on each; and a
// context for the test's calls.
func threeAgentBlob(t *testing.T, name string) (*Store, *fakeCluster, context.Context) {
	t.Helper()
	s, fc := newTestStore(t, Config{}, "n1", "n1", "n2", "n3")
	commitBlob(t, fc, name, 2, 1, "n1", "n2", "n3")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return s, fc, ctx
}

// TestAgentsGossipDeclaredFailedAreNotAliveForTheBlobStore: the registry
// still records n2 and n3 passing (without a leader nobody records their
// failure), but this agent's gossip has declared them failed. Stat must
// call the blob unreadable and name their shards node-failed, List must
// say unreadable, Locate must give no address for them; this agent's own
// name never counts as down, and the blob is healthy again once gossip
// sees them back.
func TestAgentsGossipDeclaredFailedAreNotAliveForTheBlobStore(t *testing.T) {
	s, fc, ctx := threeAgentBlob(t, "held")

	check := func(when, wantHealth string, wantState map[string]string) {
		t.Helper()
		st, err := s.Stat(ctx, "held", 0, pb.Consistency_DEFAULT)
		if err != nil {
			t.Fatalf("%s: stat: %v", when, err)
		}
		if st.Health != wantHealth {
			t.Errorf("%s: stat says %s, want %s", when, st.Health, wantHealth)
		}
		for _, sh := range st.Shards {
			if sh.State != wantState[sh.Node] {
				t.Errorf("%s: shard %d on %s is %s, want %s", when, sh.Index, sh.Node, sh.State, wantState[sh.Node])
			}
		}
		list, _, err := s.List(ctx, "held", pb.Consistency_DEFAULT)
		if err != nil || len(list) != 1 || list[0].Health != wantHealth {
			t.Errorf("%s: list = %v (%v), want held %s", when, list, err, wantHealth)
		}
		b, addrs, err := s.Locate(ctx, "held", 0, pb.Consistency_DEFAULT)
		if err != nil {
			t.Fatalf("%s: locate: %v", when, err)
		}
		for i, node := range b.Nodes {
			if up := wantState[node] == ShardOK; up != (addrs[i] != "") {
				t.Errorf("%s: locate gives %s the address %q; its shards are %s", when, node, addrs[i], wantState[node])
			}
		}
	}

	check("all passing", HealthHealthy, map[string]string{"n1": ShardOK, "n2": ShardOK, "n3": ShardOK})
	fc.setGossipDown("n2", true)
	check("n2 failed in gossip", HealthDegraded, map[string]string{"n1": ShardOK, "n2": ShardNodeFailed, "n3": ShardOK})
	fc.setGossipDown("n3", true)
	fc.setGossipDown("n1", true) // its own name: gossip about itself is not believed
	check("n2 and n3 failed in gossip", HealthUnreadable, map[string]string{"n1": ShardOK, "n2": ShardNodeFailed, "n3": ShardNodeFailed})
	fc.setGossipDown("n2", false)
	fc.setGossipDown("n3", false)
	check("n2 and n3 back", HealthHealthy, map[string]string{"n1": ShardOK, "n2": ShardOK, "n3": ShardOK})
}

// TestBlobReadsDoNotCallAMissingBlobGoneFromAReplicaThatCannotTell: with
// no leader to ask and a replica that fails the registry's DEFAULT read
// check (a restarted agent still replaying its log), a blob the replica
// lacks is not "not found" but a stale read, and so is a list; STALE
// answers from the replica as it is; a blob the replica holds is served
// either way; CONSISTENT needs a leader; an unknown consistency is refused.
func TestBlobReadsDoNotCallAMissingBlobGoneFromAReplicaThatCannotTell(t *testing.T) {
	s, fc, ctx := threeAgentBlob(t, "known")
	const (
		dflt   = pb.Consistency_DEFAULT
		stale  = pb.Consistency_STALE
		strict = pb.Consistency_CONSISTENT
	)

	// With a leader, a missing blob is simply not found.
	if _, err := s.Stat(ctx, "missing", 0, dflt); !errors.Is(err, ErrNotFound) {
		t.Fatalf("stat of a missing blob with a leader: %v, want NotFound", err)
	}

	fc.leaderless.Store(true)
	replaying := fmt.Errorf("%w: this agent is still replaying its Raft log after a restart", ErrStaleRead)
	fc.readCheck.Store(&replaying)
	for _, c := range []pb.Consistency{dflt, strict} {
		if _, err := s.Stat(ctx, "missing", 0, c); errors.Is(err, ErrNotFound) || err == nil {
			t.Errorf("stat %v of a blob the replica lacks, no leader: %v; want an error other than NotFound", c, err)
		}
		if _, _, err := s.Locate(ctx, "missing", 0, c); errors.Is(err, ErrNotFound) || err == nil {
			t.Errorf("locate %v of a blob the replica lacks, no leader: %v; want an error other than NotFound", c, err)
		}
		if list, _, err := s.List(ctx, "", c); err == nil {
			t.Errorf("list %v, no leader, replica failing its read check: %v, want an error", c, list)
		}
	}
	if _, err := s.Stat(ctx, "missing", 0, dflt); !errors.Is(err, ErrStaleRead) {
		t.Errorf("stat of a blob the replica lacks, replica replaying: %v, want the read check's stale read", err)
	}
	if _, err := s.Stat(ctx, "missing", 0, stale); !errors.Is(err, ErrNotFound) {
		t.Errorf("STALE stat of a blob the replica lacks: %v, want NotFound", err)
	}
	if list, _, err := s.List(ctx, "", stale); err != nil || len(list) != 1 || list[0].Name != "known" {
		t.Errorf("STALE list: %v (%v), want the replica's one blob", list, err)
	}
	if st, err := s.Stat(ctx, "known", 0, dflt); err != nil || st.Blob.GetName() != "known" {
		t.Errorf("stat of a blob the replica holds, no leader: %v (%v), want it", st, err)
	}
	if _, err := s.Stat(ctx, "known", 0, strict); err == nil {
		t.Error("CONSISTENT stat with no leader succeeded; want an error")
	}

	// No leader, but a replica the read check vouches for (it heard from
	// a leader lately): a missing blob is not found again.
	fc.readCheck.Store(nil)
	if _, err := s.Stat(ctx, "missing", 0, dflt); !errors.Is(err, ErrNotFound) {
		t.Errorf("stat of a missing blob, no leader, recent replica: %v, want NotFound", err)
	}
	if list, _, err := s.List(ctx, "", dflt); err != nil || len(list) != 1 {
		t.Errorf("list, no leader, recent replica: %v (%v), want the one blob", list, err)
	}

	for _, call := range []func() error{
		func() error { _, err := s.Stat(ctx, "known", 0, 7); return err },
		func() error { _, _, err := s.List(ctx, "", -1); return err },
		func() error { _, _, err := s.Locate(ctx, "known", 0, 3); return err },
	} {
		if err := call(); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("a read with an unknown consistency: %v, want InvalidArgument", err)
		}
	}
}

// TestShardCallsDoNotCallAnUnknownBlobGoneFromAReplicaThatCannotCatchUp:
// with no leader to catch up with, a shard read of a blob version the
// replica lacks, and the commit or abort of a put it lacks, answer a stale
// read (no leader), not "not found" (a commit told "not found" would abort a put that
// may well be pending, an abort would claim one ended). A scrub pass
// reports no lost shard then: the replica may still place here a shard of
// a blob deleted since. With the leader back, each says not found again,
// and the scrubber reports the shard the disk lacks.
func TestShardCallsDoNotCallAnUnknownBlobGoneFromAReplicaThatCannotCatchUp(t *testing.T) {
	s, fc, ctx := threeAgentBlob(t, "known") // its shard on n1 was never written
	unknown := strings.Repeat("cd", 16)
	calls := map[string]func() error{
		"read shards": func() error {
			_, err := readShards(s, "known", unknown, [2]uint32{0, 0})
			return err
		},
		"commit put": func() error {
			_, err := s.CommitPut(ctx, &pb.CommitPutRequest{Blob: &pb.Blob{Name: "other", Id: unknown}}, "")
			return err
		},
		"abort put": func() error {
			_, err := s.AbortPut(ctx, "other", unknown)
			return err
		},
	}

	fc.leaderless.Store(true)
	for name, call := range calls {
		if err := call(); !errors.Is(err, ErrStaleRead) && !errors.Is(err, apierr.ErrNoLeader) {
			t.Errorf("%s of an id the replica lacks, no leader: %v, want a stale read or no leader", name, err)
		}
	}
	if n := s.ScrubOnce(ctx, 0); n != 0 {
		t.Errorf("scrub with no leader reported %d shards, want none", n)
	}

	fc.leaderless.Store(false)
	for name, call := range calls {
		err := call()
		if name == "abort put" {
			if err != nil {
				t.Errorf("abort of a put that is not pending, with a leader: %v, want done already", err)
			}
		} else if !errors.Is(err, ErrNotFound) {
			t.Errorf("%s of an unknown id with a leader: %v, want NotFound", name, err)
		}
	}
	if n := s.ScrubOnce(ctx, 0); n != 1 {
		t.Errorf("scrub with a leader reported %d shards, want the one missing here", n)
	}
}
