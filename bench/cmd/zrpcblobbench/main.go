// Command zrpcblobbench measures zrpc's blob put and get from outside
// against a plain gRPC stream of the same bytes and cp + fsync,
// interleaved over repetitions (package blobbench), and prints a markdown
// table of MB/s, ratios and CPU seconds per GB.
//
//	make build && cd bench && go build -o ../bin/zrpcblobbench ./cmd/zrpcblobbench
//	../bin/zrpcblobbench run --bin ../bin --size 256MiB --reps 3 --agents 3,5 --block-size 1MiB,4MiB
//
// `make bench-blob` in the repository root does all of it. The run
// command starts the same binary as the plain stream's server (serve) and
// client (put, get).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/zrpcio/zrpc/bench/blobbench"
)

const usage = `usage: zrpcblobbench run|serve|put|get [flags]

  run    runs the comparison and prints the table (see run --help)
  serve  the plain gRPC stream's server (started by run)
  put    sends a file over the plain stream (started by run)
  get    reads a file back over the plain stream (started by run)
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	switch cmd, args := os.Args[1], os.Args[2:]; cmd {
	case "run":
		err = run(ctx, args)
	case "serve":
		err = serve(ctx, args)
	case "put":
		err = put(ctx, args)
	case "get":
		err = get(ctx, args)
	default:
		fmt.Fprintf(os.Stderr, "zrpcblobbench: unknown command %q\n%s", cmd, usage)
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "zrpcblobbench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("run", flag.ExitOnError)
	var (
		cfg                      blobbench.Config
		bin, size, agents, block string
		out                      string
	)
	fs.StringVar(&bin, "bin", "bin", "directory holding zrpcd and zrpcctl (this binary is found by its own path)")
	fs.IntVar(&cfg.Reps, "reps", 3, "repetitions of every system")
	fs.StringVar(&size, "size", "256MiB", "bytes of random data put and read back (suffix KiB, MiB or GiB)")
	fs.StringVar(&agents, "agents", "3,5", "zrpc cluster sizes, comma separated, a fresh cluster each per repetition")
	fs.StringVar(&block, "block-size", "0", "the agents' --blob-block-size, comma separated to compare several (e.g. 1MiB,4MiB; 0: the agents' default)")
	fs.StringVar(&cfg.Dir, "dir", "", "keep the processes' logs here; the data and the agents' data dirs go here too (default: a temporary directory, removed)")
	fs.StringVar(&out, "out", "", "append every measured operation to this file as a JSON line")
	fs.Parse(args)
	var err error
	if cfg.Size, err = blobbench.ParseSize(size); err != nil {
		return fmt.Errorf("--size: %w", err)
	}
	for f := range strings.SplitSeq(agents, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil {
			return fmt.Errorf("--agents %q: want comma-separated numbers: %w", agents, err)
		}
		cfg.Agents = append(cfg.Agents, n)
	}
	for f := range strings.SplitSeq(block, ",") {
		n, err := blobbench.ParseSize(f)
		if err != nil || n > 1<<30 {
			return fmt.Errorf("--block-size %q: want comma-separated sizes such as 1MiB,4MiB (0: the agents' default)", block)
		}
		cfg.BlockSizes = append(cfg.BlockSizes, int(n))
	}
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find this binary: %w", err)
	}
	cfg.Bins = blobbench.Binaries{Zrpcd: filepath.Join(bin, "zrpcd"), Zrpcctl: filepath.Join(bin, "zrpcctl"), Self: self}
	cfg.Log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	emit := func(blobbench.Sample) error { return nil }
	if out != "" {
		f, err := os.OpenFile(out, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return fmt.Errorf("--out: %w", err)
		}
		defer f.Close()
		emit = func(s blobbench.Sample) error { return blobbench.WriteJSON(f, s) }
	}
	samples, err := blobbench.Run(ctx, cfg, emit)
	if len(samples) > 0 {
		if werr := blobbench.WriteTable(os.Stdout, samples); werr != nil && err == nil {
			err = werr
		}
	}
	return err
}

func serve(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("serve", flag.ExitOnError)
	listen := fs.String("listen", "127.0.0.1:0", "address to listen on")
	dir := fs.String("dir", "", "directory the stream's files are written to and read from")
	fs.Parse(args)
	return blobbench.Serve(ctx, *listen, *dir, os.Stdout)
}

// clientFlags are the flags put and get share.
func clientFlags(name string) (*flag.FlagSet, *string, *string) {
	fs := flag.NewFlagSet(name, flag.ExitOnError)
	target := fs.String("target", "", "the stream server's host:port")
	file := fs.String("name", "", "name of the file on the server")
	return fs, target, file
}

func put(ctx context.Context, args []string) error {
	fs, target, name := clientFlags("put")
	src := fs.String("file", "", "local file to send")
	fs.Parse(args)
	if *target == "" || *name == "" || *src == "" {
		return errors.New("put: --target, --name and --file must be set")
	}
	return blobbench.StreamPut(ctx, *target, *src, *name)
}

func get(ctx context.Context, args []string) error {
	fs, target, name := clientFlags("get")
	dst := fs.String("out", "", "local file to write (replaced once every byte is read and fsynced)")
	fs.Parse(args)
	if *target == "" || *name == "" || *dst == "" {
		return errors.New("get: --target, --name and --out must be set")
	}
	return blobbench.StreamGet(ctx, *target, *name, *dst)
}
