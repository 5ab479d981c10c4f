package rpcbench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime/metrics"
	"runtime/pprof"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/zeromicro/go-zero/core/conf"
	"github.com/zeromicro/go-zero/core/logx"
	gozero "github.com/zeromicro/go-zero/zrpc"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/zrpcio/zrpc/bench/echo"
	"github.com/zrpcio/zrpc/bench/internal/proc"
	"github.com/zrpcio/zrpc/rpc"
	"github.com/zrpcio/zrpc/rpc/clientchain"
)

// The systems compared. Each has a server and a client of its own.
const (
	Zrpc   = "zrpc"    // rpc.Server registered in a zrpcd agent; rpc.Dial("zrpc:///echo.rpc")
	GRPC   = "grpc-go" // plain grpc.NewServer and grpc.NewClient
	GoZero = "go-zero" // go-zero zrpc server and client, direct endpoints (no etcd)
)

// Systems lists the systems in the order a repetition runs them first.
var Systems = []string{Zrpc, GRPC, GoZero}

// ZrpcBase is zrpc built from other sources (Config.Base): its agent, echo
// server and load process (which carries the client library) come from
// that build, so one run compares two builds of zrpc round by round.
const ZrpcBase = "zrpc-base"

// EchoService is the name the zrpc echo server registers under.
const EchoService = "echo.rpc"

// LoadConfig is what one load process does.
type LoadConfig struct {
	System string
	// Target is the server's host:port (grpc-go, go-zero) or the agent's
	// gRPC address (zrpc).
	Target  string
	Callers int
	Payload int // request bytes
	Warmup  time.Duration
	// Duration is how long the measured load runs.
	Duration time.Duration
	// CPUProfile, if set, is where a CPU profile of the measured window
	// is written.
	CPUProfile string
	// ZrpcClient is the zrpc client's variant, one of ZrpcClients: the
	// default chain, or one stage (or the whole chain) left out, to find
	// what the client's cost per call is made of. Empty means "default".
	ZrpcClient string
}

// ZrpcClients are the variants of zrpc's client a load process can run:
// rpc.Dial's defaults, and the defaults with one stage, or the whole
// client chain, turned off.
var ZrpcClients = []string{"default", "no-chain", "no-timeout", "no-retry", "no-breaker"}

// zrpcClientOptions returns the dial options of a zrpc client variant.
func zrpcClientOptions(variant string) ([]rpc.DialOption, error) {
	cfg := clientchain.DefaultConfig()
	switch variant {
	case "", "default":
		return nil, nil
	case "no-chain":
		return []rpc.DialOption{rpc.WithoutChain()}, nil
	case "no-timeout":
		cfg.Timeout = 0
	case "no-retry":
		cfg.NoRetry = true
	case "no-breaker":
		cfg.NoBreaker = true
	default:
		return nil, fmt.Errorf("zrpc client %q: want one of %s", variant, strings.Join(ZrpcClients, ", "))
	}
	return []rpc.DialOption{rpc.WithChain(cfg)}, nil
}

// Result is what a load process measured in its measured window, written
// as one JSON line.
type Result struct {
	Calls   int64   `json:"calls"`
	Errors  int64   `json:"errors"`
	Seconds float64 `json:"seconds"`
	// CPUSeconds is the load process's own CPU time.
	CPUSeconds float64 `json:"cpu_seconds"`
	// Allocs is the load process's heap allocations (objects).
	Allocs uint64 `json:"allocs"`
	// Sleeps is how many times the load process's threads blocked in the
	// kernel (voluntary context switches); zero where not counted.
	Sleeps     int64  `json:"sleeps"`
	FirstError string `json:"first_error,omitempty"`
}

// Ready is the line a load process writes after its warm-up; it then
// waits for a line on its input before the measured window starts, so the
// caller can read the servers' CPU time at that instant.
const Ready = "warm"

// Load is the load process: it connects as cfg.System's client, calls the
// echo method from cfg.Callers goroutines for cfg.Warmup, writes Ready to
// out, waits for a line from in, calls for cfg.Duration and writes the
// Result as a JSON line to out. Calls use context.Background(), as a
// caller without a deadline of its own does, so each system's default
// client timeout applies.
func Load(ctx context.Context, cfg LoadConfig, in io.Reader, out io.Writer) error {
	conn, closeConn, err := dial(ctx, cfg)
	if err != nil {
		return fmt.Errorf("%s client: %w", cfg.System, err)
	}
	defer closeConn()
	payload := &wrapperspb.BytesValue{Value: make([]byte, cfg.Payload)}
	if _, err := drive(conn, payload, cfg.Callers, cfg.Warmup); err != nil {
		return fmt.Errorf("warm-up: %w", err)
	}
	if _, err := fmt.Fprintln(out, Ready); err != nil {
		return err
	}
	if !bufio.NewScanner(in).Scan() {
		return errors.New("no go-ahead on standard input")
	}
	stopProfile, err := startProfile(cfg.CPUProfile)
	if err != nil {
		return err
	}
	res, err := drive(conn, payload, cfg.Callers, cfg.Duration)
	if perr := stopProfile(); err == nil {
		err = perr
	}
	if err != nil {
		return err
	}
	return json.NewEncoder(out).Encode(res)
}

func dial(ctx context.Context, cfg LoadConfig) (*grpc.ClientConn, func(), error) {
	switch cfg.System {
	case Zrpc:
		ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		variant, err := zrpcClientOptions(cfg.ZrpcClient)
		if err != nil {
			return nil, nil, err
		}
		opts := append([]rpc.DialOption{rpc.WithAgents(cfg.Target), rpc.WithWaitReady()}, variant...)
		conn, err := rpc.Dial(ctx, "zrpc:///"+EchoService, opts...)
		if err != nil {
			return nil, nil, err
		}
		return conn, func() { conn.Close() }, nil
	case GRPC:
		conn, err := grpc.NewClient(cfg.Target, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return nil, nil, err
		}
		return conn, func() { conn.Close() }, nil
	case GoZero:
		QuietGoZero()
		var c gozero.RpcClientConf
		if err := conf.FillDefault(&c); err != nil {
			return nil, nil, err
		}
		c.Endpoints = []string{cfg.Target}
		cli, err := gozero.NewClient(c)
		if err != nil {
			return nil, nil, err
		}
		return cli.Conn(), func() { cli.Conn().Close() }, nil
	}
	return nil, nil, fmt.Errorf("unknown system %q (want %s, %s or %s)", cfg.System, Zrpc, GRPC, GoZero)
}

// QuietGoZero keeps go-zero's logs to errors and turns off its stat
// reports, which would otherwise print every minute.
func QuietGoZero() {
	logx.SetLevel(logx.ErrorLevel)
	logx.DisableStat()
}

// drive calls the echo method from callers goroutines for d.
func drive(conn *grpc.ClientConn, payload *wrapperspb.BytesValue, callers int, d time.Duration) (Result, error) {
	var (
		stop     atomic.Bool
		calls    atomic.Int64
		failed   atomic.Int64
		firstErr atomic.Pointer[error]
		wg       sync.WaitGroup
	)
	allocsBefore := heapAllocs()
	cpuBefore, cpuErr := proc.SelfCPUTime()
	sleepsBefore, sleepsErr := selfThreadSleeps()
	start := time.Now()
	timer := time.AfterFunc(d, func() { stop.Store(true) })
	defer timer.Stop()
	for range callers {
		wg.Go(func() {
			out := new(wrapperspb.BytesValue)
			var n int64
			for !stop.Load() {
				if err := conn.Invoke(context.Background(), echo.Method, payload, out); err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, &err)
					continue
				}
				n++
			}
			calls.Add(n)
		})
	}
	wg.Wait()
	res := Result{Calls: calls.Load(), Errors: failed.Load(), Seconds: time.Since(start).Seconds(), Allocs: heapAllocs() - allocsBefore}
	if cpuAfter, err := proc.SelfCPUTime(); err == nil && cpuErr == nil {
		res.CPUSeconds = (cpuAfter - cpuBefore).Seconds()
	}
	if sleepsAfter, err := selfThreadSleeps(); err == nil && sleepsErr == nil {
		res.Sleeps = sleepsAfter - sleepsBefore
	}
	if p := firstErr.Load(); p != nil {
		res.FirstError = (*p).Error()
	}
	if res.Calls == 0 {
		return res, fmt.Errorf("no call succeeded: %s", res.FirstError)
	}
	return res, nil
}

// startProfile starts a CPU profile into path (nothing when path is
// empty) and returns what stops it and closes the file.
func startProfile(path string) (stop func() error, err error) {
	if path == "" {
		return func() error { return nil }, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("cpu profile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("cpu profile: %w", err)
	}
	return func() error {
		pprof.StopCPUProfile()
		return f.Close()
	}, nil
}

// heapAllocs is the number of heap objects this process has allocated.
func heapAllocs() uint64 {
	s := []metrics.Sample{{Name: "/gc/heap/allocs:objects"}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return s[0].Value.Uint64()
}
