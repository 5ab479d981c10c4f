package raftstore

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	"github.com/zrpcio/zrpc/internal/testwait"
)

// appendGate records the batches raft appends to the log store and, once
// armed, holds the next append until it is released.
type appendGate struct {
	raft.LogStore
	mu      sync.Mutex
	batches []int // entries of each StoreLogs call since armed
	armed   bool
	held    chan struct{} // closed once an append is held
	release chan struct{}
}

func (g *appendGate) StoreLogs(logs []*raft.Log) error {
	g.mu.Lock()
	hold := g.armed && len(g.batches) == 0
	if g.armed {
		g.batches = append(g.batches, len(logs))
	}
	g.mu.Unlock()
	if hold {
		close(g.held)
		<-g.release
	}
	return g.LogStore.StoreLogs(logs)
}

func (g *appendGate) arm() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.armed, g.batches = true, nil
	g.held, g.release = make(chan struct{}), make(chan struct{})
}

func (g *appendGate) appended() []int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]int(nil), g.batches...)
}

// TestConcurrentProposalsShareOneLogAppend: writes proposed while the
// leader is appending (and fsyncing) an earlier one wait and are then
// appended together, one log append and fsync for all of them, not one
// each.
func TestConcurrentProposalsShareOneLogAppend(t *testing.T) {
	gate := &appendGate{}
	stores := openCluster(t, 1, func(_ int, cfg *Config) {
		cfg.WrapLogStore = func(l raft.LogStore) raft.LogStore { gate.LogStore = l; return gate }
	})
	s := leaderOf(t, stores)
	mustStoreApply(t, s, registerCmd(testInstance("api", "warm", "n1")))
	// The new leader's barrier, proposed from a goroutine of its own, must
	// not join the batch counted below.
	testwait.For(t, 10*time.Second, "the leader's barrier applied", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.leaderReady
	})
	gate.arm()
	first := make(chan error, 1)
	go func() {
		_, err := s.Apply(t.Context(), registerCmd(testInstance("api", "first", "n1")))
		first <- err
	}()
	<-gate.held
	const waiting = 20
	futures := make([]raft.ApplyFuture, waiting)
	for i := range futures {
		b, err := proto.Marshal(registerCmd(testInstance("api", fmt.Sprint(i), "n1")))
		if err != nil {
			t.Fatal(err)
		}
		futures[i] = s.raft.Apply(b, 10*time.Second) // queued: raft's loop is appending
	}
	close(gate.release)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	for i, f := range futures {
		if err := f.Error(); err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
	}
	testwait.For(t, 10*time.Second, "every write applied", func() bool {
		insts, _ := s.FSM().Instances("api")
		return len(insts) == waiting+2
	})
	if got := gate.appended(); fmt.Sprint(got) != fmt.Sprint([]int{1, waiting}) {
		t.Fatalf("log appends of %v entries, want [1 %d]: the writes that waited appended together", got, waiting)
	}
}
