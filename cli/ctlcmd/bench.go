package ctlcmd

import (
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/zrpcio/zrpc/loadgen"
)

// Defaults of zrpcctl bench.
const (
	defaultBenchDuration       = 10 * time.Second
	defaultBenchConcurrency    = 50
	defaultBenchCallTimeout    = 20 * time.Second
	defaultBenchConnectTimeout = 10 * time.Second
	maxBenchDataFile           = 64 << 20
	// maxBenchConcurrency bounds -c: a caller is a goroutine, and a typo
	// of a few zeros would start enough of them to exhaust memory.
	maxBenchConcurrency = 100_000
)

// benchOptions are zrpcctl bench's flags.
type benchOptions struct {
	target         string
	serverName     string
	data           string
	dataFile       string
	concurrency    int
	requests       int64
	duration       time.Duration
	rate           float64
	connections    int
	timeout        time.Duration
	connectTimeout time.Duration
	metadata       []string
	metadataFile   string
	proto          string
	importPaths    []string
	progress       bool
	chain          bool
	idempotent     bool
}

func newBenchCommand(o *options) *cobra.Command {
	b := &benchOptions{}
	cmd := &cobra.Command{
		Use:   "bench SERVICE/METHOD",
		Short: "Load a zrpc or plain gRPC service with calls of one method and report throughput, latency and errors",
		Long: `Send calls of one unary method as fast as the service answers them (or at
--rps), from -c callers over --connections connections, until -n calls were
sent or -d is over (without either, -d 10s). Then print the calls per
second, the latency percentiles (p50, p90, p99, p99.9, min, mean, max), the
calls by status code and a latency histogram; -o json prints one JSON
object. Latencies go into a log-linear histogram (under 1% error), so a
long run costs no memory. Ctrl-C stops the load and prints what it
measured. While it runs, progress is drawn once a second on stderr when
stderr is a terminal (or with --progress).

The method is named pkg.Service/Method or Service/Method; when the part
before the slash is no service of the server (a zrpc service name such as
user.rpc), the one service with that method is taken. Its request and
response types come from the server's gRPC reflection (zrpc services serve
it), or from --proto. The request is --data (or --data-file) in the
message's JSON form; without either it is the empty message.

The target is zrpc:///SERVICE (instances found through the agents of
--addr, balanced as zrpc clients balance), direct:///HOST:PORT[,HOST:PORT]
or HOST:PORT. Without --target it is zrpc:/// and the part of the method
before the slash. Calls go without zrpc's client chain (no retries, no
breaker): every failure counts. With --chain they go through the chain
an rpc.Dial client has by default (a 2 s timeout per attempt, up to 3
attempts within a retry budget, a circuit breaker per method): the
report then counts what a zrpc client would see fail, e.g. while
instances fail or a network is cut. As for any method not known to be
idempotent, the chain retries a call only when it provably reached no
server; --idempotent declares the method safe to run twice, and the
chain also retries it on Unavailable, ResourceExhausted, Aborted,
Internal and attempt timeouts. With --tls-* set, the service's and the
agents' connections are mutual TLS.`,
		Example: `  zrpcctl bench user.rpc/GetUserInfo --data '{"user_id":1}' -c 64 -d 20s
  zrpcctl bench user.UserService/GetUserInfo --target 127.0.0.1:8080 -n 100000 -o json
  zrpcctl bench Greeter/SayHello --target direct:///10.0.0.5:9000,10.0.0.6:9000 --rps 2000 -d 1m
  zrpcctl bench shop.v1.Cart/Get --proto api/shop/v1/cart.proto -I api --data-file req.json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return b.run(cmd, o, args[0])
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&b.target, "target", "", "zrpc:///SERVICE, direct:///HOST:PORT[,HOST:PORT] or HOST:PORT (default zrpc:/// and the method's part before the slash)")
	fs.StringVar(&b.serverName, "server-name", "", "with --tls-ca/--tls-cert/--tls-key: the name the service's certificate must carry (default: a zrpc:/// target's service, a direct:/// target's host name; needed for an IP address or several addresses)")
	fs.StringVar(&b.data, "data", "", "the request in JSON, e.g. '{\"user_id\":1}' (default: the empty message)")
	fs.StringVar(&b.dataFile, "data-file", "", "file holding the request in JSON (- reads stdin)")
	fs.IntVarP(&b.concurrency, "concurrency", "c", defaultBenchConcurrency, "callers, each with one call in flight")
	fs.Int64VarP(&b.requests, "requests", "n", 0, "stop after this many calls (0: no bound)")
	fs.DurationVarP(&b.duration, "duration", "d", defaultBenchDuration, "stop starting calls after this long (0: no bound); not applied when only -n is given")
	fs.Float64Var(&b.rate, "rps", 0, "start at most this many calls per second over all callers (0: as fast as the service answers)")
	fs.IntVar(&b.connections, "connections", 1, "gRPC connections the callers share (caller i uses connection i mod N)")
	fs.DurationVar(&b.timeout, "timeout", defaultBenchCallTimeout, "deadline of each call (0: none); a call past it counts as DeadlineExceeded")
	fs.DurationVar(&b.connectTimeout, "connect-timeout", defaultBenchConnectTimeout, "how long to wait for the target to be ready and to answer reflection")
	fs.StringArrayVar(&b.metadata, "metadata", nil, "gRPC metadata sent with every call, as key=value (repeatable); visible in the process list, so put secrets in --metadata-file")
	fs.StringVar(&b.metadataFile, "metadata-file", "", "file of key=value lines sent as metadata with every call (# starts a comment), e.g. authorization=Bearer <token> for a service with Tokens")
	fs.StringVar(&b.proto, "proto", "", "the .proto file declaring the method, instead of asking the server by reflection")
	fs.StringArrayVarP(&b.importPaths, "proto_path", "I", nil, "directory to search --proto's imports in (repeatable)")
	fs.BoolVar(&b.progress, "progress", false, "report progress once a second on stderr even when it is not a terminal")
	fs.BoolVar(&b.chain, "chain", false, "call through zrpc's default client chain (per-attempt timeout, retries, circuit breaker) and count only the failures it lets through")
	fs.BoolVar(&b.idempotent, "idempotent", false, "with --chain: the method is safe to run twice, so the chain retries it on errors from the server too (implies --chain)")
	return cmd
}

// check validates the flags' values before anything is read or dialled.
func (b *benchOptions) check(cmd *cobra.Command) error {
	switch {
	case b.concurrency < 1:
		return fmt.Errorf("invalid -c %d: want at least 1 caller", b.concurrency)
	case b.concurrency > maxBenchConcurrency:
		return fmt.Errorf("invalid -c %d: at most %d callers (each is a goroutine with a call in flight); run several zrpcctl bench processes for more", b.concurrency, maxBenchConcurrency)
	case b.connections < 1:
		return fmt.Errorf("invalid --connections %d: want at least 1", b.connections)
	case b.connections > b.concurrency:
		return fmt.Errorf("invalid --connections %d: more than the %d callers of -c, some would carry no call", b.connections, b.concurrency)
	case b.requests < 0:
		return fmt.Errorf("invalid -n %d: want a number of calls, or 0 for no bound", b.requests)
	case b.duration < 0:
		return fmt.Errorf("invalid -d %s: want a positive duration, or 0 for no bound", b.duration)
	case b.rate < 0 || math.IsNaN(b.rate) || math.IsInf(b.rate, 0):
		return fmt.Errorf("invalid --rps %g: want calls per second, or 0 for no cap", b.rate)
	case b.timeout < 0:
		return fmt.Errorf("invalid --timeout %s: want a positive duration, or 0 for none", b.timeout)
	case b.connectTimeout <= 0:
		return fmt.Errorf("invalid --connect-timeout %s: want a positive duration", b.connectTimeout)
	case cmd.Flags().Changed("data") && b.dataFile != "":
		return errors.New("--data and --data-file are both set: give one")
	case len(b.importPaths) > 0 && b.proto == "":
		return errors.New("-I is set without --proto: it says where --proto's imports are")
	}
	if b.requests > 0 && !cmd.Flags().Changed("duration") {
		b.duration = 0 // -n alone bounds the load
	}
	if b.requests == 0 && b.duration == 0 {
		return errors.New("-n 0 and -d 0: the load would never end; give -n, -d or both")
	}
	return nil
}

// outgoingMetadata parses --metadata-file, then --metadata.
func (b *benchOptions) outgoingMetadata() (metadata.MD, error) {
	md := metadata.MD{}
	if b.metadataFile != "" {
		data, err := os.ReadFile(b.metadataFile)
		if err != nil {
			return nil, fmt.Errorf("read --metadata-file: %w", err)
		}
		for i, line := range strings.Split(string(data), "\n") {
			if line = strings.TrimSpace(line); line == "" || strings.HasPrefix(line, "#") {
				continue
			}
			// The line is not quoted back: it may hold a secret.
			if err := appendMetadata(md, line); err != nil {
				return nil, fmt.Errorf("invalid --metadata-file %s, line %d: %w", b.metadataFile, i+1, err)
			}
		}
	}
	for _, kv := range b.metadata {
		if err := appendMetadata(md, kv); err != nil {
			return nil, fmt.Errorf("invalid --metadata %q: %w", kv, err)
		}
	}
	return md, nil
}

// appendMetadata adds one key=value pair to md. It refuses the pairs gRPC
// refuses to send: every call would fail with Internal, and the report
// would not say why.
func appendMetadata(md metadata.MD, kv string) error {
	k, v, ok := strings.Cut(kv, "=")
	if k = strings.ToLower(strings.TrimSpace(k)); !ok || k == "" {
		return errors.New("want key=value")
	}
	v = strings.TrimSpace(v)
	if strings.ContainsFunc(k, func(r rune) bool {
		return (r < 'a' || r > 'z') && (r < '0' || r > '9') && r != '-' && r != '_' && r != '.'
	}) {
		return fmt.Errorf("key %q: a gRPC metadata key holds only a-z, 0-9, '-', '_' and '.'", k)
	}
	if !strings.HasSuffix(k, "-bin") && strings.ContainsFunc(v, func(r rune) bool { return r < 0x20 || r > 0x7e }) {
		return fmt.Errorf("value of %s: gRPC sends only printable ASCII in a value (binary values go under a key ending in -bin)", k)
	}
	md.Append(k, v)
	return nil
}

// requestJSON returns the request's JSON from --data or --data-file.
func (b *benchOptions) requestJSON(stdin io.Reader) ([]byte, error) {
	if b.dataFile == "" {
		return []byte(b.data), nil
	}
	r := stdin
	if b.dataFile != "-" {
		f, err := os.Open(b.dataFile)
		if err != nil {
			return nil, fmt.Errorf("read --data-file: %w", err)
		}
		defer f.Close()
		r = f
	}
	data, err := io.ReadAll(io.LimitReader(r, maxBenchDataFile+1))
	if err != nil {
		return nil, fmt.Errorf("read --data-file %s: %w", b.dataFile, err)
	}
	if len(data) > maxBenchDataFile {
		return nil, fmt.Errorf("read --data-file %s: larger than %d MiB", b.dataFile, maxBenchDataFile>>20)
	}
	return data, nil
}

// requestSource names the flag the request's JSON comes from.
func (b *benchOptions) requestSource() string {
	if b.dataFile != "" {
		return "--data-file " + b.dataFile
	}
	return "--data"
}

// benchRequest decodes the request for m from data, read from source.
func benchRequest(m protoreflect.MethodDescriptor, data []byte, source string) (proto.Message, error) {
	req, err := loadgen.NewRequest(m, data)
	if err != nil {
		return nil, fmt.Errorf("invalid %s: %w", source, err)
	}
	return req, nil
}

// run checks the flags, finds the method, dials the target, runs the load
// until it is done or interrupted, and prints the result.
func (b *benchOptions) run(cmd *cobra.Command, o *options, method string) error {
	if err := b.check(cmd); err != nil {
		return err
	}
	target, err := benchTarget(b.target, method)
	if err != nil {
		return err
	}
	p, err := newPrinter(cmd.OutOrStdout(), o.output)
	if err != nil {
		return err
	}
	data, err := b.requestJSON(cmd.InOrStdin())
	if err != nil {
		return err
	}
	md, err := b.outgoingMetadata()
	if err != nil {
		return err
	}
	cmd.SilenceUsage = true

	ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	cfg := loadgen.Config{
		Concurrency: b.concurrency, Requests: b.requests, Duration: b.duration,
		Rate: b.rate, Timeout: b.timeout, Metadata: md,
	}
	if b.proto != "" { // the types are known before anything is dialled
		if cfg.Method, err = protoMethod(ctx, b.proto, b.importPaths, method); err != nil {
			return err
		}
		if cfg.Request, err = benchRequest(cfg.Method, data, b.requestSource()); err != nil {
			return err
		}
	}
	chain := b.chainConfig()
	if cfg.Method == nil && chain != nil && b.idempotent {
		// The chain's idempotent methods are named when it is dialled:
		// learn the method's full name over a connection of its own first.
		if cfg.Method, err = reflectBenchMethod(ctx, o, target, b.serverName, method, b.connectTimeout, cmd.ErrOrStderr()); err != nil {
			return err
		}
	}
	if cfg.Method != nil && chain != nil && b.idempotent {
		chain.Retry.Idempotent = []string{"/" + string(cfg.Method.Parent().FullName()) + "/" + string(cfg.Method.Name())}
	}
	bc, err := dialBench(ctx, o, target, b.serverName, b.connections, b.connectTimeout, chain, cmd.ErrOrStderr())
	if err != nil {
		return err
	}
	defer bc.Close()
	cfg.Conns = bc.conns
	if cfg.Method == nil {
		if cfg.Method, err = bc.reflectMethod(ctx, method, b.connectTimeout); err != nil {
			return err
		}
	}
	if cfg.Request == nil {
		if cfg.Request, err = benchRequest(cfg.Method, data, b.requestSource()); err != nil {
			return err
		}
	}
	progress := newBenchProgress(cmd.ErrOrStderr(), b.progress)
	cfg.Progress = progress.report
	res, err := loadgen.Run(ctx, cfg)
	progress.done()
	if err != nil {
		return err
	}
	if err := printBench(p, newBenchReport(target, b, res)); err != nil {
		return err
	}
	if res.Interrupted {
		return fmt.Errorf("interrupted after %d calls: the results above cover them", res.Requests)
	}
	return nil
}
