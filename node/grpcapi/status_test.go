package grpcapi

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/raftstore"
)

// statusFake is an agent of three voters (n1 itself, n2, n3) that gossip
// all lists alive; answering says which peers answer their health check.
type statusFake struct {
	StatusAgent // what the test does not use: calling it panics
	leader      string
	stopped     string
	answering   map[string]bool

	mu    sync.Mutex
	asked []string
}

func (f *statusFake) RaftStatus() raftstore.Status {
	if f.stopped != "" {
		return raftstore.Status{State: raftstore.Shutdown, Stopped: f.stopped}
	}
	return raftstore.Status{State: raftstore.Candidate, LeaderID: f.leader}
}
func (f *statusFake) ClusterID() string     { return "c0ffee" }
func (f *statusFake) TLSExpires() time.Time { return time.Time{} }
func (f *statusFake) Forming() string       { return "" }
func (f *statusFake) HandoffShards() int    { return 0 }
func (f *statusFake) Servers() ([]raftstore.Server, error) {
	return []raftstore.Server{
		{ID: "n1", Address: "n1:8401", Suffrage: raftstore.Voter},
		{ID: "n2", Address: "n2:8401", Suffrage: raftstore.Voter},
		{ID: "n3", Address: "n3:8401", Suffrage: raftstore.Voter},
		{ID: "n4", Address: "n4:8401", Suffrage: raftstore.Nonvoter},
	}, nil
}
func (f *statusFake) Quorum() (raftstore.Quorum, error) { return raftstore.Quorum{Voters: 3}, nil }
func (f *statusFake) PeerAnswers(_ context.Context, addr string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.asked = append(f.asked, addr)
	if f.answering[addr] {
		return nil
	}
	return errors.New("deadline exceeded")
}

type replicaFake struct{}

func (replicaFake) Revision() uint64 { return 7 }
func (replicaFake) Node(name string) *pb.Node {
	return &pb.Node{Name: name, GrpcAddress: name + ":8400"}
}
func (replicaFake) ApplyHash(uint64) (uint64, bool) { return 0, false }
func (replicaFake) ApplyHashChainKnown() bool       { return true }

// TestStatusWithoutALeaderAsksTheVotersGossipStillCountsAlive: with no
// leader, gossip may list dead voters alive for seconds; Status asks each
// of them (not itself, not a nonvoter) and counts one that does not
// answer unreachable, "not answering". With a leader it asks nobody.
func TestStatusWithoutALeaderAsksTheVotersGossipStillCountsAlive(t *testing.T) {
	f := &statusFake{answering: map[string]bool{"n3:8400": true}}
	s := NewStatus(StatusConfig{Agent: "n1", Replica: replicaFake{}, Status: f})
	resp, err := s.Status(context.Background(), &pb.StatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if resp.Voters != 3 || resp.ReachableVoters != 2 || len(resp.UnreachableVoters) != 1 ||
		resp.UnreachableVoters[0].Name != "n2" || resp.UnreachableVoters[0].Status != notAnswering {
		t.Errorf("status without a leader: %d of %d reachable, unreachable %v; want 2 of 3, n2 %q",
			resp.ReachableVoters, resp.Voters, resp.UnreachableVoters, notAnswering)
	}
	if len(f.asked) != 2 {
		t.Errorf("asked %v, want n2 and n3 only", f.asked)
	}

	f.leader, f.asked = "n3", nil
	resp, err = s.Status(context.Background(), &pb.StatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if resp.ReachableVoters != 3 || len(f.asked) != 0 {
		t.Errorf("status with a leader: %d reachable, asked %v; want gossip's 3 and no one asked", resp.ReachableVoters, f.asked)
	}
}

// TestStatusSaysWhyTheRaftNodeStopped: an agent that stopped its Raft node
// (a failed fsync) answers Status with the state Shutdown and the reason.
func TestStatusSaysWhyTheRaftNodeStopped(t *testing.T) {
	why := "fsync of the Raft log failed (input/output error): check the disk, then restart the agent"
	f := &statusFake{stopped: why, answering: map[string]bool{"n2:8400": true, "n3:8400": true}}
	s := NewStatus(StatusConfig{Agent: "n1", Replica: replicaFake{}, Status: f})
	resp, err := s.Status(context.Background(), &pb.StatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if resp.RaftState != "Shutdown" || resp.RaftStopped != why {
		t.Fatalf("status of a stopped Raft node: state %q, stopped %q; want Shutdown, %q", resp.RaftState, resp.RaftStopped, why)
	}
	f.stopped = ""
	if resp, err = s.Status(context.Background(), &pb.StatusRequest{}); err != nil || resp.RaftStopped != "" {
		t.Fatalf("status of a running Raft node: stopped %q, err %v; want none", resp.GetRaftStopped(), err)
	}
}
