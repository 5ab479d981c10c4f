package tlsconf

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/zrpcio/zrpc/internal/pki"
	"github.com/zrpcio/zrpc/internal/pki/pkitest"
	"github.com/zrpcio/zrpc/internal/testlog"
	"github.com/zrpcio/zrpc/internal/testwait"
	"github.com/zrpcio/zrpc/internal/tlsconf/tlstest"
)

// tlsServer is a loopback TLS echo server that reports each handshake's
// result.
type tlsServer struct {
	addr       string
	handshakes chan error
}

func serveTLS(t *testing.T, cfg *tls.Config) *tlsServer {
	t.Helper()
	s := &tlsServer{handshakes: make(chan error, 64)}
	s.addr = tlstest.Serve(t, cfg, s.handshakes, func(c *tls.Conn) { io.Copy(c, c) })
	return s
}

// handshake returns the server's result of the next handshake.
func (s *tlsServer) handshake(t *testing.T) error {
	t.Helper()
	select {
	case err := <-s.handshakes:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("no handshake within 10s")
		return nil
	}
}

// talk dials addr, sends a ping and reads it back: with TLS 1.3 a server's
// refusal of the client's certificate shows on the first read.
func talk(t *testing.T, addr string, cfg *tls.Config) (*tls.Conn, error) {
	t.Helper()
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { c.Close() })
	if err := ping(c); err != nil {
		return nil, err
	}
	return c, nil
}

func ping(c *tls.Conn) error {
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte("ping")); err != nil {
		return err
	}
	buf := make([]byte, 4)
	_, err := io.ReadFull(c, buf)
	return err
}

func load(t *testing.T, f pkitest.Files) *Reloader {
	t.Helper()
	r, err := Load(Files(f))
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestTLSMutualAuthenticationBetweenAgents(t *testing.T) {
	kit := pkitest.New(t)
	srv := serveTLS(t, load(t, kit.Agent("n1")).ServerConfig(RequireAgent()))
	c, err := talk(t, srv.addr, load(t, kit.Agent("n2")).ClientConfig(AgentServerName, RequireAgent()))
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.handshake(t); err != nil {
		t.Fatalf("server handshake: %v", err)
	}
	if v := c.ConnectionState().Version; v != tls.VersionTLS13 {
		t.Errorf("version %x, want TLS 1.3", v)
	}
}

func TestTLSRefusals(t *testing.T) {
	kit := pkitest.New(t)
	other := pkitest.New(t)
	server := load(t, kit.Agent("n1"))
	noCert := &tls.Config{MinVersion: tls.VersionTLS13, ServerName: AgentServerName, RootCAs: server.current().pool}
	// Configs this package would refuse to build: a certificate that has
	// expired, or is of another CA, presented anyway.
	presenting := func(f pkitest.Files) *tls.Config {
		pair, err := tls.LoadX509KeyPair(f.Cert, f.Key)
		if err != nil {
			t.Fatal(err)
		}
		c := noCert.Clone()
		c.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &pair, nil }
		return c
	}
	for _, tc := range []struct {
		name       string
		server     *tls.Config
		client     *tls.Config
		wantServer string // in the server's handshake error
		wantClient string // in the client's error
	}{
		{"client without certificate", server.ServerConfig(), noCert, "certificate", "certificate required"},
		{"certificate from another CA", server.ServerConfig(), presenting(other.Agent("x")), `client certificate "x" is signed by an unknown CA`, "unknown certificate authority"},
		{"expired client certificate", server.ServerConfig(), presenting(kit.Expired("old")), `client certificate "old" expired at `, "expired certificate"},
		{"client certificate where an agent is required", server.ServerConfig(RequireAgent()), load(t, kit.Client("ops")).ClientConfig(AgentServerName), "not an agent certificate", "bad certificate"},
		{"server from another CA", load(t, other.Agent("evil")).ServerConfig(), load(t, kit.Agent("n2")).ClientConfig(AgentServerName), "", `server certificate "evil" is signed by an unknown CA`},
		{"service where an agent is required", load(t, kit.Service("user.rpc")).ServerConfig(), load(t, kit.Agent("n2")).ClientConfig(AgentServerName, RequireAgent()), "", `server certificate "user.rpc" is not valid for "agent.zrpc"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := serveTLS(t, tc.server)
			_, err := talk(t, srv.addr, tc.client)
			if err == nil || !strings.Contains(err.Error(), tc.wantClient) {
				t.Errorf("client error %v, want one saying %q", err, tc.wantClient)
			}
			serr := Explain(srv.handshake(t))
			if serr == nil || !strings.Contains(serr.Error(), tc.wantServer) {
				t.Errorf("server error %v, want one saying %q", serr, tc.wantServer)
			}
		})
	}
}

// withCA returns f with its CA replaced by kit's: a certificate of another
// CA presented to this cluster.
func withCA(f pkitest.Files, kit *pkitest.Kit) pkitest.Files {
	f.CA = kit.CAPEM
	return f
}

func TestTLSRequireAgentErrorIsErrNotAgent(t *testing.T) {
	kit := pkitest.New(t)
	srv := serveTLS(t, load(t, kit.Agent("n1")).ServerConfig(RequireAgent()))
	talk(t, srv.addr, load(t, kit.Client("ops")).ClientConfig(AgentServerName))
	if err := srv.handshake(t); !errors.Is(err, ErrNotAgent) {
		t.Fatalf("server handshake error %v, want ErrNotAgent", err)
	}
	// Without RequireAgent a client certificate of the cluster is welcome.
	open := serveTLS(t, load(t, kit.Agent("n1")).ServerConfig())
	if _, err := talk(t, open.addr, load(t, kit.Client("ops")).ClientConfig(AgentServerName)); err != nil {
		t.Fatalf("client certificate on a server not requiring agents: %v", err)
	}
}

func TestTLSLoadRefusesExpiredOrForeignCertificate(t *testing.T) {
	kit := pkitest.New(t)
	other := pkitest.New(t)
	exp := kit.Expired("old")
	for _, tc := range []struct {
		name  string
		files Files
		want  string
	}{
		{"expired", Files(exp), "tls cert " + exp.Cert + `: certificate "old" expired at `},
		{"another CA", Files(withCA(other.Agent("x"), kit)), "signed by an unknown CA"},
		{"missing key", Files{CA: kit.CAPEM, Cert: exp.Cert, Key: exp.Cert + ".nope"}, "tls key:"},
		{"no files", Files{CA: kit.CAPEM}, "tls: cert, key not set"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Load(tc.files)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want one saying %q", err, tc.want)
			}
		})
	}
}

func TestTLSClientSaysServerCertificateExpired(t *testing.T) {
	kit := pkitest.New(t)
	server := load(t, kit.Agent("n1"))
	// The server's certificate is fine when it loads and has expired by
	// the time a client sees it.
	server.now = func() time.Time { return time.Now().Add(-2 * 365 * 24 * time.Hour) }
	client := load(t, kit.Agent("n2"))
	client.now = func() time.Time { return time.Now().Add(2 * 365 * 24 * time.Hour) }
	srv := serveTLS(t, server.ServerConfig())
	_, err := talk(t, srv.addr, client.ClientConfig(AgentServerName))
	if err == nil || !strings.Contains(err.Error(), `server certificate "n1" expired at `) {
		t.Fatalf("client error %v, want one saying the server certificate expired", err)
	}
	srv.handshake(t)
}

func TestTLSReloadServesNewCertificateToNewConnections(t *testing.T) {
	kit := pkitest.New(t)
	first, second := kit.Agent("n1"), kit.Agent("n1")
	live := pkitest.Files{CA: kit.CAPEM, Cert: kit.Dir + "/live.pem", Key: kit.Dir + "/live-key.pem"}
	pkitest.Copy(t, first, live)
	server := load(t, live)
	srv := serveTLS(t, server.ServerConfig())
	client := load(t, kit.Agent("n2")).ClientConfig(AgentServerName)

	old, err := talk(t, srv.addr, client)
	if err != nil {
		t.Fatal(err)
	}
	srv.handshake(t)
	want := pkitest.Serial(t, first)
	if got := old.ConnectionState().PeerCertificates[0].SerialNumber.String(); got != want {
		t.Fatalf("first connection saw serial %s, want %s", got, want)
	}

	pkitest.Copy(t, second, live)
	if err := server.Reload(); err != nil {
		t.Fatal(err)
	}
	fresh, err := talk(t, srv.addr, client)
	if err != nil {
		t.Fatal(err)
	}
	srv.handshake(t)
	if got, want := fresh.ConnectionState().PeerCertificates[0].SerialNumber.String(), pkitest.Serial(t, second); got != want {
		t.Errorf("connection after Reload saw serial %s, want the new %s", got, want)
	}
	if err := ping(old); err != nil {
		t.Errorf("connection from before Reload: %v", err)
	}

	// A broken file keeps what was loaded, and says which file.
	if err := os.WriteFile(live.Cert, []byte("not a certificate"), 0o644); err != nil {
		t.Fatal(err)
	}
	err = server.Reload()
	if err == nil || !strings.Contains(err.Error(), live.Cert) {
		t.Fatalf("Reload of a broken file: err %v, want one naming %s", err, live.Cert)
	}
	after, err := talk(t, srv.addr, client)
	if err != nil {
		t.Fatalf("connection after a failed Reload: %v", err)
	}
	srv.handshake(t)
	if got, want := after.ConnectionState().PeerCertificates[0].SerialNumber.String(), pkitest.Serial(t, second); got != want {
		t.Errorf("after a failed Reload the server sent serial %s, want the kept %s", got, want)
	}
}

func TestTLSGRPCAgentOnlyService(t *testing.T) {
	kit := pkitest.New(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(grpc.Creds(credentials.NewTLS(load(t, kit.Agent("n1")).ServerConfig(RequireAgent()))))
	healthpb.RegisterHealthServer(gs, health.NewServer())
	go gs.Serve(ln)
	t.Cleanup(gs.Stop)

	check := func(f pkitest.Files) error {
		conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(credentials.NewTLS(load(t, f).ClientConfig(AgentServerName, RequireAgent()))))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, err = healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
		return err
	}
	if err := check(kit.Agent("n2")); err != nil {
		t.Fatalf("agent certificate: %v", err)
	}
	if err := check(kit.Client("ops")); status.Code(err) != codes.Unavailable {
		t.Fatalf("client certificate: err %v, want Unavailable", err)
	}
}

func TestTLSServerCredentialsLogRefusalsExplained(t *testing.T) {
	kit := pkitest.New(t)
	var logged testlog.Buffer
	log := slog.New(slog.NewTextHandler(&logged, nil))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(grpc.Creds(ServerCredentials(load(t, kit.Agent("n1")).ServerConfig(), log)))
	healthpb.RegisterHealthServer(gs, health.NewServer())
	go gs.Serve(ln)
	t.Cleanup(gs.Stop)

	old := kit.Expired("old")
	pair, err := tls.LoadX509KeyPair(old.Cert, old.Key)
	if err != nil {
		t.Fatal(err)
	}
	cfg := load(t, kit.Agent("n2")).ClientConfig(AgentServerName)
	cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &pair, nil }
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{}); status.Code(err) != codes.Unavailable {
		t.Fatalf("expired client certificate: err %v, want Unavailable", err)
	}
	testwait.For(t, 10*time.Second, "the refusal logged", func() bool {
		return strings.Contains(logged.String(), `client certificate \"old\" expired at`)
	})
	if !strings.Contains(logged.String(), "level=WARN") {
		t.Errorf("refusal not logged at WARN:\n%s", logged.String())
	}
}

// TestTLSClientWithoutServerNameNeedsADNSName: with no server name given,
// the server is verified for the DNS name dialed; dialed by IP there is no
// name, and another service's certificate must not pass for lack of one.
func TestTLSClientWithoutServerNameNeedsADNSName(t *testing.T) {
	kit := pkitest.New(t)
	srv := serveTLS(t, load(t, kit.Issue(pki.CertRequest{Kind: pki.Service, Name: "payment.rpc"})).ServerConfig())
	client := load(t, kit.Service("order.rpc")).ClientConfig("")
	_, err := talk(t, srv.addr, client)
	if err == nil || !strings.Contains(err.Error(), "no server name to verify") {
		t.Fatalf("dialing %s without a server name: err %v, want one saying there is no name to verify", srv.addr, err)
	}
	srv.handshake(t)

	agent := serveTLS(t, load(t, kit.Agent("n1")).ServerConfig())
	_, port, err := net.SplitHostPort(agent.addr)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := talk(t, net.JoinHostPort("localhost", port), client); err != nil {
		t.Fatalf("dialing localhost, a name of the server's certificate: %v", err)
	}
	agent.handshake(t)
}

// TestTLSSaysWhenTheCAIsOutOfItsValidity: a CA not yet valid (or expired)
// is named as the CA, with its own dates, not the certificate's.
func TestTLSSaysWhenTheCAIsOutOfItsValidity(t *testing.T) {
	kit := pkitest.New(t)
	start := time.Now()
	// Valid from two hours ago; the CA only from a minute ago.
	f := kit.Issue(pki.CertRequest{Kind: pki.Agent, Name: "n1", Days: 1, NotBefore: start.Add(-2 * time.Hour)})
	r, err := NewReloader(Files(f))
	if err != nil {
		t.Fatal(err)
	}
	r.now = func() time.Time { return start.Add(-time.Hour) }
	err = r.Reload()
	want := fmt.Sprintf(`its CA certificate %q is not valid before %s`, kit.CA.Cert.Subject.CommonName, stamp(kit.CA.Cert.NotBefore))
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("load with the CA not yet valid: err %v, want one saying %q", err, want)
	}
}
