package security

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/bench/echo"
	"github.com/zrpcio/zrpc/client"
	"github.com/zrpcio/zrpc/rpc"
)

// callTimeout bounds one call of the load; a call slower than this is an
// error, not a sample.
const callTimeout = 10 * time.Second

// maxErrorShare is the share of failed calls above which a step fails.
const maxErrorShare = 0.01

// step is what one load step measured.
type step struct {
	ops     int
	errors  int
	elapsed time.Duration
	lat     []time.Duration // sorted
	// cpuPerOp is each measured process's CPU microseconds per call.
	cpuPerOp map[string]float64
}

func (s step) perSecond() float64 { return float64(s.ops) / s.elapsed.Seconds() }

// quantile returns the q-quantile of the latencies in milliseconds.
func (s step) quantile(q float64) float64 {
	if len(s.lat) == 0 {
		return 0
	}
	i := min(int(q*float64(len(s.lat))), len(s.lat)-1)
	return float64(s.lat[i]) / float64(time.Millisecond)
}

// workerFunc makes one call as worker w, its i-th.
type workerFunc func(ctx context.Context, w, i int) error

// drive runs workers goroutines calling fn until d has passed or maxOps
// calls were started, after one unmeasured call per worker (connections
// and handshakes are made before the clock starts), and reads the CPU
// time of cpu's processes around it.
func drive(ctx context.Context, workers int, d time.Duration, maxOps int, cpu cpuMeter, fn workerFunc) (step, error) {
	for w := range workers {
		if err := callOnce(ctx, fn, w, -1); err != nil {
			return step{}, fmt.Errorf("warm-up: %w", err)
		}
	}
	var (
		started  atomic.Int64
		failed   atomic.Int64
		firstErr atomic.Pointer[error]
		wg       sync.WaitGroup
		lats     = make([][]time.Duration, workers)
	)
	cpuBefore := cpu.read()
	start := time.Now()
	deadline := start.Add(d)
	for w := range workers {
		wg.Go(func() {
			for i := 0; ctx.Err() == nil && time.Now().Before(deadline) && started.Add(1) <= int64(maxOps); i++ {
				t := time.Now()
				if err := callOnce(ctx, fn, w, i); err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, &err)
					continue
				}
				lats[w] = append(lats[w], time.Since(t))
			}
		})
	}
	wg.Wait()
	s := step{elapsed: time.Since(start), errors: int(failed.Load()), lat: slices.Concat(lats...)}
	s.ops = len(s.lat)
	s.cpuPerOp = perOp(cpuBefore, cpu.read(), s.ops)
	slices.Sort(s.lat)
	if err := ctx.Err(); err != nil {
		return s, err
	}
	if s.errors > 0 && (s.ops == 0 || float64(s.errors) > maxErrorShare*float64(s.ops+s.errors)) {
		return s, fmt.Errorf("%d of %d calls failed, the first with: %w", s.errors, s.ops+s.errors, *firstErr.Load())
	}
	return s, nil
}

func callOnce(ctx context.Context, fn workerFunc, w, i int) error {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	return fn(ctx, w, i)
}

// credentials are how the load tool reaches the agent and the service:
// nothing for plaintext, or the client certificate and the ACL token.
type credentials struct {
	pki       *pki
	tokenFile string
}

// agentClient returns a client of the agent at addr.
func (c credentials) agentClient(addr string) (*client.Client, error) {
	cfg := client.Config{Endpoints: []string{addr}}
	if c.pki != nil {
		tc, err := c.pki.clientTLS()
		if err != nil {
			return nil, err
		}
		token, err := os.ReadFile(c.tokenFile)
		if err != nil {
			return nil, fmt.Errorf("read token: %w", err)
		}
		cfg.TLS, cfg.Token = tc, strings.TrimSpace(string(token))
	}
	return client.New(cfg)
}

// clientTLS is the load tool's TLS to agents: TLS 1.3 with its client
// certificate, verifying the agent's certificate for agent.zrpc.
func (p *pki) clientTLS() (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(p.loadCert, p.loadKey)
	if err != nil {
		return nil, fmt.Errorf("load client certificate: %w", err)
	}
	caPEM, err := os.ReadFile(p.ca)
	if err != nil {
		return nil, fmt.Errorf("read CA: %w", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("CA %s: no certificate in it", p.ca)
	}
	return &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: roots, Certificates: []tls.Certificate{cert}, ServerName: client.AgentServerName}, nil
}

// registerLoad registers ever new instances (ids prefixed with name)
// through writers clients, one connection each, as zrpcd's in-process
// benchmark does.
func registerLoad(ctx context.Context, name, addr string, creds credentials, writers int, d time.Duration, maxOps int, cpu cpuMeter) (step, error) {
	clients := make([]*client.Client, writers)
	defer func() {
		for _, c := range clients {
			if c != nil {
				c.Close()
			}
		}
	}()
	for w := range clients {
		c, err := creds.agentClient(addr)
		if err != nil {
			return step{}, err
		}
		clients[w] = c
	}
	return drive(ctx, writers, d, maxOps, cpu, func(ctx context.Context, w, i int) error {
		_, _, err := clients[w].Register(ctx, instance(name, w, i))
		return err
	})
}

// instance is a ~200-byte instance (tags, zone, version, three metadata
// keys), unique per step, worker and call.
func instance(step string, w, i int) *zrpcpb.Instance {
	return &zrpcpb.Instance{
		Service: regService, Id: fmt.Sprintf("%s-w%02d-%08d", step, w, i+1), Address: "10.1.2.3:9001",
		Zone: "zone-a", Version: "v1.2.3", Tags: []string{"primary", "canary"},
		Metadata: map[string]string{"region": "eu-west", "build": "2026-11-25T10:00:00Z", "owner": "team-users"},
	}
}

// echoLoad calls the echo service, found through the agent at addr, from
// callers goroutines over one shared connection of rpc.Dial (default
// client chain and balancer), for warmup unmeasured and then for d.
func echoLoad(ctx context.Context, addr string, creds credentials, callers int, warmup, d time.Duration, maxOps int, cpu cpuMeter) (step, error) {
	opts := []rpc.DialOption{rpc.WithAgents(addr), rpc.WithWaitReady()}
	if creds.pki != nil {
		token, err := os.ReadFile(creds.tokenFile)
		if err != nil {
			return step{}, fmt.Errorf("read token: %w", err)
		}
		opts = append(opts, rpc.WithAgentToken(strings.TrimSpace(string(token))),
			rpc.WithTLS(rpc.TLSConfig{CA: creds.pki.ca, Cert: creds.pki.loadCert, Key: creds.pki.loadKey}))
	}
	dialCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	conn, err := rpc.Dial(dialCtx, "zrpc:///"+echoService, opts...)
	if err != nil {
		return step{}, err
	}
	defer conn.Close()
	payload := &wrapperspb.BytesValue{Value: make([]byte, 100)}
	call := func(ctx context.Context, _, _ int) error {
		return conn.Invoke(ctx, echo.Method, payload, new(wrapperspb.BytesValue))
	}
	if warmup > 0 {
		if _, err := drive(ctx, callers, warmup, maxOps, nil, call); err != nil {
			return step{}, fmt.Errorf("warm-up: %w", err)
		}
	}
	return drive(ctx, callers, d, maxOps, cpu, call)
}
