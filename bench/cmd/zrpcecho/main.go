// Command zrpcecho is the echo service of zrpc's out-of-process
// benchmarks: an rpc.Server with its default chain, registered through an
// agent, serving bench/echo. It prints "listening <addr>" once registered
// and stops (deregistering) on SIGINT or SIGTERM.
//
//	zrpcecho --agent 127.0.0.1:8400 --name echo.rpc \
//	    [--tls-ca ca.pem --tls-cert echo.rpc.pem --tls-key echo.rpc-key.pem] [--token-file token]
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/zrpcio/zrpc/bench/echo"
	"github.com/zrpcio/zrpc/rpc"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "zrpcecho:", err)
		os.Exit(1)
	}
}

func run() error {
	cfg := rpc.DefaultServerConfig()
	var agent string
	flag.StringVar(&cfg.Name, "name", "echo.rpc", "service name to register")
	flag.StringVar(&cfg.ListenOn, "listen", "127.0.0.1:0", "listen address")
	flag.StringVar(&agent, "agent", "127.0.0.1:8400", "gRPC address of the agent to register with")
	flag.StringVar(&cfg.TLS.CA, "tls-ca", "", "cluster CA certificate (with --tls-cert and --tls-key: mutual TLS)")
	flag.StringVar(&cfg.TLS.Cert, "tls-cert", "", "the service's certificate (zrpcctl tls cert create --service)")
	flag.StringVar(&cfg.TLS.Key, "tls-key", "", "the key of --tls-cert")
	flag.StringVar(&cfg.TokenFile, "token-file", "", "file holding the ACL token to register with")
	flag.Parse()
	cfg.Agents = []string{agent}
	cfg.DrainDelay = 0
	cfg.StopTimeout = 5 * time.Second

	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	srv, err := rpc.NewServer(cfg, rpc.WithServerLogger(log))
	if err != nil {
		return err
	}
	echo.Register(srv.GRPC())

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	startCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	err = srv.Start(startCtx)
	cancel()
	if err != nil {
		return fmt.Errorf("start: %w", err)
	}
	fmt.Printf("listening %s\n", srv.Addr())
	<-ctx.Done()
	stopCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return srv.Stop(stopCtx)
}
