package raftstore

import (
	"testing"
	"time"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
)

// BenchmarkConsistentRead: a CONSISTENT read check on the leader of three
// stores on loopback, one at a time, with no writes (VerifyLeader's
// heartbeat round trip and the wait for answers to requests sent after the
// read began).
//
//	go test -run '^$' -bench ConsistentRead -count 5 ./raftstore/
func BenchmarkConsistentRead(b *testing.B) {
	stores := openCluster(b, 3)
	leader := leaderOf(b, stores)
	mustStoreApply(b, leader, registerCmd(testInstance("api", "0", "n1")))
	eventually(b, 10*time.Second, "CONSISTENT reads on the leader", func() bool {
		return leader.CheckRead(pb.Consistency_CONSISTENT) == nil
	})
	for b.Loop() {
		if err := leader.CheckRead(pb.Consistency_CONSISTENT); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDefaultReadOnLeader: a DEFAULT read check on the leader of
// three stores (whether a quorum of voters answered it within the bound).
//
//	go test -run '^$' -bench DefaultReadOnLeader -count 5 ./raftstore/
func BenchmarkDefaultReadOnLeader(b *testing.B) {
	stores := openCluster(b, 3)
	leader := leaderOf(b, stores)
	mustStoreApply(b, leader, registerCmd(testInstance("api", "0", "n1")))
	for b.Loop() {
		if err := leader.CheckRead(pb.Consistency_DEFAULT); err != nil {
			b.Fatal(err)
		}
	}
}
