// Package pki makes the certificates of a zrpc cluster: a cluster CA
// (ECDSA P-256) and the agent and client certificates it signs.
//
// An agent certificate carries the DNS name AgentDNSName ("agent.zrpc"),
// which is what agents look for before they accept a peer on the
// agent-to-agent API or Raft; a client certificate never does, so a
// client cannot act as an agent. Package pki only makes and writes
// certificates; internal/tlsconf turns them into tls.Configs.
package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"slices"
	"strings"
	"time"
)

const (
	// AgentDNSName is the DNS name every agent certificate carries, and the
	// server name clients verify agents by.
	AgentDNSName = "agent.zrpc"
	// ClientDNSSuffix follows a client's name in its certificate's DNS name.
	ClientDNSSuffix = ".client.zrpc"

	// DefaultCADays is the CA's default lifetime (5 years).
	DefaultCADays = 5 * 365
	// DefaultCertDays is an agent or client certificate's default lifetime.
	DefaultCertDays = 365

	// maxDays bounds any lifetime (100 years), so a typo does not make a
	// certificate that outlives every key size.
	maxDays = 100 * 365
)

// Kind is what a certificate is for.
type Kind int

const (
	// Agent certificates serve and dial as an agent: DNS names agent.zrpc,
	// the agent's name and localhost; server and client auth.
	Agent Kind = iota + 1
	// Client certificates only dial: DNS name <name>.client.zrpc, client
	// auth only.
	Client
	// Service certificates are a service's (package rpc's servers and
	// clients): DNS name <name> (the service, "user.rpc"), server and
	// client auth, never agent.zrpc.
	Service
)

func (k Kind) String() string {
	switch k {
	case Agent:
		return "agent"
	case Client:
		return "client"
	case Service:
		return "service"
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// CA is a certificate authority that signs a cluster's certificates.
type CA struct {
	Cert *x509.Certificate
	Key  *ecdsa.PrivateKey
}

// NewCA makes a self-signed CA valid for days days from now (0 means
// DefaultCADays).
func NewCA(days int) (*CA, error) {
	return newCA(days, time.Now())
}

func newCA(days int, now time.Time) (*CA, error) {
	days, err := lifetime(days, DefaultCADays)
	if err != nil {
		return nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate CA key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "zrpc CA " + hex.EncodeToString(serial.Bytes()[:4]), Organization: []string{"zrpc"}},
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              now.Add(time.Duration(days) * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("create CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse CA certificate: %w", err)
	}
	return &CA{Cert: cert, Key: key}, nil
}

// ParseCA reads a CA from its PEM certificate and PEM private key.
func ParseCA(certPEM, keyPEM []byte) (*CA, error) {
	cert, err := ParseCertificate(certPEM)
	if err != nil {
		return nil, err
	}
	if !cert.IsCA {
		return nil, fmt.Errorf("certificate %q is not a CA certificate", cert.Subject.CommonName)
	}
	key, err := ParseKey(keyPEM)
	if err != nil {
		return nil, err
	}
	if !key.PublicKey.Equal(cert.PublicKey) {
		return nil, fmt.Errorf("CA key does not belong to CA certificate %q", cert.Subject.CommonName)
	}
	return &CA{Cert: cert, Key: key}, nil
}

// CertRequest says what certificate to sign.
type CertRequest struct {
	// Kind is Agent or Client.
	Kind Kind
	// Name is the agent's name (a DNS name of its certificate), the
	// client's (its common name, and <name>.client.zrpc) or the service's
	// (a DNS name, which clients of the service verify). Letters, digits,
	// '-', '_' and '.', at most 63 characters.
	Name string
	// IPs are IP addresses the certificate is valid for (agents: the
	// addresses others dial it at; 127.0.0.1 and ::1 are added unless
	// NoLocalhost).
	IPs []string
	// DNSNames are more DNS names the certificate is valid for. A client
	// certificate may not carry agent.zrpc.
	DNSNames []string
	// NoLocalhost leaves localhost, 127.0.0.1 and ::1 out of an agent
	// certificate.
	NoLocalhost bool
	// Days is the lifetime; 0 means DefaultCertDays. It may not reach past
	// the CA's expiry.
	Days int
	// NotBefore is when the certificate starts to be valid; zero means now.
	NotBefore time.Time
}

// Validate reports the first invalid field of r, by name.
func (r CertRequest) Validate() error {
	if r.Kind != Agent && r.Kind != Client && r.Kind != Service {
		return fmt.Errorf("kind: %v is not agent, client or service", r.Kind)
	}
	if r.Kind != Agent && strings.EqualFold(r.Name, AgentDNSName) {
		return fmt.Errorf("name %q: only an agent certificate may carry the agent name", r.Name)
	}
	if err := validName(r.Name); err != nil {
		return err
	}
	if _, err := parseIPs(r.IPs); err != nil {
		return err
	}
	for _, d := range r.DNSNames {
		if err := validDNSName(d); err != nil {
			return fmt.Errorf("dns name %q: %w", d, err)
		}
		if r.Kind != Agent && coversAgentName(d) {
			return fmt.Errorf("dns name %q: a %s certificate cannot carry the agent name %s", d, r.Kind, AgentDNSName)
		}
	}
	if _, err := lifetime(r.Days, DefaultCertDays); err != nil {
		return err
	}
	return nil
}

// Sign makes a new key and a certificate for it signed by ca.
func (ca *CA) Sign(r CertRequest) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	if err := r.Validate(); err != nil {
		return nil, nil, err
	}
	days, _ := lifetime(r.Days, DefaultCertDays)
	if now := time.Now(); now.After(ca.Cert.NotAfter) {
		return nil, nil, fmt.Errorf("CA %q expired at %s: it can sign nothing more; create a new CA (zrpcctl tls ca create) and new certificates with it",
			ca.Cert.Subject.CommonName, ca.Cert.NotAfter.UTC().Format(time.RFC3339))
	}
	notBefore := r.NotBefore
	if notBefore.IsZero() {
		notBefore = time.Now().Add(-time.Minute)
	}
	notAfter := notBefore.Add(time.Duration(days) * 24 * time.Hour)
	if notAfter.After(ca.Cert.NotAfter) {
		return nil, nil, fmt.Errorf("days: %d would outlive the CA, which expires at %s", days, ca.Cert.NotAfter.UTC().Format(time.RFC3339))
	}
	tmpl, err := r.template(notBefore, notAfter)
	if err != nil {
		return nil, nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate key: %w", err)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		return nil, nil, fmt.Errorf("sign %s certificate %s: %w", r.Kind, r.Name, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, fmt.Errorf("parse %s certificate %s: %w", r.Kind, r.Name, err)
	}
	return cert, key, nil
}

// template is the certificate r asks for, without its keys.
func (r CertRequest) template(notBefore, notAfter time.Time) (*x509.Certificate, error) {
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	ips, _ := parseIPs(r.IPs)
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: r.Name, Organization: []string{"zrpc"}, OrganizationalUnit: []string{r.Kind.String()}},
		NotBefore:    notBefore,
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
	}
	var dns []string
	switch r.Kind {
	case Agent:
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
		dns = append(dns, AgentDNSName, r.Name)
		if !r.NoLocalhost {
			dns = append(dns, "localhost")
			ips = append(ips, net.IPv4(127, 0, 0, 1), net.IPv6loopback)
		}
	case Client:
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
		dns = append(dns, r.Name+ClientDNSSuffix)
	case Service:
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
		dns = append(dns, r.Name)
	}
	dns = append(dns, r.DNSNames...)
	tmpl.DNSNames = dedup(dns, strings.EqualFold)
	tmpl.IPAddresses = dedup(ips, net.IP.Equal)
	return tmpl, nil
}

// coversAgentName reports whether the DNS name d matches AgentDNSName:
// the name itself, or a wildcard ("*.zrpc") that a verifier of
// agent.zrpc would accept.
func coversAgentName(d string) bool {
	if strings.EqualFold(d, AgentDNSName) {
		return true
	}
	_, parent, _ := strings.Cut(AgentDNSName, ".")
	return strings.EqualFold(d, "*."+parent)
}

// IsAgent reports whether cert is an agent certificate: it carries
// AgentDNSName.
func IsAgent(cert *x509.Certificate) bool {
	return slices.ContainsFunc(cert.DNSNames, func(n string) bool { return strings.EqualFold(n, AgentDNSName) })
}

// EncodeCertificate returns cert as PEM.
func EncodeCertificate(cert *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw})
}

// EncodeKey returns key as PEM (PKCS #8).
func EncodeKey(key *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encode key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// ParseCertificate reads the first certificate of PEM data.
func ParseCertificate(data []byte) (*x509.Certificate, error) {
	for rest := data; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			return nil, errors.New("no PEM CERTIFICATE block")
		}
		if b.Type == "CERTIFICATE" {
			cert, err := x509.ParseCertificate(b.Bytes)
			if err != nil {
				return nil, fmt.Errorf("parse certificate: %w", err)
			}
			return cert, nil
		}
	}
}

// ParseKey reads an ECDSA private key from PEM data (PKCS #8 or SEC 1):
// the first block that is a private key, so that blocks before it (the
// "EC PARAMETERS" of `openssl ecparam -genkey`) do not matter.
func ParseKey(data []byte) (*ecdsa.PrivateKey, error) {
	var b *pem.Block
	for rest := data; ; {
		b, rest = pem.Decode(rest)
		if b == nil {
			return nil, errors.New("no PEM private key block")
		}
		if strings.HasSuffix(b.Type, "PRIVATE KEY") {
			break
		}
	}
	switch b.Type {
	case "PRIVATE KEY":
		k, err := x509.ParsePKCS8PrivateKey(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse private key: %w", err)
		}
		ek, ok := k.(*ecdsa.PrivateKey)
		if !ok {
			return nil, fmt.Errorf("private key is a %T, want ECDSA", k)
		}
		return ek, nil
	case "EC PRIVATE KEY":
		k, err := x509.ParseECPrivateKey(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse private key: %w", err)
		}
		return k, nil
	}
	return nil, fmt.Errorf("PEM block %q is not a private key", b.Type)
}

func lifetime(days, def int) (int, error) {
	switch {
	case days == 0:
		return def, nil
	case days < 0 || days > maxDays:
		return 0, fmt.Errorf("days: %d is out of range 1..%d", days, maxDays)
	}
	return days, nil
}

func validName(name string) error {
	if name == "" {
		return errors.New("name: required")
	}
	if len(name) > 63 {
		return fmt.Errorf("name %q: longer than 63 characters", name)
	}
	if name[0] == '.' || name[0] == '-' || strings.HasSuffix(name, ".") {
		return fmt.Errorf("name %q: must start with a letter, digit or '_' and not end with '.'", name)
	}
	for _, c := range name {
		if !isNameChar(c) {
			return fmt.Errorf("name %q: %q is not allowed (letters, digits, '-', '_', '.')", name, c)
		}
	}
	return nil
}

func validDNSName(name string) error {
	if name == "" || len(name) > 253 {
		return errors.New("want 1 to 253 characters")
	}
	for label := range strings.SplitSeq(strings.TrimPrefix(name, "*."), ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return fmt.Errorf("label %q is not a DNS label", label)
		}
		for _, c := range label {
			if !isNameChar(c) || c == '.' {
				return fmt.Errorf("%q is not allowed in a DNS name", c)
			}
		}
	}
	return nil
}

func isNameChar(c rune) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.'
}

func parseIPs(texts []string) ([]net.IP, error) {
	ips := make([]net.IP, 0, len(texts))
	for _, s := range texts {
		ip := net.ParseIP(strings.TrimSpace(s))
		if ip == nil {
			return nil, fmt.Errorf("ip %q: not an IP address", s)
		}
		ips = append(ips, ip)
	}
	return ips, nil
}

func dedup[T any](in []T, eq func(a, b T) bool) []T {
	var out []T
	for _, v := range in {
		if !slices.ContainsFunc(out, func(o T) bool { return eq(o, v) }) {
			out = append(out, v)
		}
	}
	return out
}

func newSerial() (*big.Int, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("generate serial number: %w", err)
	}
	return serial.Add(serial, big.NewInt(1<<32)), nil // never tiny, never zero
}
