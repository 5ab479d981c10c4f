package pki

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestCreatedCAAndCertificatesVerify(t *testing.T) {
	dir := t.TempDir()
	caFiles, err := CreateCA(CAOptions{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(caFiles.Key); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("CA key mode: %v, %v; want 0600", fi.Mode().Perm(), err)
	}
	ca, err := LoadCA(caFiles.Cert, caFiles.Key)
	if err != nil {
		t.Fatal(err)
	}
	if got := time.Until(ca.Cert.NotAfter); got < (5*365-1)*24*time.Hour || got > 5*365*24*time.Hour {
		t.Errorf("CA lifetime %s, want 5 years", got)
	}
	if ca.Cert.PublicKeyAlgorithm != x509.ECDSA || ca.Key.Curve.Params().Name != "P-256" {
		t.Errorf("CA key %v %s, want ECDSA P-256", ca.Cert.PublicKeyAlgorithm, ca.Key.Curve.Params().Name)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)

	agent, err := CreateCert(CertOptions{Dir: dir, CertRequest: CertRequest{Kind: Agent, Name: "n1", IPs: []string{"10.0.0.1"}}})
	if err != nil {
		t.Fatal(err)
	}
	cert := readCert(t, agent.Cert)
	for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, DNSName: AgentDNSName, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
			t.Errorf("agent certificate for %v: %v", usage, err)
		}
	}
	for _, name := range []string{"n1", "localhost"} {
		if err := cert.VerifyHostname(name); err != nil {
			t.Errorf("agent certificate: %v", err)
		}
	}
	for _, ip := range []string{"10.0.0.1", "127.0.0.1", "::1"} {
		if !slices.ContainsFunc(cert.IPAddresses, net.ParseIP(ip).Equal) {
			t.Errorf("agent certificate IPs %v lack %s", cert.IPAddresses, ip)
		}
	}
	if !IsAgent(cert) {
		t.Error("IsAgent(agent certificate) = false")
	}
	if got := time.Until(cert.NotAfter); got < 364*24*time.Hour || got > 365*24*time.Hour {
		t.Errorf("agent certificate lifetime %s, want 1 year", got)
	}
	if fi, err := os.Stat(agent.Key); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("agent key mode: %v, %v; want 0600", fi.Mode().Perm(), err)
	}
	if filepath.Base(agent.Cert) != "n1.pem" || filepath.Base(agent.Key) != "n1-key.pem" {
		t.Errorf("agent files %+v, want n1.pem and n1-key.pem", agent)
	}
}

func TestClientCertificateCannotActAsAgent(t *testing.T) {
	ca, err := NewCA(0)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	cert, _, err := ca.Sign(CertRequest{Kind: Client, Name: "ops"})
	if err != nil {
		t.Fatal(err)
	}
	if IsAgent(cert) {
		t.Errorf("client certificate carries %s: %v", AgentDNSName, cert.DNSNames)
	}
	if cert.Subject.CommonName != "ops" || !slices.Equal(cert.DNSNames, []string{"ops.client.zrpc"}) {
		t.Errorf("client certificate CN %q DNS %v, want ops and [ops.client.zrpc]", cert.Subject.CommonName, cert.DNSNames)
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("client certificate for client auth: %v", err)
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err == nil {
		t.Error("client certificate verifies for server auth")
	}
	for _, req := range []CertRequest{
		{Kind: Client, Name: "ops", DNSNames: []string{"agent.zrpc"}},
		{Kind: Client, Name: "agent.zrpc"},
		{Kind: Service, Name: "user.rpc", DNSNames: []string{"AGENT.zrpc"}},
		{Kind: Service, Name: "user.rpc", DNSNames: []string{"*.zrpc"}},
		{Kind: Client, Name: "ops", DNSNames: []string{"*.ZRPC"}},
	} {
		if _, _, err := ca.Sign(req); err == nil || !strings.Contains(err.Error(), "agent name") {
			t.Errorf("%s certificate %+v: err %v, want a refusal naming the agent name", req.Kind, req, err)
		}
	}
	svc, _, err := ca.Sign(CertRequest{Kind: Service, Name: "user.rpc"})
	if err != nil {
		t.Fatal(err)
	}
	if IsAgent(svc) {
		t.Errorf("service certificate carries %s: %v", AgentDNSName, svc.DNSNames)
	}
	if _, err := svc.Verify(x509.VerifyOptions{Roots: roots, DNSName: "user.rpc", KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		t.Errorf("service certificate for user.rpc: %v", err)
	}
}

func TestBadCertificateRequestsWriteNothing(t *testing.T) {
	dir := t.TempDir()
	if _, err := CreateCA(CAOptions{Dir: dir}); err != nil {
		t.Fatal(err)
	}
	if _, err := CreateCert(CertOptions{Dir: dir, CertRequest: CertRequest{Kind: Agent, Name: "n2"}}); err != nil {
		t.Fatal(err)
	}
	before := listDir(t, dir)
	for _, tc := range []struct {
		name string
		opts CertOptions
		want string
	}{
		{"unknown ip text", CertOptions{CertRequest: CertRequest{Kind: Agent, Name: "n1", IPs: []string{"10.0.0.300"}}}, `ip "10.0.0.300": not an IP address`},
		{"empty name", CertOptions{CertRequest: CertRequest{Kind: Client}}, "name: required"},
		{"name with slash", CertOptions{CertRequest: CertRequest{Kind: Client, Name: "../x"}}, `name "../x"`},
		{"no kind", CertOptions{CertRequest: CertRequest{Name: "n1"}}, "kind:"},
		{"bad dns name", CertOptions{CertRequest: CertRequest{Kind: Agent, Name: "n1", DNSNames: []string{"a..b"}}}, `dns name "a..b"`},
		{"negative days", CertOptions{CertRequest: CertRequest{Kind: Agent, Name: "n1", Days: -1}}, "days: -1"},
		{"outlives the CA", CertOptions{CertRequest: CertRequest{Kind: Agent, Name: "n1", Days: 6 * 365}}, "outlive the CA"},
		{"existing files", CertOptions{CertRequest: CertRequest{Kind: Agent, Name: "n2"}}, "n2.pem: file exists"},
		{"missing CA", CertOptions{CACert: filepath.Join(dir, "nope.pem"), CertRequest: CertRequest{Kind: Agent, Name: "n1"}}, "read CA certificate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.opts.Dir = dir
			_, err := CreateCert(tc.opts)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want one saying %q", err, tc.want)
			}
			if after := listDir(t, dir); !slices.Equal(after, before) {
				t.Fatalf("files %v after the error, want %v", after, before)
			}
		})
	}
	if _, err := CreateCA(CAOptions{Dir: dir}); !errors.Is(err, ErrExists) {
		t.Errorf("CreateCA over an existing CA: err %v, want ErrExists", err)
	}
	if _, err := CreateCA(CAOptions{Dir: t.TempDir(), Days: -5}); err == nil || !strings.Contains(err.Error(), "days: -5") {
		t.Errorf("CreateCA with days -5: err %v", err)
	}
	if after := listDir(t, dir); !slices.Equal(after, before) {
		t.Fatalf("files %v after the CA errors, want %v", after, before)
	}
}

func TestOverwriteReplacesCertificate(t *testing.T) {
	dir := t.TempDir()
	if _, err := CreateCA(CAOptions{Dir: dir}); err != nil {
		t.Fatal(err)
	}
	req := CertRequest{Kind: Agent, Name: "n1"}
	first, err := CreateCert(CertOptions{Dir: dir, CertRequest: req})
	if err != nil {
		t.Fatal(err)
	}
	old := readCert(t, first.Cert)
	if _, err := CreateCert(CertOptions{Dir: dir, CertRequest: req, Overwrite: true}); err != nil {
		t.Fatal(err)
	}
	if readCert(t, first.Cert).SerialNumber.Cmp(old.SerialNumber) == 0 {
		t.Error("overwrite kept the old certificate")
	}
}

func readCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ParseCertificate(data)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

func listDir(t *testing.T, dir string) []string {
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

// TestCertificateNamedLikeTheCAIsRefused: a certificate whose files would
// be the CA's (name "ca" or "ca-key") is refused, even with Overwrite, and
// the CA stays as it was.
func TestCertificateNamedLikeTheCAIsRefused(t *testing.T) {
	dir := t.TempDir()
	caFiles, err := CreateCA(CAOptions{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	// link is the CA's directory by another path.
	link := filepath.Join(t.TempDir(), "link")
	if err := os.Symlink(dir, link); err != nil {
		t.Fatal(err)
	}
	tokenDir := t.TempDir()
	for _, tc := range []struct {
		name string
		opts CertOptions
	}{
		{"ca with overwrite", CertOptions{Dir: dir, Overwrite: true, CertRequest: CertRequest{Kind: Client, Name: "ca"}}},
		{"ca-key with overwrite", CertOptions{Dir: dir, Overwrite: true, CertRequest: CertRequest{Kind: Client, Name: "ca-key"}}},
		{"CA key by another path", CertOptions{Dir: link, CACert: caFiles.Cert, CAKey: caFiles.Key, Overwrite: true, CertRequest: CertRequest{Kind: Client, Name: "ca-key"}}},
		{"token CA certificate", CertOptions{Dir: tokenDir, Token: testToken, CertRequest: CertRequest{Kind: Client, Name: "ca"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := CreateCert(tc.opts)
			if err == nil || !strings.Contains(err.Error(), "would replace the CA's") {
				t.Fatalf("err %v, want one saying the CA's file would be replaced", err)
			}
		})
	}
	if _, err := LoadCA(caFiles.Cert, caFiles.Key); err != nil {
		t.Fatalf("CA after the refusals: %v", err)
	}
	if got := listDir(t, tokenDir); len(got) != 0 {
		t.Errorf("token directory after the refusal: %v, want empty", got)
	}
}

func TestSignWithExpiredCASaysSo(t *testing.T) {
	ca, err := newCA(1, time.Now().Add(-48*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = ca.Sign(CertRequest{Kind: Agent, Name: "n1", Days: 1})
	if err == nil || !strings.Contains(err.Error(), "expired at") || !strings.Contains(err.Error(), "zrpcctl tls ca create") {
		t.Fatalf("sign with an expired CA: err %v, want one saying the CA expired and how to make a new one", err)
	}
}

// TestParseKeySkipsECParameters: `openssl ecparam -genkey` writes an
// "EC PARAMETERS" block before the key.
func TestParseKeySkipsECParameters(t *testing.T) {
	ca, err := NewCA(0)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalECPrivateKey(ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	params := pem.EncodeToMemory(&pem.Block{Type: "EC PARAMETERS", Bytes: []byte{0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07}})
	keyPEM := append(params, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})...)
	got, err := ParseCA(EncodeCertificate(ca.Cert), keyPEM)
	if err != nil {
		t.Fatalf("CA key after EC PARAMETERS: %v", err)
	}
	if !got.Key.Equal(ca.Key) {
		t.Fatal("parsed another key")
	}
	if _, err := ParseKey(params); err == nil || !strings.Contains(err.Error(), "no PEM private key block") {
		t.Errorf("EC PARAMETERS only: err %v, want no private key block", err)
	}
}
