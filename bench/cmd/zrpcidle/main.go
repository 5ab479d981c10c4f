// Command zrpcidle fills a running zrpc agent with instances of the three
// kinds an agent keeps alive (TTL instances, instances held by session
// streams, instances with a gRPC health check) and, given the agent's pid,
// measures what the agent costs while nothing changes: its CPU over an idle
// window (/proc/PID/stat utime+stime) and its RSS.
//
//	bin/zrpcd agent --data-dir /tmp/idle --name n1 &
//	cd bench && go run ./cmd/zrpcidle --agent 127.0.0.1:8400 --pid $! \
//	    --instances 60000 --session-instances 30000 --grpc-instances 1000
//
// TTL instances get a TTL long enough that they stay passing without
// renewals. Session instances are spread over --sessions session streams,
// which stay open (sending their keepalives) until the measurement ends;
// the agent removes their instances when the tool exits. gRPC-checked
// instances point at a grpc.health.v1 server in this process, which the
// agent calls for each of them every --check-interval; the tool counts the
// checks it answers, so the report shows the checks' share of the cost.
// All instances are spread over --services services.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/bench/internal/proc"
	"github.com/zrpcio/zrpc/client"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "zrpcidle:", err)
		os.Exit(1)
	}
}

type config struct {
	agent            string
	pid              int
	ttlInstances     int
	sessionInstances int
	sessions         int
	grpcInstances    int
	checkInterval    time.Duration
	services         int
	ttl              time.Duration
	writers          int
	settle           time.Duration
	idle             time.Duration
}

func parseFlags() (config, error) {
	var c config
	flag.StringVar(&c.agent, "agent", "127.0.0.1:8400", "gRPC address of the agent")
	flag.IntVar(&c.pid, "pid", 0, "the agent's process id: measure its CPU and RSS while idle (0: only fill the agent)")
	flag.IntVar(&c.ttlInstances, "instances", 100_000, "TTL instances to register")
	flag.IntVar(&c.sessionInstances, "session-instances", 0, "instances to register through session streams")
	flag.IntVar(&c.sessions, "sessions", 100, "session streams to spread --session-instances over (each holds at most max_instances_per_session)")
	flag.IntVar(&c.grpcInstances, "grpc-instances", 0, "instances with a gRPC health check against this process")
	flag.DurationVar(&c.checkInterval, "check-interval", 10*time.Second, "interval of the gRPC checks")
	flag.IntVar(&c.services, "services", 100, "services to spread all instances over")
	flag.DurationVar(&c.ttl, "ttl", time.Hour, "TTL of every TTL instance")
	flag.IntVar(&c.writers, "writers", 32, "concurrent registrations")
	flag.DurationVar(&c.settle, "settle", 15*time.Second, "wait after registering before the idle window (first checks, snapshots)")
	flag.DurationVar(&c.idle, "idle", 30*time.Second, "length of the idle window measured with --pid")
	flag.Parse()
	switch {
	case c.ttlInstances < 0 || c.sessionInstances < 0 || c.grpcInstances < 0:
		return c, fmt.Errorf("--instances, --session-instances and --grpc-instances must be >= 0")
	case c.services < 1 || c.writers < 1 || c.sessions < 1:
		return c, fmt.Errorf("--services, --writers and --sessions must be >= 1")
	case c.ttl <= 0 || c.checkInterval <= 0:
		return c, fmt.Errorf("--ttl and --check-interval must be > 0")
	case c.pid < 0 || c.settle < 0 || c.idle <= 0:
		return c, fmt.Errorf("--pid and --settle must be >= 0, --idle > 0")
	}
	return c, nil
}

func run() error {
	cfg, err := parseFlags()
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	c, err := client.New(client.Config{Endpoints: []string{cfg.agent}})
	if err != nil {
		return err
	}
	defer c.Close()

	checks, err := serveHealth()
	if err != nil {
		return err
	}
	defer checks.stop()

	start := time.Now()
	total := cfg.ttlInstances + cfg.sessionInstances + cfg.grpcInstances
	inst := func(i int) *pb.Instance {
		return &pb.Instance{
			Service: fmt.Sprintf("idle%03d.rpc", i%cfg.services),
			Id:      fmt.Sprintf("i%07d", i),
			Address: fmt.Sprintf("127.0.0.%d:%d", 1+i%200, 10000+i%50000),
		}
	}
	// TTL and gRPC-checked instances through the client; indexes
	// [0, ttl) and [ttl, ttl+grpc).
	direct := cfg.ttlInstances + cfg.grpcInstances
	err = fill(ctx, cfg.writers, direct, func(ctx context.Context, i int) error {
		in := inst(i)
		if i < cfg.ttlInstances {
			in.Check = &pb.Check{Ttl: durationpb.New(cfg.ttl)}
		} else {
			in.Check = &pb.Check{Grpc: true, GrpcAddress: checks.addr, Interval: durationpb.New(cfg.checkInterval)}
		}
		_, _, err := c.Register(ctx, in)
		return err
	})
	if err != nil {
		return err
	}
	sessions, err := openSessions(ctx, c, cfg)
	if err != nil {
		return err
	}
	defer func() {
		for _, s := range sessions {
			s.Close()
		}
	}()
	err = fill(ctx, cfg.writers, cfg.sessionInstances, func(ctx context.Context, i int) error {
		_, err := sessions[i%len(sessions)].Register(ctx, inst(direct+i))
		return err
	})
	if err != nil {
		return err
	}
	fmt.Printf("registered %d instances (%d TTL, %d in %d sessions, %d gRPC-checked every %s) in %s\n",
		total, cfg.ttlInstances, cfg.sessionInstances, len(sessions), cfg.grpcInstances, cfg.checkInterval,
		time.Since(start).Round(time.Millisecond))
	if cfg.pid == 0 {
		return nil
	}
	return measure(ctx, cfg, checks, sessions)
}

// fill calls register for indexes 0..n-1 from writers goroutines and
// returns the first error, naming its index.
func fill(ctx context.Context, writers, n int, register func(context.Context, int) error) error {
	var (
		next  atomic.Int64
		wg    sync.WaitGroup
		once  sync.Once
		first error
	)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for range writers {
		wg.Go(func() {
			for i := int(next.Add(1)) - 1; i < n && ctx.Err() == nil; i = int(next.Add(1)) - 1 {
				rctx, done := context.WithTimeout(ctx, 30*time.Second)
				err := register(rctx, i)
				done()
				if err != nil {
					once.Do(func() { first = fmt.Errorf("register instance %d: %w", i, err); cancel() })
					return
				}
			}
		})
	}
	wg.Wait()
	if first != nil {
		return first
	}
	return ctx.Err()
}

// openSessions opens as many session streams as --session-instances needs
// (at most --sessions).
func openSessions(ctx context.Context, c *client.Client, cfg config) ([]*client.Session, error) {
	n := min(cfg.sessions, cfg.sessionInstances)
	var out []*client.Session
	for i := range n {
		s, err := c.Session(ctx, fmt.Sprintf("zrpcidle session %d", i))
		if err != nil {
			for _, o := range out {
				o.Close()
			}
			return nil, fmt.Errorf("open session %d: %w", i, err)
		}
		out = append(out, s)
	}
	return out, nil
}

// measure waits --settle, then reads the agent's CPU time, its RSS and the
// checks answered over --idle, and prints them; a session that ended on
// the way is an error (its instances would be gone).
func measure(ctx context.Context, cfg config, checks *healthServer, sessions []*client.Session) error {
	if err := proc.Sleep(ctx, cfg.settle); err != nil {
		return err
	}
	cpu0, err := proc.CPUTimeOf(cfg.pid)
	if err != nil {
		return err
	}
	own0, err := proc.SelfCPUTime()
	if err != nil {
		return err
	}
	checks0 := checks.count.Load()
	t0 := time.Now()
	if err := proc.Sleep(ctx, cfg.idle); err != nil {
		return err
	}
	cpu1, err := proc.CPUTimeOf(cfg.pid)
	if err != nil {
		return err
	}
	elapsed := time.Since(t0)
	own1, err := proc.SelfCPUTime()
	if err != nil {
		return err
	}
	answered := checks.count.Load() - checks0
	rss, err := proc.RSSOf(cfg.pid)
	if err != nil {
		return err
	}
	for i, s := range sessions {
		if err := s.Err(); err != nil {
			return fmt.Errorf("session %d ended during the measurement: %w", i, err)
		}
	}
	fmt.Printf("agent over %s idle: CPU %.2f %% of a core, RSS %.0f MiB; gRPC checks answered %.0f/s; this tool's CPU %.2f %%\n",
		elapsed.Round(time.Second), 100*(cpu1-cpu0).Seconds()/elapsed.Seconds(), float64(rss)/(1<<20),
		float64(answered)/elapsed.Seconds(), 100*(own1-own0).Seconds()/elapsed.Seconds())
	return nil
}

// healthServer is a grpc.health.v1 server on loopback that reports SERVING
// and counts the checks it answers.
type healthServer struct {
	addr  string
	count atomic.Int64
	srv   *grpc.Server
}

func serveHealth() (*healthServer, error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("health server: %w", err)
	}
	h := &healthServer{addr: lis.Addr().String()}
	h.srv = grpc.NewServer(grpc.UnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		h.count.Add(1)
		return handler(ctx, req)
	}))
	healthpb.RegisterHealthServer(h.srv, health.NewServer()) // "" is SERVING
	go h.srv.Serve(lis)
	return h, nil
}

func (h *healthServer) stop() { h.srv.Stop() }
