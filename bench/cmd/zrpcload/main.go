// Command zrpcload measures what mutual TLS and ACLs cost zrpc, from its
// own process: for each repetition it runs a fresh plaintext agent, then
// a fresh agent with TLS, gossip encryption and ACLs (zrpcd binaries on
// loopback), drives registrations and echo calls against each, and prints
// medians with min-max and the ratio TLS+ACL / plaintext.
//
//	make build && go build -o ../bin/zrpcecho ./cmd/zrpcecho
//	go run ./cmd/zrpcload --bin ../bin --reps 3 --duration 5s
//
// `make bench-security` in the repository root does both.
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

	"github.com/zrpcio/zrpc/bench/security"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "zrpcload:", err)
		os.Exit(1)
	}
}

func run() error {
	var (
		cfg     security.Config
		bin     string
		writers string
	)
	flag.StringVar(&bin, "bin", "bin", "directory holding zrpcd, zrpcctl and zrpcecho")
	flag.IntVar(&cfg.Reps, "reps", 3, "repetitions of plaintext then TLS+ACL")
	flag.DurationVar(&cfg.Duration, "duration", 5*time.Second, "length of each load step")
	flag.DurationVar(&cfg.Warmup, "warmup", 2*time.Second, "unmeasured load before the first registration step and before the echo step")
	flag.IntVar(&cfg.MaxOps, "max-ops", 200_000, "most calls of each load step")
	flag.StringVar(&writers, "writers", "1,16,64", "concurrent registration writers, one step each")
	flag.IntVar(&cfg.Callers, "callers", 64, "concurrent echo callers")
	flag.StringVar(&cfg.ProfileDir, "profile-dir", "", "write a CPU profile of the agent at the most writers of each run here")
	flag.StringVar(&cfg.Dir, "dir", "", "keep data dirs, certificates and process logs here (default: a temporary directory, removed)")
	flag.Parse()
	for f := range strings.SplitSeq(writers, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil {
			return fmt.Errorf("--writers %q: %w", writers, err)
		}
		cfg.Writers = append(cfg.Writers, n)
	}
	cfg.Bins = security.Binaries{
		Zrpcd:   filepath.Join(bin, "zrpcd"),
		Zrpcctl: filepath.Join(bin, "zrpcctl"),
		Echo:    filepath.Join(bin, "zrpcecho"),
	}
	cfg.Log = slog.New(slog.NewTextHandler(os.Stderr, nil))

	// SIGINT or SIGTERM cancels the run; Run stops its processes first.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep, err := security.Run(ctx, cfg)
	if rep != nil && len(rep.Samples[security.Secured]) > 0 {
		if werr := rep.WriteTable(os.Stdout); werr != nil && err == nil {
			err = werr
		}
	}
	return err
}
