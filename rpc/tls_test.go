package rpc_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/internal/pki"
	"github.com/zrpcio/zrpc/internal/pki/pkitest"
	"github.com/zrpcio/zrpc/internal/testlog"
	"github.com/zrpcio/zrpc/rpc"
	"github.com/zrpcio/zrpc/testcluster"
)

func tlsSettings(f pkitest.Files) rpc.TLSConfig {
	return rpc.TLSConfig{CA: f.CA, Cert: f.Cert, Key: f.Key}
}

// TestTLSServiceOverMutualTLS: a service with TLS registers through a
// TLS agent, and is called over mutual TLS by a client that
// resolves it through the same agent; plaintext callers and callers
// expecting another service are refused.
func TestTLSServiceOverMutualTLS(t *testing.T) {
	kit := pkitest.New(t)
	c := testcluster.New(t, 1, testcluster.WithTLS(func(agent string) (string, string, string) {
		f := kit.Agent(agent)
		return f.CA, f.Cert, f.Key
	}))
	agent := c.GRPCAddr(0)

	srv, err := rpc.NewServer(rpc.ServerConfig{
		Name: "user.rpc", ListenOn: "127.0.0.1:0", ID: "u1", Agents: []string{agent},
		DrainDelay: 50 * time.Millisecond,
		// Valid for the name user.rpc only, not for its address: callers
		// verify the service they asked for.
		TLS: tlsSettings(kit.Issue(pki.CertRequest{Kind: pki.Service, Name: "user.rpc"})),
	}, rpc.WithServerLogger(testlog.New(t, "server")))
	if err != nil {
		t.Fatal(err)
	}
	echo := &echoService{}
	echo.register(srv.GRPC())
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := srv.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Stop(context.Background()) })
	if got := instances(t, c, "user.rpc"); len(got) != 1 || got[0].Address != srv.Addr() {
		t.Fatalf("registered %v, want u1 at %s", got, srv.Addr())
	}

	caller := tlsSettings(kit.Service("order.rpc"))
	conn, err := rpc.Dial(ctx, "zrpc:///user.rpc", rpc.WithAgents(agent), rpc.WithTLS(caller), rpc.WithWaitReady())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := call(ctx, conn); err != nil {
		t.Fatalf("call over mutual TLS: %v", err)
	}
	if echo.calls.Load() != 1 {
		t.Fatalf("service served %d calls, want 1", echo.calls.Load())
	}

	// A plaintext caller gets no answer.
	plain, err := grpc.NewClient(srv.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	if _, err := healthpb.NewHealthClient(plain).Check(ctx, &healthpb.HealthCheckRequest{}); status.Code(err) != codes.Unavailable {
		t.Fatalf("plaintext health check: err %v, want Unavailable", err)
	}

	// A caller that expects another service refuses this one's certificate.
	wrong := caller
	wrong.ServerName = "payment.rpc"
	other, err := rpc.Dial(ctx, "direct:///"+srv.Addr(), rpc.WithTLS(wrong), rpc.WithoutChain())
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	err = call(ctx, other)
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "payment.rpc") {
		t.Fatalf("call expecting payment.rpc: err %v, want Unavailable naming payment.rpc", err)
	}

	if err := srv.ReloadTLS(); err != nil {
		t.Fatalf("ReloadTLS: %v", err)
	}
}

func TestTLSSettingsFromYAML(t *testing.T) {
	kit := pkitest.New(t)
	f := kit.Service("user.rpc")
	path := filepath.Join(t.TempDir(), "user.yaml")
	yaml := "Name: user.rpc\nListenOn: 127.0.0.1:0\nTLS:\n  CA: " + f.CA + "\n  Cert: " + f.Cert + "\n  Key: " + f.Key + "\n"
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	var cfg rpc.ServerConfig
	if err := rpc.LoadConfig(path, &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.TLS != tlsSettings(f) {
		t.Fatalf("TLS from YAML %+v, want %+v", cfg.TLS, tlsSettings(f))
	}

	half := rpc.ServerConfig{Name: "user.rpc", ListenOn: "127.0.0.1:0", TLS: rpc.TLSConfig{CA: f.CA}}
	if err := half.Validate(); err == nil || !strings.Contains(err.Error(), "setting TLS: tls: cert, key not set") {
		t.Errorf("server TLS with only CA: err %v, want one naming cert and key", err)
	}
	client := rpc.ClientConfig{Target: "zrpc:///user.rpc", TLS: rpc.TLSConfig{Key: f.Key}}
	if err := client.Validate(); err == nil || !strings.Contains(err.Error(), "ca, cert not set") {
		t.Errorf("client TLS with only Key: err %v, want one naming ca and cert", err)
	}
	several := rpc.ClientConfig{Target: "direct:///127.0.0.1:1,127.0.0.1:2", TLS: tlsSettings(f)}
	if err := several.Validate(); !errors.Is(err, rpc.ErrServerNameRequired) || !strings.Contains(err.Error(), "setting TLS.ServerName: required with") {
		t.Errorf("TLS to several direct addresses without ServerName: err %v, want one asking for TLS.ServerName", err)
	}
	several.TLS.ServerName = "user.rpc"
	if err := several.Validate(); err != nil {
		t.Errorf("TLS to several direct addresses with ServerName: %v", err)
	}
	// An IP address names no service: a certificate of any of the CA's
	// services would do, unless a name is given.
	for _, target := range []string{"direct:///127.0.0.1:9000", "direct:///[::1]:9000"} {
		byIP := rpc.ClientConfig{Target: target, TLS: tlsSettings(f)}
		if err := byIP.Validate(); !errors.Is(err, rpc.ErrServerNameRequired) || !strings.Contains(err.Error(), "setting TLS.ServerName: required with") {
			t.Errorf("TLS to %s without ServerName: err %v, want one asking for TLS.ServerName", target, err)
		}
		byIP.TLS.ServerName = "user.rpc"
		if err := byIP.Validate(); err != nil {
			t.Errorf("TLS to %s with ServerName: %v", target, err)
		}
	}
	if byName := (rpc.ClientConfig{Target: "direct:///user.internal:9000", TLS: tlsSettings(f)}); byName.Validate() != nil {
		t.Errorf("TLS to a direct:/// host name without ServerName: %v", byName.Validate())
	}
	if _, err := rpc.Dial(context.Background(), "zrpc:///user.rpc", rpc.WithTLS(rpc.TLSConfig{CA: f.CA, Cert: f.Cert, Key: f.Cert})); err == nil {
		t.Error("Dial with a certificate as key succeeded")
	}
}

// TestTLSServerWithGRPCCheck: a TLS server with CheckInterval registers a
// grpc_tls check through a TLS agent, which checks it over mutual TLS with
// its agent certificate: the instance turns passing, NOT_SERVING turns it
// critical (the instance's own answer, not a failed handshake), SERVING
// passing again.
func TestTLSServerWithGRPCCheck(t *testing.T) {
	kit := pkitest.New(t)
	c := testcluster.New(t, 1, testcluster.WithTLS(func(agent string) (string, string, string) {
		f := kit.Agent(agent)
		return f.CA, f.Cert, f.Key
	}))
	srv, err := rpc.NewServer(rpc.ServerConfig{
		Name: "user.rpc", ListenOn: "127.0.0.1:0", ID: "u1", Agents: []string{c.GRPCAddr(0)},
		DrainDelay: 50 * time.Millisecond, CheckInterval: 100 * time.Millisecond,
		TLS: tlsSettings(kit.Service("user.rpc")),
	}, rpc.WithServerLogger(testlog.New(t, "server")))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := srv.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Stop(context.Background()) })
	if got := instances(t, c, "user.rpc"); len(got) != 1 || !got[0].GetCheck().GetGrpc() || !got[0].GetCheck().GetGrpcTls() {
		t.Fatalf("registered %v, want u1 with a grpc_tls check", got)
	}
	health := func() (pb.Health, string) {
		got := instances(t, c, "user.rpc")
		if len(got) != 1 {
			return pb.Health_HEALTH_UNSPECIFIED, ""
		}
		return got[0].Health, got[0].HealthOutput
	}

	c.WaitFor(20*time.Second, "u1 passing its first check", func() bool {
		h, _ := health()
		return h == pb.Health_PASSING
	})
	srv.Health().SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	c.WaitFor(20*time.Second, "u1 critical with NOT_SERVING", func() bool {
		h, out := health()
		return h == pb.Health_CRITICAL && strings.Contains(out, "NOT_SERVING")
	})
	srv.Health().SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	c.WaitFor(20*time.Second, "u1 passing", func() bool {
		h, out := health()
		return h == pb.Health_PASSING && strings.Contains(out, "SERVING")
	})
}
