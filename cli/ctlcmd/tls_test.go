package ctlcmd

import (
	"context"
	"crypto/x509"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/client/clienttest"
	"github.com/zrpcio/zrpc/internal/pki"
	"github.com/zrpcio/zrpc/internal/pki/pkitest"
	"github.com/zrpcio/zrpc/internal/tlsconf"
	"github.com/zrpcio/zrpc/internal/tlsconf/tlstest"
)

func TestTLSCreateCAAndCertificates(t *testing.T) {
	clearTLSEnv(t)
	dir := t.TempDir()
	ctx := testContext(t)
	r := runZrpcctl(ctx, t, "", "tls", "ca", "create", "--dir", dir)
	if r.err != nil {
		t.Fatalf("tls ca create: %v\n%s", r.err, r.stderr)
	}
	checkContains(t, "tls ca create", r.stdout, filepath.Join(dir, "ca.pem"), filepath.Join(dir, "ca-key.pem"))

	r = runZrpcctl(ctx, t, "", "tls", "cert", "create", "--agent", "--name", "n1", "--ip", "10.0.0.1", "--dir", dir)
	if r.err != nil {
		t.Fatalf("tls cert create --agent: %v\n%s", r.err, r.stderr)
	}
	checkContains(t, "tls cert create --agent", r.stdout, filepath.Join(dir, "n1.pem"), filepath.Join(dir, "n1-key.pem"), "agent certificate for n1")
	agent := readCertificate(t, filepath.Join(dir, "n1.pem"))
	if !pki.IsAgent(agent) || agent.VerifyHostname("10.0.0.1") != nil || agent.VerifyHostname("n1") != nil {
		t.Errorf("agent certificate DNS %v IPs %v, want agent.zrpc, n1 and 10.0.0.1", agent.DNSNames, agent.IPAddresses)
	}

	r = runZrpcctl(ctx, t, "", "tls", "cert", "create", "--client", "--name", "ops", "--dir", dir, "--days", "30")
	if r.err != nil {
		t.Fatalf("tls cert create --client: %v\n%s", r.err, r.stderr)
	}
	if c := readCertificate(t, filepath.Join(dir, "ops.pem")); pki.IsAgent(c) || c.Subject.CommonName != "ops" {
		t.Errorf("client certificate CN %q DNS %v, want ops without agent.zrpc", c.Subject.CommonName, c.DNSNames)
	}

	// The files work together: an agent and the client talk mutual TLS.
	if _, err := tlsconf.Client(tlsconf.Files{CA: filepath.Join(dir, "ca.pem"), Cert: filepath.Join(dir, "ops.pem"), Key: filepath.Join(dir, "ops-key.pem")}, ""); err != nil {
		t.Errorf("load the client's files: %v", err)
	}

	r = runZrpcctl(ctx, t, "", "tls", "ca", "create", "--dir", dir)
	if r.err == nil || !strings.Contains(r.err.Error(), "ca.pem: file exists; --force replaces it") {
		t.Errorf("second tls ca create: err %v, want one saying ca.pem exists and --force replaces it", r.err)
	}
}

func TestTLSCertCreateInputErrors(t *testing.T) {
	clearTLSEnv(t)
	dir := t.TempDir()
	ctx := testContext(t)
	if r := runZrpcctl(ctx, t, "", "tls", "ca", "create", "--dir", dir); r.err != nil {
		t.Fatal(r.err)
	}
	before := dirNames(t, dir)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--name", "n1"}, "exactly one of --agent, --client, --service"},
		{[]string{"--agent", "--client", "--name", "n1"}, "exactly one of --agent, --client, --service"},
		{[]string{"--agent"}, "name: required"},
		{[]string{"--agent", "--name", "n1", "--ip", "10.0.0"}, `ip "10.0.0": not an IP address`},
		{[]string{"--client", "--name", "ops", "--dns", "agent.zrpc"}, "cannot carry the agent name"},
		{[]string{"--agent", "--name", "n1", "--days", "0"}, "days"},
		{[]string{"--agent", "--name", "n1", "--ca", filepath.Join(dir, "missing.pem")}, "read CA certificate"},
	} {
		args := append([]string{"tls", "cert", "create", "--dir", dir}, tc.args...)
		r := runZrpcctl(ctx, t, "", args...)
		if r.err == nil || !strings.Contains(r.err.Error(), tc.want) {
			t.Errorf("zrpcctl %s: err %v, want one saying %q", strings.Join(args, " "), r.err, tc.want)
		}
	}
	if after := dirNames(t, dir); !slices.Equal(after, before) {
		t.Errorf("files %v after refused requests, want %v", after, before)
	}
}

func TestTLSFlagsTalkTLSToAgents(t *testing.T) {
	clearTLSEnv(t)
	kit := pkitest.New(t)
	fake := (&clienttest.Agent{OnStatus: func(context.Context, *zrpcpb.StatusRequest) (*zrpcpb.StatusResponse, error) {
		return &zrpcpb.StatusResponse{Node: "n1", Build: "0.1.0"}, nil
	}}).Start(t)
	agentTLS, err := tlsconf.Server(tlsconf.Files(kit.Agent("n1")))
	if err != nil {
		t.Fatal(err)
	}
	addr := tlstest.Front(t, fake.Addr, agentTLS, nil)
	ops := kit.Client("ops")
	ctx := testContext(t)

	r := runZrpcctl(ctx, t, addr, "--tls-ca", ops.CA, "--tls-cert", ops.Cert, "--tls-key", ops.Key, "status")
	if r.err != nil || !strings.Contains(r.stdout, "n1") {
		t.Fatalf("status with --tls-*: err %v, stdout %q", r.err, r.stdout)
	}

	t.Setenv(tlsCAEnv, ops.CA)
	t.Setenv(tlsCertEnv, ops.Cert)
	t.Setenv(tlsKeyEnv, ops.Key)
	if r := runZrpcctl(ctx, t, addr, "status"); r.err != nil || !strings.Contains(r.stdout, "n1") {
		t.Fatalf("status with $ZRPC_TLS_*: err %v, stdout %q", r.err, r.stdout)
	}
	clearTLSEnv(t)

	if r := runZrpcctl(ctx, t, addr, "--timeout", "2s", "status"); r.err == nil {
		t.Fatal("plaintext status against a TLS agent succeeded")
	}
	if r := runZrpcctl(ctx, t, addr, "--tls-ca", ops.CA, "status"); r.err == nil || !strings.Contains(r.err.Error(), "cert, key not set") {
		t.Fatalf("status with --tls-ca only: err %v, want one naming the missing cert and key", r.err)
	}
	if r := runZrpcctl(ctx, t, addr, "--tls-ca", ops.CA, "--tls-cert", ops.Cert, "--tls-key", ops.Cert, "status"); r.err == nil || !strings.Contains(r.err.Error(), "--tls-key") {
		t.Fatalf("status with a certificate as key: err %v, want one about the TLS files", r.err)
	}
}

func clearTLSEnv(t *testing.T) {
	for _, env := range []string{tlsCAEnv, tlsCertEnv, tlsKeyEnv, addrEnv} {
		t.Setenv(env, "")
	}
}

func readCertificate(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	c, err := pki.ParseCertificate(data)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// TestTLSCertFromClusterToken: a certificate signed with a cluster token's
// CA, with that CA written beside it, is trusted by the agents of the
// token (they derive the same CA) and not by another token's.
func TestTLSCertFromClusterToken(t *testing.T) {
	clearTLSEnv(t)
	t.Setenv(clusterTokenEnv, "")
	dir := t.TempDir()
	const token = "zrpcctl-test-cluster-token-0123456789"
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx := testContext(t)
	r := runZrpcctl(ctx, t, "", "tls", "cert", "create", "--client", "--name", "ops", "--dir", dir, "--cluster-token-file", tokenFile)
	if r.err != nil {
		t.Fatalf("tls cert create --cluster-token-file: %v\n%s", r.err, r.stderr)
	}
	checkContains(t, "tls cert create --cluster-token-file", r.stdout, "wrote "+filepath.Join(dir, "ca.pem"))
	ca, err := pki.TokenCA(token)
	if err != nil {
		t.Fatal(err)
	}
	written := readCertificate(t, filepath.Join(dir, "ca.pem"))
	if !ca.Key.PublicKey.Equal(written.PublicKey) {
		t.Fatal("ca.pem is not the token's CA")
	}
	verify := func(ca *pki.CA) error {
		roots := x509.NewCertPool()
		roots.AddCert(ca.Cert)
		_, err := readCertificate(t, filepath.Join(dir, "ops.pem")).Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
		return err
	}
	if err := verify(ca); err != nil {
		t.Fatalf("the client certificate does not verify with the token's CA: %v", err)
	}
	other, _ := pki.TokenCA(token + "-other")
	if verify(other) == nil {
		t.Fatal("another token's CA trusts the client certificate")
	}

	// A second certificate reuses ca.pem; one of another token refuses it.
	if r := runZrpcctl(ctx, t, "", "tls", "cert", "create", "--service", "--name", "user.rpc", "--dir", dir, "--cluster-token-file", tokenFile); r.err != nil || strings.Contains(r.stdout, "ca.pem") {
		t.Fatalf("second certificate: %v; stdout %q (it wrote no ca.pem: one was there)", r.err, r.stdout)
	}
	t.Setenv(clusterTokenEnv, token+"-other")
	r = runZrpcctl(ctx, t, "", "tls", "cert", "create", "--client", "--name", "dev", "--dir", dir)
	if r.err == nil || !strings.Contains(r.err.Error(), "not the cluster token's CA") {
		t.Fatalf("certificate of another token into the same dir: err %v, want a refusal naming ca.pem", r.err)
	}
	if _, err := os.Stat(filepath.Join(dir, "dev.pem")); err == nil {
		t.Fatal("the refused certificate was written")
	}
}

// TestTLSCertCreateNamesTheTokenFromTheEnvironment: a cluster token left
// in $ZRPC_CLUSTER_TOKEN decides the CA; refused beside CA files, the
// error names the variable rather than only telling to move the CA away.
func TestTLSCertCreateNamesTheTokenFromTheEnvironment(t *testing.T) {
	clearTLSEnv(t)
	t.Setenv(clusterTokenEnv, "")
	dir := t.TempDir()
	ctx := testContext(t)
	if r := runZrpcctl(ctx, t, "", "tls", "ca", "create", "--dir", dir); r.err != nil {
		t.Fatal(r.err)
	}
	before := dirNames(t, dir)
	t.Setenv(clusterTokenEnv, "zrpcctl-test-cluster-token-0123456789")
	for _, args := range [][]string{
		{"--client", "--name", "ops", "--dir", dir},
		{"--client", "--name", "ops", "--dir", dir, "--ca", filepath.Join(dir, "ca.pem"), "--ca-key", filepath.Join(dir, "ca-key.pem")},
	} {
		r := runZrpcctl(ctx, t, "", append([]string{"tls", "cert", "create"}, args...)...)
		if r.err == nil || !strings.Contains(r.err.Error(), "$"+clusterTokenEnv) || !strings.Contains(r.err.Error(), "unset") {
			t.Errorf("zrpcctl tls cert create %s with %s set: err %v, want one naming the variable", strings.Join(args, " "), clusterTokenEnv, r.err)
		}
	}
	if after := dirNames(t, dir); !slices.Equal(after, before) {
		t.Errorf("files %v after refused requests, want %v", after, before)
	}
}
