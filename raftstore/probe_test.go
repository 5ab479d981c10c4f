package raftstore

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/zrpcio/zrpc/api/apierr"
)

// TestNonVoterWithoutALeaderCountsTheVotersThatAnswer: a non-voter that
// knows no leader asks the voters. While a majority of them answer (here
// two of three that answer but elect no leader, as in a long election)
// it waits for the winner and is not cut off; once fewer answer than a
// leader needs, it counts itself cut off a second or so later, long
// before StaleReadBound (an hour here): its writes fail at once, not
// applied, saying so, and its watches that require a leader end. When a
// majority answers again it is back in contact.
func TestNonVoterWithoutALeaderCountsTheVotersThatAnswer(t *testing.T) {
	stores := openCluster(t, 3, func(i int, cfg *Config) { cfg.StaleReadBound = time.Hour })
	var answering atomic.Pointer[map[string]bool]
	answer := func(ids ...string) {
		m := map[string]bool{}
		for _, id := range ids {
			m[id] = true
		}
		answering.Store(&m)
	}
	answer("n1", "n2", "n3")
	asked := make(chan string, 100)
	probe := func(ctx context.Context, id string) error {
		select {
		case asked <- id:
		default:
		}
		if (*answering.Load())[id] {
			return nil
		}
		<-ctx.Done()
		return ctx.Err()
	}
	nv := joinNonVoter(t, stores, time.Hour, func(s *Store) { s.SetVoterProbe(probe) })
	if len(asked) != 0 {
		t.Fatalf("n4 asked voter %s while it knew a leader", <-asked)
	}

	// No leader can be elected: n3 is alone. n2 is gone too, but "answers".
	answer("n2", "n3")
	stores[0].Close()
	stores[1].Close()
	eventually(t, 10*time.Second, "n4 knows no leader", func() bool { _, id := nv.Leader(); return id == "" })
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if err := nv.cutOffNow(); err != nil {
			t.Fatalf("n4, without a leader but answered by two of three voters, is cut off: %v", err)
		}
	}
	if len(asked) == 0 {
		t.Fatal("n4 knows no leader and asked no voter")
	}

	answer("n3")
	want := "it is a nonvoter that knows no leader, and only 1 of the 3 voters have sent it a Raft message or answered it within 1s, fewer than the 2 a leader needs"
	eventually(t, 10*time.Second, "n4 cut off with one voter answering", nv.CutOff)
	if _, err := nv.LeaderContact(); !errors.Is(err, ErrStaleRead) || !strings.Contains(err.Error(), want) {
		t.Fatalf("LeaderContact on n4 = %v, want ErrStaleRead saying %q", err, want)
	}
	f := NewForwarder(nv, ForwardConfig{LeaderWait: time.Hour, Dial: newTestDialer(t).dial})
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	_, err := f.Apply(ctx, registerCmd(testInstance("api", "0", "n1")))
	if !errors.Is(err, ErrNoLeader) || !strings.Contains(err.Error(), "this agent is cut off from the leader: "+want) || !apierr.IsNotApplied(err) {
		t.Fatalf("Apply on n4 = %v, want ErrNoLeader saying %q, marked not applied", err, want)
	}
	if ctx.Err() != nil {
		t.Fatalf("Apply on n4 waited until the caller's deadline: %v", err)
	}
	// What a put asks before it acts on the agent's own view: the same.
	if err := f.CutOff(); !errors.Is(err, ErrNoLeader) || !strings.Contains(err.Error(), want) || !apierr.IsNotApplied(err) {
		t.Fatalf("CutOff on n4 = %v, want ErrNoLeader saying %q, marked not applied", err, want)
	}

	answer()
	eventually(t, 10*time.Second, "n4 cut off with no voter answering", func() bool {
		err := nv.cutOffNow()
		return err != nil && strings.Contains(err.Error(), "none of the 3 voters has sent it a Raft message or answered it within 1s")
	})
	answer("n2", "n3")
	eventually(t, 10*time.Second, "n4 back in contact once two voters answer", func() bool { return !nv.CutOff() })
	if err := f.CutOff(); err != nil {
		t.Fatalf("CutOff on n4 in contact = %v, want nil", err)
	}
}
