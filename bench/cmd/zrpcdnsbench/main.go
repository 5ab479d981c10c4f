// Command zrpcdnsbench measures the DNS interface of zrpcd from its own
// process: it starts a one-node agent answering DNS on loopback, registers
// a service of --instances passing instances, and sends SRV questions over
// one UDP socket at a fixed --rate (an open loop: a slow answer does not
// slow the sender down and hide itself), measuring each answer from its
// question's send time; questions unanswered after 2 s count as lost.
// With several agent binaries (--zrpcd old=/tmp/zrpcd.old,new=bin/zrpcd)
// it alternates them round by round, a fresh agent per round, and prints
// the median with min-max of each.
//
//	make build
//	cd bench && go run ./cmd/zrpcdnsbench --zrpcd new=../bin/zrpcd --reps 3
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/miekg/dns"

	"github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/bench/internal/proc"
	"github.com/zrpcio/zrpc/bench/internal/stats"
	"github.com/zrpcio/zrpc/bench/internal/zrpcd"
	"github.com/zrpcio/zrpc/client"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "zrpcdnsbench:", err)
		os.Exit(1)
	}
}

type config struct {
	bins      []binary
	reps      int
	rate      int
	queries   int
	instances int
	edns      bool
	dir       string
}

type binary struct{ label, path string }

func run() error {
	var cfg config
	var bins string
	flag.StringVar(&bins, "zrpcd", "zrpc=bin/zrpcd", "agent binaries to compare, label=path separated by commas; rounds alternate them")
	flag.IntVar(&cfg.reps, "reps", 3, "rounds of each binary (A/B/A/B...)")
	flag.IntVar(&cfg.rate, "rate", 10000, "questions per second")
	flag.IntVar(&cfg.queries, "queries", 50000, "questions of each round")
	flag.IntVar(&cfg.instances, "instances", 10, "passing instances of the service asked for")
	flag.BoolVar(&cfg.edns, "edns", true, "ask with EDNS0 (1,232 bytes), as Go's and most resolvers do")
	flag.StringVar(&cfg.dir, "dir", "", "keep data dirs and agent logs here (default: a temporary directory, removed)")
	flag.Parse()
	for f := range strings.SplitSeq(bins, ",") {
		label, path, ok := strings.Cut(f, "=")
		if !ok || label == "" || path == "" {
			return fmt.Errorf("--zrpcd %q: want label=path[,label=path...]", bins)
		}
		if _, err := os.Stat(path); err != nil {
			return fmt.Errorf("--zrpcd %s: %w (make build writes bin/zrpcd)", label, err)
		}
		cfg.bins = append(cfg.bins, binary{label, path})
	}
	if cfg.reps < 1 || cfg.rate < 1 || cfg.queries < 1 || cfg.instances < 1 {
		return errors.New("--reps, --rate, --queries and --instances must be at least 1")
	}
	if cfg.dir == "" {
		dir, err := os.MkdirTemp("", "zrpcdnsbench")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		cfg.dir = dir
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	results := map[string][]result{}
	for rep := range cfg.reps {
		for _, b := range cfg.bins {
			r, err := round(ctx, cfg, b, rep)
			if err != nil {
				return fmt.Errorf("%s round %d: %w", b.label, rep+1, err)
			}
			fmt.Fprintf(os.Stderr, "%s round %d: %s\n", b.label, rep+1, r)
			results[b.label] = append(results[b.label], r)
		}
	}
	report(os.Stdout, cfg, results)
	return nil
}

// result is one round's outcome.
type result struct {
	sentPerSec     float64
	p50, p99, p999 time.Duration
	lost           int
	answerBytes    int
}

func (r result) String() string {
	return fmt.Sprintf("sent/s %.0f p50 %s p99 %s p99.9 %s lost %d", r.sentPerSec, r.p50, r.p99, r.p999, r.lost)
}

// round starts an agent of b, registers the instances, and measures.
func round(ctx context.Context, cfg config, b binary, rep int) (result, error) {
	ports, err := proc.FreePorts(1)
	if err != nil {
		return result{}, err
	}
	dnsAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0]))
	dir, err := os.MkdirTemp(cfg.dir, b.label+"-"+strconv.Itoa(rep+1)+"-")
	if err != nil {
		return result{}, err
	}
	agent, err := zrpcd.StartAgent(ctx, b.path, dir, "--dns-port", strconv.Itoa(ports[0]))
	if err != nil {
		return result{}, err
	}
	defer agent.Proc.Stop()
	cl, err := client.New(client.Config{Endpoints: []string{agent.GRPCAddr}})
	if err != nil {
		return result{}, err
	}
	defer cl.Close()
	for i := range cfg.instances {
		inst := &zrpcpb.Instance{Service: "user.rpc", Id: strconv.Itoa(i),
			Address: net.JoinHostPort(net.IPv4(127, 1, byte(i/250), byte(1+i%250)).String(), "9000")}
		if _, _, err := cl.Register(ctx, inst); err != nil {
			return result{}, fmt.Errorf("register: %w", err)
		}
	}
	if err := waitAnswers(ctx, dnsAddr, cfg.instances); err != nil {
		return result{}, err
	}
	return measure(ctx, cfg, dnsAddr)
}

// waitAnswers waits until the agent answers all n instances over TCP.
func waitAnswers(ctx context.Context, addr string, n int) error {
	m := new(dns.Msg)
	m.SetQuestion("user.rpc.service.zrpc.", dns.TypeSRV)
	c := &dns.Client{Net: "tcp", Timeout: 5 * time.Second}
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, _, err := c.ExchangeContext(ctx, m, addr)
		if err == nil && len(resp.Answer) == n {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("the agent's DNS at %s did not answer %d records within 30 s (last: %v)", addr, n, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// measure sends cfg.queries questions at cfg.rate over one UDP socket,
// until ctx ends.
func measure(ctx context.Context, cfg config, addr string) (result, error) {
	conn, err := dns.Dial("udp", addr)
	if err != nil {
		return result{}, err
	}
	defer conn.Close()
	// Room for answers that arrive while the reader is descheduled: a
	// drop in the client's socket would count against the server.
	if err := conn.Conn.(*net.UDPConn).SetReadBuffer(4 << 20); err != nil {
		return result{}, err
	}
	sent := make([]time.Time, 1<<16) // by question id; ids repeat after 65,536 questions, 6.5 s apart at 10,000/s
	var mu sync.Mutex
	lat := make([]time.Duration, 0, cfg.queries)
	conn.UDPSize = 1232
	var res result
	var readErr error
	var last *dns.Msg
	done := make(chan struct{})
	go func() {
		defer close(done)
		for len(lat) < cfg.queries {
			conn.SetReadDeadline(time.Now().Add(2 * time.Second))
			resp, err := conn.ReadMsg()
			if err != nil {
				var ne net.Error
				if !errors.As(err, &ne) || !ne.Timeout() {
					readErr = err
				}
				return // the rest are lost
			}
			mu.Lock()
			lat = append(lat, time.Since(sent[resp.Id]))
			mu.Unlock()
			last = resp
		}
	}()
	m := new(dns.Msg)
	m.SetQuestion("user.rpc.service.zrpc.", dns.TypeSRV)
	if cfg.edns {
		m.SetEdns0(1232, false)
	}
	start := time.Now()
	for i := range cfg.queries {
		if wait := time.Until(start.Add(time.Duration(i) * time.Second / time.Duration(cfg.rate))); wait > 0 {
			if err := proc.Sleep(ctx, wait); err != nil {
				return result{}, err
			}
		}
		m.Id = uint16(i)
		mu.Lock()
		sent[m.Id] = time.Now()
		mu.Unlock()
		if err := conn.WriteMsg(m); err != nil {
			return result{}, err
		}
	}
	res.sentPerSec = float64(cfg.queries) / time.Since(start).Seconds()
	<-done
	if readErr != nil {
		return result{}, fmt.Errorf("read an answer: %w", readErr)
	}
	if last != nil {
		last.Compress = true // as sent
		res.answerBytes = last.Len()
	}
	res.lost = cfg.queries - len(lat)
	slices.Sort(lat)
	res.p50, res.p99, res.p999 = quantile(lat, 0.5), quantile(lat, 0.99), quantile(lat, 0.999)
	return res, nil
}

func quantile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(int(q*float64(len(sorted))), len(sorted)-1)]
}

// report prints a markdown table: per binary, the median with min-max of
// each measure over its rounds.
func report(w io.Writer, cfg config, results map[string][]result) {
	fmt.Fprintf(w, "%d SRV questions/round at %d/s over UDP (EDNS0 %v), %d instances, %d rounds per binary\n\n",
		cfg.queries, cfg.rate, cfg.edns, cfg.instances, cfg.reps)
	fmt.Fprintln(w, "| binary | sent/s | p50 ms | p99 ms | p99.9 ms | lost | answer bytes |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|")
	for _, b := range cfg.bins {
		rs := results[b.label]
		f := func(get func(result) float64, format string) string {
			v := make([]float64, len(rs))
			for i, r := range rs {
				v[i] = get(r)
			}
			s := stats.Summarize(v)
			return fmt.Sprintf(format+" ("+format+"-"+format+")", s.Median, s.Min, s.Max)
		}
		ms := func(d func(result) time.Duration) func(result) float64 {
			return func(r result) float64 { return float64(d(r)) / float64(time.Millisecond) }
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %d |\n", b.label,
			f(func(r result) float64 { return r.sentPerSec }, "%.0f"),
			f(ms(func(r result) time.Duration { return r.p50 }), "%.3f"),
			f(ms(func(r result) time.Duration { return r.p99 }), "%.2f"),
			f(ms(func(r result) time.Duration { return r.p999 }), "%.2f"),
			f(func(r result) float64 { return float64(r.lost) }, "%.0f"),
			rs[len(rs)-1].answerBytes)
	}
}
