package e2e

import (
	"crypto/rand"
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestTLSThroughCLI: certificates made with zrpcctl tls, an agent with
// --tls-*, zrpcctl through $ZRPC_TLS_*; a plaintext zrpcctl is refused,
// and SIGHUP reloads a renewed certificate.
func TestTLSThroughCLI(t *testing.T) {
	_, zrpcctl := binaries(t)
	dir := t.TempDir()
	for _, args := range [][]string{
		{"tls", "ca", "create", "--dir", dir},
		{"tls", "cert", "create", "--agent", "--name", "n1", "--dir", dir},
		{"tls", "cert", "create", "--client", "--name", "ops", "--dir", dir},
	} {
		if out, err := execCombined(zrpcctl, args...); err != nil {
			t.Fatalf("zrpcctl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	path := func(name string) string { return filepath.Join(dir, name) }
	t.Setenv("ZRPC_TLS_CA", path("ca.pem"))
	t.Setenv("ZRPC_TLS_CERT", path("ops.pem"))
	t.Setenv("ZRPC_TLS_KEY", path("ops-key.pem"))

	// TLS needs encrypted gossip beside it.
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path("gossip.key"), []byte(base64.StdEncoding.EncodeToString(key)), 0o600); err != nil {
		t.Fatal(err)
	}
	a := newAgent(t, "n1", "--tls-ca", path("ca.pem"), "--tls-cert", path("n1.pem"), "--tls-key", path("n1-key.pem"),
		"--encrypt-file", path("gossip.key"))
	a.start()
	a.waitLeader()
	if _, err := ctl(zrpcctl, a.grpcAddr(), "service", "register", "user.rpc", "--id", "u1", "--address", "127.0.0.1:9001"); err != nil {
		t.Fatal(err)
	}
	if out, err := ctl(zrpcctl, a.grpcAddr(), "service", "get", "user.rpc"); err != nil || len(rows(out)) != 1 {
		t.Fatalf("service get over TLS: %v\n%s", err, out)
	}
	if _, err := ctl(zrpcctl, a.grpcAddr(), "--tls-ca=", "--tls-cert=", "--tls-key=", "--timeout", "2s", "status"); err == nil {
		t.Fatal("plaintext zrpcctl got an answer from a TLS agent")
	}

	if out, err := execCombined(zrpcctl, "tls", "cert", "create", "--agent", "--name", "n1", "--dir", dir, "--force"); err != nil {
		t.Fatalf("renew n1's certificate: %v\n%s", err, out)
	}
	a.cmd.Process.Signal(syscall.SIGHUP)
	waitFor(t, 10*time.Second, "n1 reloads its certificates on SIGHUP", func() bool {
		return strings.Contains(a.log.String(), "TLS certificates reloaded")
	})
	if _, err := ctl(zrpcctl, a.grpcAddr(), "status"); err != nil {
		t.Fatalf("status after the reload: %v", err)
	}
	if err := a.stop(); err != nil {
		t.Fatalf("SIGTERM exit: %v", err)
	}
}
