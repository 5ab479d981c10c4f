package raftstore

import (
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/zrpcio/zrpc/internal/testwait"
)

// refusingLog refuses appends and truncations while refuse is set.
type refusingLog struct {
	raft.LogStore
	refuse *atomic.Bool
}

var errDiskRefused = errors.New("input/output error")

func (l refusingLog) StoreLog(log *raft.Log) error { return l.StoreLogs([]*raft.Log{log}) }

func (l refusingLog) StoreLogs(logs []*raft.Log) error {
	if l.refuse.Load() {
		return errDiskRefused
	}
	return l.LogStore.StoreLogs(logs)
}

func (l refusingLog) DeleteRange(min, max uint64) error {
	if l.refuse.Load() {
		return errDiskRefused
	}
	return l.LogStore.DeleteRange(min, max)
}

// TestAnAppendThatFailsAfterATailTruncationStopsTheNode: only then does
// raft's idea of its log part from the disk's.
func TestAnAppendThatFailsAfterATailTruncationStopsTheNode(t *testing.T) {
	inner := raft.NewInmemStore()
	if err := inner.StoreLogs([]*raft.Log{{Index: 1, Term: 1}, {Index: 2, Term: 1}, {Index: 3, Term: 1}, {Index: 4, Term: 1}}); err != nil {
		t.Fatal(err)
	}
	var refuse atomic.Bool
	var stops []string
	l := &stopOnWriteError{LogStore: refusingLog{inner, &refuse}, failed: func(err error) {
		if !errors.Is(err, errDiskRefused) {
			t.Errorf("stopped for %v, want the disk's error", err)
		}
		stops = append(stops, err.Error())
	}}
	step := func(what string, err error, wantErr bool, wantStops int) {
		t.Helper()
		if (err != nil) != wantErr {
			t.Fatalf("%s: %v, want an error: %v", what, err, wantErr)
		}
		if len(stops) != wantStops {
			t.Fatalf("after %s: %d stops (%v), want %d", what, len(stops), stops, wantStops)
		}
	}
	refuse.Store(true)
	step("a refused append", l.StoreLogs([]*raft.Log{{Index: 5, Term: 1}}), true, 0)
	step("a refused truncation of the tail", l.DeleteRange(4, 4), true, 0)
	step("a refused append after it", l.StoreLog(&raft.Log{Index: 5, Term: 1}), true, 0)
	refuse.Store(false)
	step("a compaction of the head", l.DeleteRange(1, 1), false, 0)
	refuse.Store(true)
	step("a refused append after the compaction", l.StoreLog(&raft.Log{Index: 5, Term: 1}), true, 0)
	refuse.Store(false)
	step("a truncation of the tail", l.DeleteRange(4, 4), false, 0)
	step("an append after it", l.StoreLog(&raft.Log{Index: 4, Term: 2}), false, 0)
	refuse.Store(true)
	step("a refused append after that append", l.StoreLog(&raft.Log{Index: 5, Term: 2}), true, 0)
	refuse.Store(false)
	step("another truncation of the tail", l.DeleteRange(3, 4), false, 0)
	refuse.Store(true)
	step("a refused append right after it", l.StoreLog(&raft.Log{Index: 3, Term: 3}), true, 1)
	if !strings.Contains(stops[0], "after truncating its tail") {
		t.Fatalf("stopped for %q, want it to say the append came after truncating the tail", stops[0])
	}
}

// TestFollowerWhoseLogRefusesAppendsCatchesUpWithoutARestart: a follower
// whose disk refuses appends for a while (full, say) refuses the entries,
// and catches up by itself once it takes them again; its Raft node runs
// on throughout.
func TestFollowerWhoseLogRefusesAppendsCatchesUpWithoutARestart(t *testing.T) {
	refuse := make([]*atomic.Bool, 3)
	stores := openCluster(t, 3, func(i int, cfg *Config) {
		refuse[i] = new(atomic.Bool)
		cfg.WrapLogStore = func(l raft.LogStore) raft.LogStore { return refusingLog{l, refuse[i]} }
	})
	leader := leaderOf(t, stores)
	mustStoreApply(t, leader, registerCmd(testInstance("api", "before", "n1")))
	var follower *Store
	var flag *atomic.Bool
	for i, s := range stores {
		if s != leader && follower == nil {
			follower, flag = s, refuse[i]
		}
	}
	flag.Store(true)
	rev := mustStoreApply(t, leader, registerCmd(testInstance("api", "while", "n1")))
	time.Sleep(300 * time.Millisecond) // appends refused meanwhile
	if follower.FSM().Revision() >= rev {
		t.Fatalf("the follower whose log refuses appends applied revision %d", follower.FSM().Revision())
	}
	flag.Store(false)
	testwait.For(t, 10*time.Second, "the follower to catch up", func() bool { return follower.FSM().Revision() >= rev })
	select {
	case <-follower.Failed():
		t.Fatalf("the follower stopped: %s", follower.StoppedBy())
	default:
	}
	if st := follower.Status(); st.State == Shutdown || st.Stopped != "" {
		t.Fatalf("the follower is %v, stopped %q; want its Raft node running", st.State, st.Stopped)
	}
}
