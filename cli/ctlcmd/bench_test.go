package ctlcmd

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/zrpcio/zrpc/internal/grpctest"
	"github.com/zrpcio/zrpc/internal/pki/pkitest"
)

// serveHealth starts grpc.health.v1 with reflection on loopback: a
// service whose types come from reflection. "up" is SERVING; any other
// service name answers NotFound.
func serveHealth(t *testing.T) string {
	t.Helper()
	return grpctest.Serve(t, func(s *grpc.Server) {
		h := health.NewServer()
		h.SetServingStatus("up", healthpb.HealthCheckResponse_SERVING)
		healthpb.RegisterHealthServer(s, h)
		reflection.Register(s)
	})
}

// TestBenchWithTheChainCountsOnlyWhatItLetsThrough: a service that fails
// one Check in 20 with Unavailable shows those failures to a bench without
// the chain, and to one with --chain too (the calls reached the server,
// and a method not known to be idempotent is not run twice), but none to
// one with --idempotent, whose chain retries them.
func TestBenchWithTheChainCountsOnlyWhatItLetsThrough(t *testing.T) {
	t.Setenv(addrEnv, "")
	var calls atomic.Int64
	failSome := func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if r, ok := req.(*healthpb.HealthCheckRequest); ok && r.GetService() == "slow" {
			time.Sleep(2200 * time.Millisecond) // past the chain's 2 s per attempt
			return handler(ctx, req)
		}
		if info.FullMethod == "/grpc.health.v1.Health/Check" && calls.Add(1)%20 == 0 {
			return nil, status.Error(codes.Unavailable, "one in 20 fails")
		}
		return handler(ctx, req)
	}
	addr := grpctest.Serve(t, func(s *grpc.Server) {
		h := health.NewServer()
		h.SetServingStatus("up", healthpb.HealthCheckResponse_SERVING)
		h.SetServingStatus("slow", healthpb.HealthCheckResponse_SERVING)
		healthpb.RegisterHealthServer(s, h)
		reflection.Register(s)
	}, grpc.UnaryInterceptor(failSome))
	args := []string{"Health/Check", "--target", addr, "--data", `{"service":"up"}`, "-n", "400", "-c", "4"}
	if r := benchJSON(t, args...); r.Chain || r.Errors != 20 || r.Codes["Unavailable"] != 20 {
		t.Fatalf("without the chain: chain %v, errors %d, codes %v; want the service's 20 Unavailable counted", r.Chain, r.Errors, r.Codes)
	}
	if r := benchJSON(t, append(args, "--chain")...); !r.Chain || r.Errors != 20 || r.Codes["Unavailable"] != 20 {
		t.Fatalf("with --chain: chain %v, errors %d, codes %v; want the 20 Unavailable the server answered, not run twice", r.Chain, r.Errors, r.Codes)
	}
	// One caller at a time, so a retry is the call after the failure and
	// cannot itself be a twentieth: with several callers it could land on
	// one, and a call failing three times is the chain's right answer.
	sequential := []string{"Health/Check", "--target", addr, "--data", `{"service":"up"}`, "-n", "400", "-c", "1"}
	r := benchJSON(t, append(sequential, "--idempotent")...)
	if !r.Chain || !r.Idempotent || r.Errors != 0 || r.Codes["OK"] != 400 {
		t.Fatalf("with --idempotent: chain %v, idempotent %v, errors %d, codes %v; want 400 OK, the chain retrying the failures", r.Chain, r.Idempotent, r.Errors, r.Codes)
	}
	// Calls slower than the chain's timeout per attempt end there.
	slow := []string{"Health/Check", "--target", addr, "--data", `{"service":"slow"}`, "-n", "4", "-c", "4"}
	if r := benchJSON(t, slow...); r.Errors != 0 {
		t.Fatalf("slow calls without the chain: errors %d, codes %v; want them all OK", r.Errors, r.Codes)
	}
	if r := benchJSON(t, append(slow, "--chain")...); r.Codes["DeadlineExceeded"] != 4 {
		t.Fatalf("slow calls with --chain: codes %v; want all 4 ended by the 2 s timeout per attempt", r.Codes)
	}
}

// benchJSON runs zrpcctl bench -o json with args and decodes its report.
func benchJSON(t *testing.T, args ...string) benchReport {
	t.Helper()
	res := runZrpcctl(testContext(t), t, "", append([]string{"bench", "-o", "json"}, args...)...)
	if res.err != nil {
		t.Fatalf("zrpcctl bench %s: %v\nstderr: %s", strings.Join(args, " "), res.err, res.stderr)
	}
	var r benchReport
	if err := json.Unmarshal([]byte(res.stdout), &r); err != nil {
		t.Fatalf("bench output is not one JSON object: %v\n%s", err, res.stdout)
	}
	return r
}

func TestBenchFindsTheMethodByReflectionAndCountsCodes(t *testing.T) {
	t.Setenv(addrEnv, "")
	addr := serveHealth(t)
	r := benchJSON(t, "grpc.health.v1.Health/Check", "--target", addr, "--data", `{"service":"up"}`, "-n", "300", "-c", "8", "--connections", "2")
	if r.Requests != 300 || r.Errors != 0 || r.Codes["OK"] != 300 || len(r.Codes) != 1 {
		t.Fatalf("requests %d errors %d codes %v, want 300 OK", r.Requests, r.Errors, r.Codes)
	}
	if r.Method != "grpc.health.v1.Health/Check" || r.Target != "direct:///"+addr || r.Concurrency != 8 || r.Connections != 2 {
		t.Fatalf("report names method %q target %q concurrency %d connections %d", r.Method, r.Target, r.Concurrency, r.Connections)
	}
	l := r.LatencyMS
	if !(l.Min > 0 && l.Min <= l.P50 && l.P50 <= l.P90 && l.P90 <= l.P99 && l.P99 <= l.P999 && l.P999 <= l.Max) || r.QPS <= 0 {
		t.Fatalf("latency %+v qps %g: want 0 < min <= p50 <= ... <= max", l, r.QPS)
	}
	var binned uint64
	for _, b := range r.Histogram {
		binned += b.Count
	}
	if binned != 300 {
		t.Fatalf("histogram holds %d calls, want 300", binned)
	}

	r = benchJSON(t, "Health/Check", "--target", addr, "--data", `{"service":"down"}`, "-n", "40")
	if r.Codes["NotFound"] != 40 || r.Errors != 40 {
		t.Fatalf("codes %v errors %d, want 40 NotFound", r.Codes, r.Errors)
	}
}

func TestBenchPrintsATextReport(t *testing.T) {
	t.Setenv(addrEnv, "")
	addr := serveHealth(t)
	res := runZrpcctl(testContext(t), t, "", "bench", "Health/Check", "--target", "direct:///"+addr, "-n", "50", "--rps", "1000")
	if res.err != nil {
		t.Fatalf("%v\n%s", res.err, res.stderr)
	}
	for _, want := range []string{"Method:      grpc.health.v1.Health/Check", "Requests:    50\n", "Errors:      0\n",
		"Rate limit:  1000 calls/s", "p99.9", "Status codes:\n  OK  50\n", "Latency histogram", "■"} {
		if !strings.Contains(res.stdout, want) {
			t.Errorf("output lacks %q:\n%s", want, res.stdout)
		}
	}
	if res.stderr != "" {
		t.Errorf("progress on stderr that is no terminal: %q", res.stderr)
	}
}

func TestBenchTakesTheTypesFromAProtoFile(t *testing.T) {
	t.Setenv(addrEnv, "")
	var tenant []string
	addr := grpctest.Serve(t, func(s *grpc.Server) {
		grpctest.RegisterEcho(s, func(ctx context.Context, in *wrapperspb.BytesValue) (*wrapperspb.BytesValue, error) {
			if string(in.GetValue()) == "slow" {
				<-ctx.Done() // answers only past the caller's deadline
				return nil, ctx.Err()
			}
			md, _ := metadata.FromIncomingContext(ctx)
			tenant = append(md.Get("tenant"), md.Get("zone")...)
			return in, nil
		})
	})
	dir := t.TempDir()
	file := filepath.Join(dir, "echo.proto")
	src := `syntax = "proto3";
package test;
import "google/protobuf/wrappers.proto";
service Echo { rpc Call(google.protobuf.BytesValue) returns (google.protobuf.BytesValue); }
`
	if err := os.WriteFile(file, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(dir, "req.json")
	if err := os.WriteFile(data, []byte(`"aGk="`), 0o644); err != nil {
		t.Fatal(err)
	}
	mdFile := filepath.Join(dir, "metadata")
	if err := os.WriteFile(mdFile, []byte("# what every call carries\nTenant = blue\n\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// The echo server serves no reflection: the types come from the file.
	r := benchJSON(t, "test.Echo/Call", "--target", addr, "--proto", file, "--data-file", data, "-n", "25", "-c", "1",
		"--metadata-file", mdFile, "--metadata", "zone=a")
	if r.Codes["OK"] != 25 {
		t.Fatalf("codes %v, want 25 OK", r.Codes)
	}
	if len(tenant) != 2 || tenant[0] != "blue" || tenant[1] != "a" {
		t.Fatalf("server saw metadata tenant, zone = %q, want \"blue\" (the file's) and \"a\" (the flag's)", tenant)
	}

	// bench's own --timeout is each call's deadline.
	r = benchJSON(t, "test.Echo/Call", "--target", addr, "--proto", file, "--data", `"c2xvdw=="`, "-n", "3", "--timeout", "20ms")
	if r.Codes["DeadlineExceeded"] != 3 {
		t.Fatalf("codes %v, want 3 DeadlineExceeded past --timeout 20ms", r.Codes)
	}
}

func TestBenchReportsProgressWhenAsked(t *testing.T) {
	t.Setenv(addrEnv, "")
	addr := serveHealth(t)
	res := runZrpcctl(testContext(t), t, "", "bench", "Health/Check", "--target", addr, "-d", "2500ms", "-c", "2", "--progress")
	if res.err != nil {
		t.Fatalf("%v\n%s", res.err, res.stderr)
	}
	if !strings.Contains(res.stderr, " calls  0 errors  ") || !strings.Contains(res.stderr, "calls/s\n") {
		t.Fatalf("stderr %q: want a progress line (2.5 s at one per second)", res.stderr)
	}
	if !strings.Contains(res.stdout, "Status codes:") {
		t.Fatalf("no report after the progress:\n%s", res.stdout)
	}
}

func TestBenchRejectsBadInputClearly(t *testing.T) {
	t.Setenv(addrEnv, "")
	addr := serveHealth(t)
	noReflection := grpctest.Serve(t, func(s *grpc.Server) { grpctest.RegisterEcho(s, nil) })
	badMetadata := filepath.Join(t.TempDir(), "metadata")
	if err := os.WriteFile(badMetadata, []byte("a=1\nsecret-without-key\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	badData := filepath.Join(t.TempDir(), "request.json")
	if err := os.WriteFile(badData, []byte(`{"svc":1}`), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"unknown method", []string{"Health/Chek", "--target", addr, "-n", "1"}, "unknown method \"Health/Chek\"; the server has:\n  grpc.health.v1.Health/Check"},
		{"method form", []string{"Check", "--target", addr, "-n", "1"}, "want pkg.Service/Method or Service/Method"},
		{"streaming method", []string{"Health/Watch", "--target", addr, "-n", "1"}, "streaming method"},
		{"bad data", []string{"Health/Check", "--target", addr, "-n", "1", "--data", `{"svc":1}`}, `invalid --data: request of grpc.health.v1.Health.Check is a grpc.health.v1.HealthCheckRequest: proto:`},
		{"bad data file", []string{"Health/Check", "--target", addr, "-n", "1", "--data-file", badData}, "invalid --data-file " + badData + ": request of grpc.health.v1.Health.Check"},
		{"no reflection", []string{"test.Echo/Call", "--target", noReflection, "-n", "1"}, "does not serve gRPC reflection"},
		{"unknown scheme", []string{"Health/Check", "--target", "dns:///x:1"}, "want zrpc:///SERVICE, direct:///HOST:PORT[,HOST:PORT] or HOST:PORT"},
		{"bad direct address", []string{"Health/Check", "--target", "direct:///a:1,b"}, `address "b": want host:port`},
		{"bad port", []string{"Health/Check", "--target", "localhost:0"}, `port "0" is not in 1..65535`},
		{"zrpc target of two", []string{"Health/Check", "--target", "zrpc:///a,b"}, "one service name after zrpc:///"},
		{"no bound", []string{"Health/Check", "--target", addr, "-d", "0"}, "the load would never end"},
		{"no callers", []string{"Health/Check", "-c", "0"}, "invalid -c 0"},
		{"callers by the hundred million", []string{"Health/Check", "-c", "100000000"}, "invalid -c 100000000: at most 100000 callers"},
		{"idle connections", []string{"Health/Check", "-c", "2", "--connections", "3"}, "more than the 2 callers"},
		{"negative rps", []string{"Health/Check", "--rps", "-5"}, "invalid --rps -5"},
		{"rps not a number", []string{"Health/Check", "--rps", "NaN"}, "invalid --rps NaN"},
		{"infinite rps", []string{"Health/Check", "--rps", "Inf"}, "invalid --rps +Inf"},
		{"data twice", []string{"Health/Check", "--data", "{}", "--data-file", "x.json"}, "--data and --data-file are both set"},
		{"missing data file", []string{"Health/Check", "--target", addr, "--data-file", filepath.Join(t.TempDir(), "none.json")}, "read --data-file"},
		{"bad metadata", []string{"Health/Check", "--metadata", "tenant"}, `invalid --metadata "tenant": want key=value`},
		{"bad metadata key", []string{"Health/Check", "--target", addr, "-n", "1", "--metadata", "tenant id=5"}, `invalid --metadata "tenant id=5": key "tenant id"`},
		{"bad metadata value", []string{"Health/Check", "--target", addr, "-n", "1", "--metadata", "tenant=zürich"}, "value of tenant: gRPC sends only printable ASCII"},
		{"bad metadata file", []string{"Health/Check", "--metadata-file", badMetadata}, "invalid --metadata-file " + badMetadata + ", line 2: want key=value"},
		{"import path alone", []string{"Health/Check", "-I", "."}, "-I is set without --proto"},
		{"bad proto", []string{"Health/Check", "--target", addr, "--proto", filepath.Join(t.TempDir(), "none.proto")}, "invalid --proto"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := runZrpcctl(testContext(t), t, "", append([]string{"bench", "--connect-timeout", "5s"}, tc.args...)...)
			if res.err == nil || !strings.Contains(res.err.Error(), tc.want) {
				t.Fatalf("error %v, want one saying %q", res.err, tc.want)
			}
		})
	}
}

// TestBenchOverTLSToAnIPAsksForTheServerName: a direct:/// target of an
// IP address names no service whose certificate to expect; without
// --server-name the bench refuses to start, saying which flag to give,
// rather than accept any certificate of the CA.
func TestBenchOverTLSToAnIPAsksForTheServerName(t *testing.T) {
	t.Setenv(addrEnv, "")
	f := pkitest.New(t).Service("order.rpc")
	res := runZrpcctl(testContext(t), t, "", "bench", "Health/Check", "--target", "direct:///127.0.0.1:1", "-n", "1",
		"--tls-ca", f.CA, "--tls-cert", f.Cert, "--tls-key", f.Key)
	if res.err == nil || !strings.Contains(res.stderr, "--server-name") {
		t.Fatalf("bench over TLS to an IP without --server-name: %v\nstderr: %s; want it refused naming --server-name", res.err, res.stderr)
	}
}
