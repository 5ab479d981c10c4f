package raftstore

import (
	"fmt"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
)

// benchQuota is the registry limits an agent's leader sets on every
// registration by default (node.DefaultConfig).
var benchQuota = &pb.Quota{MaxInstancesPerService: 10000, MaxInstancesPerSession: 1000, MaxInstanceMetadataBytes: 16 << 10, MaxRegistryBytes: 512 << 20, RegistryOverheads: true}

// BenchmarkFSMApplyRegister measures the state machine's apply of a
// registration as the bench/registry load writes them (a ~200-byte TTL
// instance, new ids), in batches of 16 as raft hands them under load;
// every replica pays it for every write.
func BenchmarkFSMApplyRegister(b *testing.B) {
	f := NewFSM(1 << 16)
	const batch = 16
	logs := make([]*raft.Log, batch)
	now := time.Now().UnixNano()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i += batch {
		b.StopTimer()
		for j := range logs {
			n := i + j
			inst := &pb.Instance{
				Service: fmt.Sprintf("bench-r1-64-w%02d-%d.rpc", n%64, n/4096), Id: fmt.Sprintf("i%08d", n),
				Address: "127.0.0.1:9000", Node: "z1", Health: pb.Health_PASSING,
				Metadata: map[string]string{"payload": fmt.Sprintf("%0160d", n)},
				Check:    &pb.Check{Ttl: nil},
			}
			data, err := proto.Marshal(&pb.Command{Time: now, RequestId: fmt.Sprint("z1-", n), Kind: &pb.Command_Register{Register: inst}, Quota: benchQuota})
			if err != nil {
				b.Fatal(err)
			}
			logs[j] = &raft.Log{Index: uint64(n + 1), Term: 1, Type: raft.LogCommand, Data: data}
		}
		b.StartTimer()
		for j, r := range f.ApplyBatch(logs) {
			if err, ok := r.(error); ok {
				b.Fatalf("apply %d: %v", i+j, err)
			}
		}
	}
}
