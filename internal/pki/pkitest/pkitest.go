// Package pkitest makes a throwaway cluster CA and certificates in a
// test's temporary directory, for tests of TLS anywhere in zrpc.
package pkitest

import (
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/zrpcio/zrpc/internal/pki"
)

// Files are the PEM files of one identity; convert to tlsconf.Files.
type Files struct {
	CA, Cert, Key string
}

// Kit is a CA with its files in a temporary directory.
type Kit struct {
	t     testing.TB
	Dir   string
	CA    *pki.CA
	CAPEM string // path of the CA's certificate
	n     atomic.Int64
}

// New makes a CA in t.TempDir().
func New(t testing.TB) *Kit {
	t.Helper()
	dir := t.TempDir()
	w, err := pki.CreateCA(pki.CAOptions{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	ca, err := pki.LoadCA(w.Cert, w.Key)
	if err != nil {
		t.Fatal(err)
	}
	return &Kit{t: t, Dir: dir, CA: ca, CAPEM: w.Cert}
}

// Agent issues an agent certificate for name.
func (k *Kit) Agent(name string) Files { return k.Issue(pki.CertRequest{Kind: pki.Agent, Name: name}) }

// Client issues a client certificate for name.
func (k *Kit) Client(name string) Files {
	return k.Issue(pki.CertRequest{Kind: pki.Client, Name: name})
}

// Service issues a service certificate for name ("user.rpc").
func (k *Kit) Service(name string) Files {
	return k.Issue(pki.CertRequest{Kind: pki.Service, Name: name, IPs: []string{"127.0.0.1"}})
}

// Expired issues an agent certificate for name that expired an hour ago.
func (k *Kit) Expired(name string) Files {
	return k.Issue(pki.CertRequest{Kind: pki.Agent, Name: name, Days: 1, NotBefore: time.Now().Add(-25 * time.Hour)})
}

// Issue signs req and writes the certificate and key to new files in Dir.
func (k *Kit) Issue(req pki.CertRequest) Files {
	k.t.Helper()
	cert, key, err := k.CA.Sign(req)
	if err != nil {
		k.t.Fatal(err)
	}
	keyPEM, err := pki.EncodeKey(key)
	if err != nil {
		k.t.Fatal(err)
	}
	base := filepath.Join(k.Dir, fmt.Sprintf("%s-%d", req.Name, k.n.Add(1)))
	f := Files{CA: k.CAPEM, Cert: base + ".pem", Key: base + "-key.pem"}
	if err := os.WriteFile(f.Cert, pki.EncodeCertificate(cert), 0o644); err != nil {
		k.t.Fatal(err)
	}
	if err := os.WriteFile(f.Key, keyPEM, 0o600); err != nil {
		k.t.Fatal(err)
	}
	return f
}

// Copy overwrites to's certificate and key files with from's: a
// certificate renewed in place, for reload tests.
func Copy(t testing.TB, from, to Files) {
	t.Helper()
	for _, p := range [][2]string{{from.Cert, to.Cert}, {from.Key, to.Key}} {
		data, err := os.ReadFile(p[0])
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p[1], data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// Serial returns the serial number of f's certificate, to tell which
// certificate a server sent.
func Serial(t testing.TB, f Files) string {
	t.Helper()
	data, err := os.ReadFile(f.Cert)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := pki.ParseCertificate(data)
	if err != nil {
		t.Fatal(err)
	}
	return cert.SerialNumber.String()
}
