package raftstore

import (
	"fmt"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
)

// BenchmarkFSMMemoryPerInstance reports the heap a registry of 100,000
// instances holds per instance (indexes, the watch ring and the request
// table included), registered as zrpcregbench's scale phase registers
// them: 100 per service, a ~200-byte TTL instance with tags, zone, version
// and three metadata keys, each with its own request id.
//
//	go test -run '^$' -bench FSMMemoryPerInstance -benchtime 1x ./raftstore/
func BenchmarkFSMMemoryPerInstance(b *testing.B) {
	const n = 100_000
	for range b.N {
		before := heapNow()
		f := loadBenchRegistry(b, n)
		after := heapNow()
		runtime.KeepAlive(f)
		b.ReportMetric(float64(after-before)/n, "heap-B/instance")
	}
}

// BenchmarkWatchSnapshotOfEverything: a watch of every service of 100,000
// instances, its pages built and encoded as the gRPC API sends them.
//
//	go test -run '^$' -bench WatchSnapshotOfEverything -benchtime 3x ./raftstore/
func BenchmarkWatchSnapshotOfEverything(b *testing.B) {
	f := loadBenchRegistry(b, 100_000)
	b.ResetTimer()
	for range b.N {
		w := f.Watch("", 0)
		w.EncodeSnapshots()
		for more := true; more; {
			resp, err := w.Next(b.Context())
			if err != nil {
				b.Fatal(err)
			}
			if _, err := proto.Marshal(resp); err != nil {
				b.Fatal(err)
			}
			more = resp.More
		}
		w.Close()
	}
}

// loadBenchRegistry returns an FSM holding n instances registered as
// zrpcregbench's scale phase registers them.
func loadBenchRegistry(b *testing.B, n int) *FSM {
	d := newFSMDriver(b, 1<<16)
	logs := make([]*raft.Log, 0, 64)
	for i := range n {
		inst := &pb.Instance{
			Service: fmt.Sprintf("scale-%05d.rpc", i/100), Id: fmt.Sprintf("i%07d", i),
			Node: "z1", Address: "127.0.0.1:" + strconv.Itoa(10000+i%50000), Weight: 100,
			Zone: "zone-a", Version: "v1.2.3", Tags: []string{"primary", "canary"},
			Metadata: map[string]string{"region": "eu-west", "owner": "team-users", "stamp": strconv.FormatInt(time.Now().UnixNano(), 10)},
			Check:    &pb.Check{Ttl: durationpb.New(time.Hour)},
			Health:   pb.Health_PASSING,
		}
		cmd := registerCmd(inst)
		cmd.RequestId = fmt.Sprintf("bench-%016x", i)
		logs = append(logs, d.nextLog(cmd))
		if len(logs) == cap(logs) || i == n-1 {
			d.fsm.ApplyBatch(logs)
			logs = logs[:0]
		}
	}
	return d.fsm
}

func heapNow() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}
