package health

import (
	"crypto/tls"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	grpchealth "google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/internal/pki/pkitest"
	"github.com/zrpcio/zrpc/internal/testlog"
	"github.com/zrpcio/zrpc/internal/tlsconf"
)

// serveTLSHealth serves grpc.health.v1 over mutual TLS with the service
// certificate of checked.rpc and returns its address and health server.
func serveTLSHealth(t *testing.T, kit *pkitest.Kit) (string, *grpchealth.Server) {
	t.Helper()
	f := kit.Service("checked.rpc")
	cfg, err := tlsconf.Server(tlsconf.Files{CA: f.CA, Cert: f.Cert, Key: f.Key})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(cfg)))
	hs := grpchealth.NewServer()
	healthpb.RegisterHealthServer(srv, hs)
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
	return ln.Addr().String(), hs
}

// runTLSChecks registers a grpc_tls-checked instance of checked.rpc at
// addr, owned by a keeper whose CheckTLS is checkTLS, and runs its checks
// until the test ends.
func runTLSChecks(t *testing.T, addr string, checkTLS func(string) *tls.Config) *fakeRegistry {
	reg := newFakeRegistry()
	k := New(Config{Agent: "a1", Replica: reg, Writer: reg, Interval: time.Hour, CheckTLS: checkTLS, Logger: testlog.New(t, "a1")})
	check := &pb.Check{Grpc: true, GrpcTls: true, Interval: durationpb.New(50 * time.Millisecond), Timeout: durationpb.New(time.Second)}
	reg.register(&pb.Instance{Service: "checked.rpc", Id: "i1", Node: "a1", Address: addr, Check: check})
	reg.insts[instanceKey{"checked.rpc", "i1"}].Health = pb.Health_WARNING
	runLoop(t, k.RunChecks)
	return reg
}

func waitInstanceHealth(t *testing.T, reg *fakeRegistry, want pb.Health) *pb.Instance {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for reg.health("checked.rpc", "i1") != want {
		if time.Now().After(deadline) {
			t.Fatalf("instance health stayed %v (%q), want %v", reg.health("checked.rpc", "i1"),
				reg.Instance("checked.rpc", "i1").GetHealthOutput(), want)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return reg.Instance("checked.rpc", "i1")
}

// A grpc_tls check dials the instance over mutual TLS with the agent's
// certificate, verifying the service's: it follows the instance's
// grpc.health.v1 like a plaintext check.
func TestTLSChecksDialWithTheAgentCertificate(t *testing.T) {
	kit := pkitest.New(t)
	addr, hs := serveTLSHealth(t, kit)
	agent := kit.Agent("a1")
	certs, err := tlsconf.Load(tlsconf.Files{CA: agent.CA, Cert: agent.Cert, Key: agent.Key})
	if err != nil {
		t.Fatal(err)
	}
	reg := runTLSChecks(t, addr, func(service string) *tls.Config { return certs.ClientConfig(service) })

	waitInstanceHealth(t, reg, pb.Health_PASSING)
	hs.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	if inst := waitInstanceHealth(t, reg, pb.Health_CRITICAL); !strings.Contains(inst.HealthOutput, "NOT_SERVING") {
		t.Fatalf("critical with output %q, want the instance's NOT_SERVING", inst.HealthOutput)
	}
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	waitInstanceHealth(t, reg, pb.Health_PASSING)
}

// An agent without TLS cannot check a TLS instance: critical, saying so.
func TestTLSChecksWithoutAgentCertificateAreCritical(t *testing.T) {
	kit := pkitest.New(t)
	addr, _ := serveTLSHealth(t, kit)
	for name, checkTLS := range map[string]func(string) *tls.Config{
		"no CheckTLS":       nil,
		"CheckTLS says nil": func(string) *tls.Config { return nil },
	} {
		t.Run(name, func(t *testing.T) {
			reg := runTLSChecks(t, addr, checkTLS)
			inst := waitInstanceHealth(t, reg, pb.Health_CRITICAL)
			if !strings.Contains(inst.HealthOutput, "has no certificate to check a TLS service") {
				t.Fatalf("critical with output %q, want it to say the agent has no certificate", inst.HealthOutput)
			}
		})
	}
}
