package dns_test

import (
	"fmt"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/internal/benchutil"
)

// benchAgent is an agent answering DNS, with a service of 10 passing
// instances.
func benchAgent(b *testing.B) string {
	c, server := dnsCluster(b)
	var insts []*pb.Instance
	for i := range 10 {
		insts = append(insts, &pb.Instance{Id: strconv.Itoa(i), Service: "user.rpc", Address: fmt.Sprintf("127.0.0.%d:9000", i+2)})
	}
	register(b, c, insts...)
	return server
}

// BenchmarkDNSQuery: one client asking SRV records over UDP, one query
// after the other (the latency of one query, and the rate one client
// reaches that way).
//
//	go test -run '^$' -bench BenchmarkDNSQuery ./node/dns/
func BenchmarkDNSQuery(b *testing.B) {
	server := benchAgent(b)
	conn, err := dns.Dial("udp", server)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	m := new(dns.Msg)
	m.SetQuestion("user.rpc.service.zrpc.", dns.TypeSRV)
	var lat benchutil.Latencies
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		m.Id = uint16(i)
		if err := conn.WriteMsg(m); err != nil {
			b.Fatal(err)
		}
		conn.SetReadDeadline(time.Now().Add(2 * time.Second))
		resp, err := conn.ReadMsg()
		if err != nil {
			b.Fatal(err)
		}
		if len(resp.Answer) != 10 {
			b.Fatalf("%d answers, want 10", len(resp.Answer))
		}
		lat.Add(time.Since(t0))
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "queries/s")
	lat.Report(b, "ms", 0.5, 0.99)
}

// BenchmarkDNSQueriesAt10kPerSecond: one client sends SRV queries over
// one UDP socket at a fixed 10,000 a second, whatever the answers do
// (an open loop, so a slow answer does not slow the sender down and hide
// itself), and measures each answer's latency from its query's send
// time; queries unanswered within 2 s count as lost. b.N queries.
// Client and agent share this process (its scheduler, its garbage
// collector): a pause of either shows in the other. bench/cmd/zrpcdnsbench
// (make bench-dns) measures the same from a process of its own against a
// zrpcd binary, the comparison to quote.
//
//	go test -run '^$' -bench BenchmarkDNSQueriesAt10kPerSecond -benchtime 50000x ./node/dns/
func BenchmarkDNSQueriesAt10kPerSecond(b *testing.B) {
	const rate = 10000
	server := benchAgent(b)
	conn, err := dns.Dial("udp", server)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	// Room for answers that arrive while the reader is descheduled: a
	// drop in the client's socket would count against the server.
	if err := conn.Conn.(*net.UDPConn).SetReadBuffer(4 << 20); err != nil {
		b.Fatal(err)
	}
	sent := make([]time.Time, 1<<16) // by query id; ids repeat after 65,536 queries, 6.5 s apart
	var mu sync.Mutex
	var lat benchutil.Latencies
	answered := 0
	done := make(chan struct{})
	go func() {
		defer close(done)
		for answered < b.N {
			conn.SetReadDeadline(time.Now().Add(2 * time.Second))
			resp, err := conn.ReadMsg()
			if err != nil {
				return // the rest are lost
			}
			mu.Lock()
			lat.Add(time.Since(sent[resp.Id]))
			mu.Unlock()
			answered++
		}
	}()
	m := new(dns.Msg)
	m.SetQuestion("user.rpc.service.zrpc.", dns.TypeSRV)
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		if wait := time.Until(start.Add(time.Duration(i) * time.Second / rate)); wait > 0 {
			time.Sleep(wait)
		}
		m.Id = uint16(i)
		mu.Lock()
		sent[m.Id] = time.Now()
		mu.Unlock()
		if err := conn.WriteMsg(m); err != nil {
			b.Fatal(err)
		}
	}
	sending := time.Since(start)
	<-done
	b.StopTimer()
	b.ReportMetric(float64(b.N)/sending.Seconds(), "sent/s")
	b.ReportMetric(float64(b.N-answered), "lost")
	lat.Report(b, "ms", 0.5, 0.99, 0.999)
}
