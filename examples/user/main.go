// Command user serves the user.rpc service (UserService in
// user.proto) and registers it with the local zrpc agent:
//
//	go run . -f etc/user.yaml
//
// zrpcctl gen wrote it once; it is yours to change.
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

	"github.com/zrpcio/zrpc/rpc"

	"github.com/zrpcio/zrpc/examples/user/internal/config"
	"github.com/zrpcio/zrpc/examples/user/internal/server"
	"github.com/zrpcio/zrpc/examples/user/internal/svc"
	"github.com/zrpcio/zrpc/examples/user/user"
)

var configFile = flag.String("f", "etc/user.yaml", "the config file")

func main() {
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := run(log); err != nil {
		log.Error("user.rpc stopped", "err", err)
		os.Exit(1)
	}
}

// run serves until SIGINT or SIGTERM; a second signal stops the process
// at once.
func run(log *slog.Logger) error {
	var c config.Config
	if err := rpc.LoadConfig(*configFile, &c); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		stop()
	}()
	return serve(ctx, c, log)
}

// serve registers the service with its agent and serves until ctx ends
// (or serving fails),
// then deregisters, drains and stops.
func serve(ctx context.Context, c config.Config, log *slog.Logger) error {
	var opts []rpc.ServerOption
	if !c.Log.Enabled() {
		opts = append(opts, rpc.WithServerLogger(log)) // else the Log section builds it
	}
	srv, err := rpc.NewServer(c.ServerConfig, opts...)
	if err != nil {
		return err
	}
	svcCtx := svc.NewServiceContext(c, srv.Logger())
	user.RegisterUserServiceServer(srv.GRPC(), server.NewUserServiceServer(svcCtx))

	// Start waits for the agent (one starting beside this service) up
	// to 30s, then gives up, for the supervisor to start it again.
	startCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := srv.Start(startCtx); err != nil {
		return err
	}
	fmt.Printf("Starting rpc server %s at %s...\n", c.Name, srv.Addr())
	select {
	case <-ctx.Done():
	case <-srv.Done(): // its listener failed: Stop returns why
	}

	stopCtx, cancelStop := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancelStop()
	return srv.Stop(stopCtx)
}
