package rpcbench

import (
	"context"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/zeromicro/go-zero/core/conf"
	gozero "github.com/zeromicro/go-zero/zrpc"
	"google.golang.org/grpc"

	"github.com/zrpcio/zrpc/bench/echo"
)

// Listening starts the line a server process writes once it accepts
// connections: "listening <addr>".
const Listening = "listening "

// Serve is the server process of system grpc-go or go-zero (zrpc's is
// cmd/zrpcecho): it serves the echo service on listen with the system's
// default server, writes Listening and the address to out once it accepts
// connections, and serves until ctx ends.
func Serve(ctx context.Context, system, listen string, out io.Writer) error {
	switch system {
	case GRPC:
		return serveGRPC(ctx, listen, out)
	case GoZero:
		return serveGoZero(ctx, listen, out)
	}
	return fmt.Errorf("serve: system %q has no server here (want %s or %s; zrpc's is zrpcecho)", system, GRPC, GoZero)
}

func serveGRPC(ctx context.Context, listen string, out io.Writer) error {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	s := grpc.NewServer()
	echo.Register(s)
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()
	fmt.Fprintln(out, Listening+ln.Addr().String())
	select {
	case <-ctx.Done():
		s.Stop()
		<-done
		return nil
	case err := <-done:
		return err
	}
}

// serveGoZero runs go-zero's zrpc server with its defaults (as a service
// loading an empty config gets them) and no etcd: it only listens. Its
// Start blocks without a way to stop it, so the process ends with ctx.
func serveGoZero(ctx context.Context, listen string, out io.Writer) error {
	QuietGoZero()
	var c gozero.RpcServerConf
	if err := conf.FillDefault(&c); err != nil {
		return err
	}
	c.Name, c.ListenOn = EchoService, listen
	c.Log.Level = "error"
	c.Log.Stat = false
	s, err := gozero.NewServer(c, func(s *grpc.Server) { echo.Register(s) })
	if err != nil {
		return err
	}
	go s.Start()
	if err := waitAccepting(ctx, listen); err != nil {
		return err
	}
	fmt.Fprintln(out, Listening+listen)
	<-ctx.Done()
	s.Stop()
	return nil
}

// waitAccepting polls addr until a TCP connection to it succeeds.
func waitAccepting(ctx context.Context, addr string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", addr)
		if err == nil {
			c.Close()
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not accepting: %w", addr, err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}
