// Command zrpcrpcbench compares zrpc's RPC path with plain grpc-go and
// go-zero zrpc, every server and load generator in a process of its own,
// interleaved over repetitions (package rpcbench), and prints a markdown
// table of calls/s, ratios, CPU and allocations per call.
//
//	make build && go build -o ../bin/zrpcecho ./cmd/zrpcecho && go build -o ../bin/zrpcrpcbench ./cmd/zrpcrpcbench
//	../bin/zrpcrpcbench run --bin ../bin --reps 3 --callers 1,16,64 --duration 5s
//
// With --base DIR (the zrpcd, zrpcecho and zrpcrpcbench of another build)
// it also runs that build as system zrpc-base and prints zrpc ÷ zrpc-base
// within each repetition: the A/B comparison of a change, e.g.
//
//	../bin/zrpcrpcbench run --bin ../bin --base /tmp/before --systems zrpc,zrpc-base,grpc-go --reps 5 --callers 1,16
//
// --zrpc-client runs system zrpc's client with a stage (or the whole
// chain) turned off; with --base ../bin it is compared with the default
// client round by round, to see what a stage costs.
// `make bench-rpc` in the repository root does all of it. The run
// command starts the same binary as the grpc-go and go-zero servers
// (serve) and as every load process (load).
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/zrpcio/zrpc/bench/rpcbench"
)

const usage = `usage: zrpcrpcbench run|serve|load [flags]

  run    runs the comparison and prints the table (see run --help)
  serve  a grpc-go or go-zero echo server (started by run)
  load   one load process (started by run)
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// go-zero, linked into every role of this binary, reports usage
	// statistics once a minute from a package init unless told not to.
	rpcbench.QuietGoZero()
	var err error
	switch cmd, args := os.Args[1], os.Args[2:]; cmd {
	case "run":
		err = run(ctx, args)
	case "serve":
		err = serve(ctx, args)
	case "load":
		err = load(ctx, args)
	default:
		fmt.Fprintf(os.Stderr, "zrpcrpcbench: unknown command %q\n%s", cmd, usage)
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "zrpcrpcbench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("run", flag.ExitOnError)
	var (
		cfg     rpcbench.Config
		bin     string
		base    string
		systems string
		callers string
	)
	fs.StringVar(&bin, "bin", "bin", "directory holding zrpcd and zrpcecho (this binary is found by its own path)")
	fs.StringVar(&base, "base", "", "directory holding another build's zrpcd, zrpcecho and zrpcrpcbench, run as system "+rpcbench.ZrpcBase+" interleaved with the others, to compare a change with the build before it")
	fs.StringVar(&cfg.ZrpcClient, "zrpc-client", "default", "variant of system zrpc's client ("+strings.Join(rpcbench.ZrpcClients, ", ")+"); with --base pointing at the same build, compares it round by round with the default")
	fs.StringVar(&systems, "systems", "", "systems to run, comma separated, from "+strings.Join(rpcbench.Systems, ", ")+" and "+rpcbench.ZrpcBase+" (default: all, "+rpcbench.ZrpcBase+" only with --base)")
	fs.IntVar(&cfg.Reps, "reps", 3, "repetitions of every system at every caller count")
	fs.StringVar(&callers, "callers", "1,16,64", "concurrent callers of the load process, comma separated, one round each")
	fs.DurationVar(&cfg.Warmup, "warmup", 2*time.Second, "unmeasured load at the start of every round")
	fs.DurationVar(&cfg.Duration, "duration", 5*time.Second, "measured load of every round")
	fs.IntVar(&cfg.Payload, "payload", 100, "request bytes (the echo answers as many)")
	fs.StringVar(&cfg.Dir, "dir", "", "keep the processes' logs and the agent's data here (default: a temporary directory, removed)")
	fs.Parse(args)
	for f := range strings.SplitSeq(callers, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil {
			return fmt.Errorf("--callers %q: want comma-separated numbers: %w", callers, err)
		}
		cfg.Callers = append(cfg.Callers, n)
	}
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find this binary: %w", err)
	}
	cfg.Bins = rpcbench.Binaries{Zrpcd: filepath.Join(bin, "zrpcd"), Echo: filepath.Join(bin, "zrpcecho"), Self: self}
	if base != "" {
		cfg.Base = rpcbench.Binaries{Zrpcd: filepath.Join(base, "zrpcd"), Echo: filepath.Join(base, "zrpcecho"), Self: filepath.Join(base, "zrpcrpcbench")}
	}
	for f := range strings.SplitSeq(systems, ",") {
		if f = strings.TrimSpace(f); f != "" {
			cfg.Systems = append(cfg.Systems, f)
		}
	}
	cfg.Log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	samples, err := rpcbench.Run(ctx, cfg)
	if len(samples) > 0 {
		if werr := rpcbench.WriteTable(os.Stdout, samples); werr != nil && err == nil {
			err = werr
		}
	}
	return err
}

func serve(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("serve", flag.ExitOnError)
	system := fs.String("system", rpcbench.GRPC, "server to run: "+rpcbench.GRPC+" or "+rpcbench.GoZero)
	listen := fs.String("listen", "127.0.0.1:0", "address to listen on (go-zero needs a port)")
	fs.Parse(args)
	return rpcbench.Serve(ctx, *system, *listen, os.Stdout)
}

func load(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("load", flag.ExitOnError)
	var cfg rpcbench.LoadConfig
	fs.StringVar(&cfg.System, "system", rpcbench.GRPC, "client to run: "+strings.Join(rpcbench.Systems, ", "))
	fs.StringVar(&cfg.Target, "target", "", "server host:port (grpc-go, go-zero) or the agent's gRPC address (zrpc)")
	fs.IntVar(&cfg.Callers, "callers", 16, "concurrent callers")
	fs.IntVar(&cfg.Payload, "payload", 100, "request bytes")
	fs.DurationVar(&cfg.Warmup, "warmup", 2*time.Second, "unmeasured load before the measured window")
	fs.DurationVar(&cfg.Duration, "duration", 5*time.Second, "measured load")
	fs.StringVar(&cfg.CPUProfile, "cpuprofile", "", "write a CPU profile of the measured window to this file")
	fs.StringVar(&cfg.ZrpcClient, "zrpc-client", "default", "variant of the zrpc client, to see what its cost is made of: "+strings.Join(rpcbench.ZrpcClients, ", "))
	fs.Parse(args)
	if cfg.Target == "" || cfg.Callers < 1 || cfg.Duration <= 0 {
		return fmt.Errorf("load: --target must be set, --callers at least 1 and --duration positive (got %q, %d, %v)", cfg.Target, cfg.Callers, cfg.Duration)
	}
	return rpcbench.Load(ctx, cfg, os.Stdin, os.Stdout)
}
