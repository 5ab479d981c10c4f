package pki

import (
	"crypto/x509"
	"strings"
	"testing"
)

const testToken = "0123456789abcdef0123456789abcdef-test"

// TestTokenCAIsTheSameOnEveryAgent: two agents deriving the CA of one token
// trust each other's certificates; another token's CA does not.
func TestTokenCAIsTheSameOnEveryAgent(t *testing.T) {
	a, err := TokenCA(testToken)
	if err != nil {
		t.Fatal(err)
	}
	b, err := TokenCA(testToken)
	if err != nil {
		t.Fatal(err)
	}
	if !a.Key.Equal(b.Key) || a.Cert.Subject.String() != b.Cert.Subject.String() || a.Cert.SerialNumber.Cmp(b.Cert.SerialNumber) != 0 {
		t.Fatal("two derivations of one token gave different CAs")
	}
	cert, _, err := a.Sign(CertRequest{Kind: Agent, Name: "n1"})
	if err != nil {
		t.Fatal(err)
	}
	verify := func(ca *CA) error {
		roots := x509.NewCertPool()
		roots.AddCert(ca.Cert)
		_, err := cert.Verify(x509.VerifyOptions{Roots: roots, DNSName: AgentDNSName, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
		return err
	}
	if err := verify(b); err != nil {
		t.Fatalf("a certificate signed by one derivation does not verify with another: %v", err)
	}
	other, err := TokenCA(testToken + "x")
	if err != nil {
		t.Fatal(err)
	}
	if verify(other) == nil {
		t.Fatal("another token's CA trusts the certificate")
	}
}

func TestTokenGossipKeyIsDerivedAndDistinct(t *testing.T) {
	k1, err := TokenGossipKey(testToken)
	if err != nil {
		t.Fatal(err)
	}
	k2, _ := TokenGossipKey(testToken)
	k3, _ := TokenGossipKey(testToken + "x")
	if k1 != k2 || k1 == k3 || len(k1) != 44 {
		t.Fatalf("gossip keys %q %q %q: want one stable 32-byte key per token", k1, k2, k3)
	}
}

func TestShortTokensAreRefused(t *testing.T) {
	for _, tok := range []string{"", "short", strings.Repeat("x", MinTokenLength-1)} {
		if _, err := TokenCA(tok); err == nil || !strings.Contains(err.Error(), "at least") {
			t.Errorf("TokenCA(%q) = %v, want a refusal saying how long a token must be", tok, err)
		}
		if _, err := TokenGossipKey(tok); err == nil {
			t.Errorf("TokenGossipKey(%q) accepted a short token", tok)
		}
	}
}
