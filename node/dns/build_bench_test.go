package dns

import (
	"fmt"
	"net"
	"strings"
	"testing"

	"github.com/hashicorp/raft"
	"github.com/miekg/dns"
	"google.golang.org/protobuf/proto"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/raftstore"
)

// BenchmarkDNSBuildLargeMostlyCriticalService: building the records of a
// service of 100,000 instances, 90% of them critical (each with metadata,
// the critical ones with a health output), read from a registry replica:
// what the first question after each change costs.
//
//	go test -run '^$' -bench BuildLargeMostlyCritical -benchtime 20x ./node/dns/
func BenchmarkDNSBuildLargeMostlyCriticalService(b *testing.B) {
	const n = 100_000
	fsm := raftstore.NewFSM(1024)
	logs := make([]*raft.Log, 0, 256)
	for i := range n {
		inst := &pb.Instance{
			Service: "user.rpc", Id: fmt.Sprintf("i%06d", i), Node: "n1",
			Address: net.JoinHostPort(net.IPv4(10, byte(i>>16), byte(i>>8), byte(i)).String(), "9000"),
			Weight:  100, Zone: "eu-1", Tags: []string{"v2"},
			Metadata: map[string]string{"owner": "team-users", "region": "eu-west"},
			Health:   pb.Health_PASSING,
		}
		if i%10 != 0 {
			inst.Health, inst.HealthOutput = pb.Health_CRITICAL, strings.Repeat("connection refused; ", 10)
		}
		data, err := proto.Marshal(&pb.Command{Kind: &pb.Command_Register{Register: inst}})
		if err != nil {
			b.Fatal(err)
		}
		logs = append(logs, &raft.Log{Index: uint64(i + 1), Term: 1, Type: raft.LogCommand, Data: data})
		if len(logs) == cap(logs) || i == n-1 {
			fsm.ApplyBatch(logs)
			logs = logs[:0]
		}
	}
	if got := fsm.InstanceCount(); got != n {
		b.Fatalf("%d instances registered, want %d", got, n)
	}
	m := new(dns.Msg)
	m.SetQuestion("user.rpc.service.zrpc.", dns.TypeA)
	b.ReportAllocs()
	for b.Loop() {
		h := testHandler(b, Config{Registry: fsm}) // nothing cached
		if resp := h.answer(m, true); len(resp.Answer) == 0 {
			b.Fatal("no A record")
		}
	}
}

// BenchmarkDNSAnswerVeryLargeServiceOverTCP: an SRV question over TCP for
// the cached records of a service of 100,000 instances: 4,097 of them
// drawn, cut to 64 KiB with their targets' addresses, and packed.
//
//	go test -run '^$' -bench VeryLargeServiceOverTCP ./node/dns/
func BenchmarkDNSAnswerVeryLargeServiceOverTCP(b *testing.B) {
	reg := &liveRegistry{rev: 1, insts: map[string][]*pb.Instance{"user.rpc": manyInstances("user.rpc", 100_000)}}
	h := testHandler(b, Config{Registry: reg})
	m := new(dns.Msg)
	m.SetQuestion("user.rpc.service.zrpc.", dns.TypeSRV)
	h.answer(m, false)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := h.answer(m, false).Pack(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDNSPick: the order of a TCP answer of a large service, at
// most 4,097 records of 100,000.
func BenchmarkDNSPick(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		pick(100_000, dns.MaxMsgSize/minRecordLen+1)
	}
}
