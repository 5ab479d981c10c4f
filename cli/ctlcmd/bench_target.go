package ctlcmd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/zrpcio/zrpc/client"
	"github.com/zrpcio/zrpc/gen"
	"github.com/zrpcio/zrpc/loadgen"
	"github.com/zrpcio/zrpc/rpc"
	"github.com/zrpcio/zrpc/rpc/clientchain"
	"github.com/zrpcio/zrpc/rpc/resolver"
)

// Target schemes of zrpcctl bench.
const (
	zrpcTargetPrefix   = resolver.Scheme + ":///"
	directTargetPrefix = resolver.DirectScheme + ":///"
)

// benchTarget returns the target to dial: flag in its full form, or, when
// flag is empty, zrpc:/// and the service part of method.
func benchTarget(flag, method string) (string, error) {
	const forms = "want zrpc:///SERVICE, direct:///HOST:PORT[,HOST:PORT] or HOST:PORT"
	if flag == "" {
		svc, _, _ := strings.Cut(strings.TrimPrefix(method, "/"), "/")
		if svc == "" {
			return "", fmt.Errorf("method %q names no service to find through the agents: name it SERVICE/METHOD or give --target", method)
		}
		return zrpcTargetPrefix + svc, nil
	}
	switch {
	case strings.HasPrefix(flag, zrpcTargetPrefix):
		svc := strings.TrimPrefix(flag, zrpcTargetPrefix)
		if svc == "" || strings.ContainsAny(svc, "/,") {
			return "", fmt.Errorf("invalid --target %q: %s (one service name after zrpc:///)", flag, forms)
		}
		return flag, nil
	case strings.HasPrefix(flag, directTargetPrefix):
		list := strings.TrimPrefix(flag, directTargetPrefix)
		for addr := range strings.SplitSeq(list, ",") {
			if err := checkHostPort(addr); err != nil {
				return "", fmt.Errorf("invalid --target %q: address %q: %w", flag, addr, err)
			}
		}
		return flag, nil
	case strings.Contains(flag, "://"):
		return "", fmt.Errorf("invalid --target %q: %s", flag, forms)
	}
	if err := checkHostPort(flag); err != nil {
		return "", fmt.Errorf("invalid --target %q: %w (%s)", flag, err, forms)
	}
	return directTargetPrefix + flag, nil
}

// checkHostPort checks that addr is host:port with a port in 1..65535.
func checkHostPort(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("want host:port: %w", err)
	}
	if host == "" {
		return errors.New("want host:port: the host is missing")
	}
	if p, err := strconv.ParseUint(port, 10, 16); err != nil || p == 0 {
		return fmt.Errorf("want host:port: port %q is not in 1..65535", port)
	}
	return nil
}

// benchConns are the connections of a load and the agent client that
// resolves a zrpc:/// target.
type benchConns struct {
	target string
	conns  []grpc.ClientConnInterface
	closes []func() error
}

// dialBench opens n connections to target and waits, up to timeout,
// until each has a ready instance; each with chain as its client chain,
// or none when chain is nil.
func dialBench(ctx context.Context, o *options, target, serverName string, n int, timeout time.Duration, chain *clientchain.Config, stderr io.Writer) (*benchConns, error) {
	bc := &benchConns{target: target}
	log := newCLILogger(stderr, slog.LevelWarn)
	opts := []rpc.DialOption{rpc.WithWaitReady(), rpc.WithoutChain()}
	if chain != nil {
		opts = []rpc.DialOption{rpc.WithWaitReady(), rpc.WithChain(*chain)}
	}
	if o.tls.files.Enabled() {
		f := o.tls.files
		opts = append(opts, rpc.WithTLS(rpc.TLSConfig{CA: f.CA, Cert: f.Cert, Key: f.Key, ServerName: serverName}))
	}
	if strings.HasPrefix(target, zrpcTargetPrefix) {
		tc, err := o.tls.config()
		if err != nil {
			return nil, err
		}
		c, err := client.New(client.Config{Endpoints: o.endpoints(), DialTimeout: timeout, Logger: log, TLS: tc, Token: o.token})
		if err != nil {
			return nil, fmt.Errorf("create agent client: %w", err)
		}
		bc.closes = append(bc.closes, c.Close)
		opts = append(opts, rpc.WithResolverOptions(resolver.WithClient(c), resolver.WithLogger(log)))
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for range n {
		conn, err := rpc.Dial(ctx, target, opts...)
		if err != nil {
			bc.Close()
			return nil, bc.explain(err, timeout, o.addr)
		}
		bc.conns = append(bc.conns, conn)
		bc.closes = append(bc.closes, conn.Close)
	}
	return bc, nil
}

// explain adds what to check to a failed dial.
func (bc *benchConns) explain(err error, timeout time.Duration, agents string) error {
	if errors.Is(err, rpc.ErrServerNameRequired) {
		return &hintError{err: err, hint: "give the name the service's certificate carries with --server-name (its service's name, e.g. user.rpc)"}
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	if svc, ok := strings.CutPrefix(bc.target, zrpcTargetPrefix); ok {
		return &hintError{err: err, hint: fmt.Sprintf("no passing instance of %s answered within --connect-timeout %s; see `zrpcctl service get %s` (agents: %s)", svc, timeout, svc, agents)}
	}
	return &hintError{err: err, hint: fmt.Sprintf("nothing answered at %s within --connect-timeout %s; is the server running?", strings.TrimPrefix(bc.target, directTargetPrefix), timeout)}
}

// Close closes the connections, then the agent client.
func (bc *benchConns) Close() error {
	var errs []error
	for i := len(bc.closes) - 1; i >= 0; i-- {
		errs = append(errs, bc.closes[i]())
	}
	return errors.Join(errs...)
}

// reflectMethod finds method among the services the target describes
// through gRPC reflection.
func (bc *benchConns) reflectMethod(ctx context.Context, method string, timeout time.Duration) (protoreflect.MethodDescriptor, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	services, err := loadgen.Reflect(ctx, bc.conns[0])
	if errors.Is(err, loadgen.ErrNoReflection) {
		return nil, &hintError{err: err, hint: "give the method's .proto file with --proto (and -I for its imports)"}
	}
	if err != nil {
		return nil, fmt.Errorf("ask %s for its methods: %w", bc.target, err)
	}
	return loadgen.FindMethod(services, method)
}

// protoMethod finds method among the services of a .proto file.
func protoMethod(ctx context.Context, file string, importPaths []string, method string) (protoreflect.MethodDescriptor, error) {
	parsed, err := gen.Parse(ctx, gen.ParseConfig{File: file, ImportPaths: importPaths})
	if err != nil {
		return nil, fmt.Errorf("invalid --proto: %w", err)
	}
	var services []protoreflect.ServiceDescriptor
	for i := range parsed.Desc.Services().Len() {
		services = append(services, parsed.Desc.Services().Get(i))
	}
	m, err := loadgen.FindMethod(services, method)
	if err != nil {
		return nil, fmt.Errorf("--proto %s: %w", file, err)
	}
	return m, nil
}

// chainConfig is the client chain of the load's connections: rpc.Dial's
// default with --chain (or --idempotent), nil without.
func (b *benchOptions) chainConfig() *clientchain.Config {
	if !b.chain && !b.idempotent {
		return nil
	}
	cfg := clientchain.DefaultConfig()
	return &cfg
}

// reflectBenchMethod finds method by reflection over one connection of
// its own, without the client chain.
func reflectBenchMethod(ctx context.Context, o *options, target, serverName, method string, timeout time.Duration, stderr io.Writer) (protoreflect.MethodDescriptor, error) {
	bc, err := dialBench(ctx, o, target, serverName, 1, timeout, nil, stderr)
	if err != nil {
		return nil, err
	}
	defer bc.Close()
	return bc.reflectMethod(ctx, method, timeout)
}
