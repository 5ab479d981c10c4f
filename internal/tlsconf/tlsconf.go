// Package tlsconf builds the tls.Configs of zrpc's mutual TLS from three
// PEM files: the cluster CA, a certificate and its key.
//
// Configured means enforced: a server built here requires and verifies a
// client certificate signed by the CA, speaks TLS 1.3 only, and a client
// verifies the server's certificate against the same CA. RequireAgent
// narrows either side to peers holding an agent certificate (DNS name
// agent.zrpc, see internal/pki), for the agent-to-agent API and Raft.
//
// A Reloader re-reads the files when told (the agent on SIGHUP) and hands
// the new material to new handshakes; connections already open keep
// theirs. Package tlsconf does not listen or dial.
package tlsconf

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"math/big"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/zrpcio/zrpc/internal/pki"
)

// AgentServerName is the server name clients verify agents by.
const AgentServerName = pki.AgentDNSName

// Files are the PEM files of one TLS identity.
type Files struct {
	// CA is the cluster CA's certificate (ca.pem): peers must chain to it.
	CA string
	// Cert is this side's certificate, Key its private key.
	Cert string
	Key  string
}

// Enabled reports whether any file is set: TLS is configured.
func (f Files) Enabled() bool { return f.CA != "" || f.Cert != "" || f.Key != "" }

// Validate reports, by name, the files missing from a configured set:
// TLS needs all three.
func (f Files) Validate() error {
	var missing []string
	for _, m := range []struct{ name, path string }{{"ca", f.CA}, {"cert", f.Cert}, {"key", f.Key}} {
		if m.path == "" {
			missing = append(missing, m.name)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("tls: %s not set: mutual TLS needs the CA, a certificate and its key", strings.Join(missing, ", "))
	}
	return nil
}

// Option changes a config built by a Reloader.
type Option func(*options)

type options struct {
	requireAgent bool
}

// RequireAgent accepts only peers whose certificate is an agent's (carries
// agent.zrpc): on a server, callers; on a client, the server.
func RequireAgent() Option { return func(o *options) { o.requireAgent = true } }

// material is one reading of the files.
type material struct {
	cert tls.Certificate
	pool *x509.CertPool
	// expires is when the certificate or the CA above it, whichever is
	// first, expires.
	expires time.Time
}

// Reloader holds the current certificate, key and CA read from Files and
// serves them to every config it built. It is safe for concurrent use.
type Reloader struct {
	files Files
	now   func() time.Time

	mu  sync.RWMutex
	cur *material
}

// NewReloader returns a Reloader of f without reading the files; configs
// it builds fail their handshakes until Reload succeeds once.
func NewReloader(f Files) (*Reloader, error) {
	if err := f.Validate(); err != nil {
		return nil, err
	}
	return &Reloader{files: f, now: time.Now}, nil
}

// Load returns a Reloader of f that has read the files.
func Load(f Files) (*Reloader, error) {
	r, err := NewReloader(f)
	if err != nil {
		return nil, err
	}
	if err := r.Reload(); err != nil {
		return nil, err
	}
	return r, nil
}

// Files returns the files r reads.
func (r *Reloader) Files() Files { return r.files }

// Reload reads the files again. New handshakes use what it read; when a
// file is missing or bad (unreadable, not PEM, the key not the
// certificate's, the certificate expired or not signed by the CA) r keeps
// what it had and the error names the file.
func (r *Reloader) Reload() error {
	m, err := r.read()
	if err != nil {
		return err
	}
	r.mu.Lock()
	r.cur = m
	r.mu.Unlock()
	return nil
}

// NotAfter returns when the current certificate stops verifying: its own
// expiry or its CA's, whichever is first (zero before the first
// successful Reload).
func (r *Reloader) NotAfter() time.Time {
	if m := r.current(); m != nil {
		return m.expires
	}
	return time.Time{}
}

// SerialNumber returns the current certificate's serial number (nil
// before the first successful Reload).
func (r *Reloader) SerialNumber() *big.Int {
	if m := r.current(); m != nil {
		return m.cert.Leaf.SerialNumber
	}
	return nil
}

func (r *Reloader) read() (*material, error) {
	f := r.files
	caPEM, err := os.ReadFile(f.CA)
	if err != nil {
		return nil, fmt.Errorf("tls ca: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("tls ca %s: no PEM certificate in it", f.CA)
	}
	if _, err := os.Stat(f.Cert); err != nil {
		return nil, fmt.Errorf("tls cert: %w", err)
	}
	if _, err := os.Stat(f.Key); err != nil {
		return nil, fmt.Errorf("tls key: %w", err)
	}
	cert, err := tls.LoadX509KeyPair(f.Cert, f.Key)
	if err != nil {
		return nil, fmt.Errorf("tls cert %s, key %s: %w", f.Cert, f.Key, err)
	}
	leaf := cert.Leaf
	if now := r.now(); now.After(leaf.NotAfter) {
		return nil, fmt.Errorf("tls cert %s: certificate %q expired at %s", f.Cert, leaf.Subject.CommonName, stamp(leaf.NotAfter))
	}
	inter := x509.NewCertPool()
	for _, der := range cert.Certificate[1:] {
		if c, err := x509.ParseCertificate(der); err == nil {
			inter.AddCert(c)
		}
	}
	chains, err := leaf.Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, CurrentTime: r.now(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	if err != nil {
		return nil, fmt.Errorf("tls cert %s: not usable with the CA in %s: %w", f.Cert, f.CA, explain(err, "", leaf, r.now()))
	}
	// The certificate is good until it, or a certificate above it, expires:
	// the latest of the chains' earliest expiries.
	var expires time.Time
	for _, chain := range chains {
		first := leaf.NotAfter
		for _, c := range chain {
			if c.NotAfter.Before(first) {
				first = c.NotAfter
			}
		}
		if first.After(expires) {
			expires = first
		}
	}
	return &material{cert: cert, pool: pool, expires: expires}, nil
}

func (r *Reloader) current() *material {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.cur
}

// errNotLoaded fails handshakes of a Reloader that never read its files.
var errNotLoaded = errors.New("tls: certificates not loaded yet")

// ServerConfig returns a server config: TLS 1.3, the current certificate,
// and a client certificate required and verified against the current CA
// (and an agent's, with RequireAgent). Each handshake takes the material
// current when it starts.
func (r *Reloader) ServerConfig(opts ...Option) *tls.Config {
	o := apply(opts)
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			m := r.current()
			if m == nil {
				return nil, errNotLoaded
			}
			c := &tls.Config{
				MinVersion:   tls.VersionTLS13,
				Certificates: []tls.Certificate{m.cert},
				ClientAuth:   tls.RequireAndVerifyClientCert,
				ClientCAs:    m.pool,
				Time:         r.now,
			}
			if o.requireAgent {
				c.VerifyConnection = func(cs tls.ConnectionState) error {
					return requireAgent("client", cs)
				}
			}
			return c, nil
		},
	}
}

// ClientConfig returns a client config: TLS 1.3, the current certificate
// offered to the server, and the server's certificate verified against the
// current CA and for serverName (AgentServerName for agents; empty means
// the DNS name the caller dials: a handshake with an address dialed by IP
// and no serverName fails, as there is no name to check). With
// RequireAgent the server must hold an agent certificate.
func (r *Reloader) ClientConfig(serverName string, opts ...Option) *tls.Config {
	o := apply(opts)
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		ServerName: serverName,
		// The server's certificate is verified in VerifyConnection, against
		// the CA current at the handshake (RootCAs cannot change under a
		// config): InsecureSkipVerify only turns the built-in check off.
		InsecureSkipVerify: true,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			m := r.current()
			if m == nil {
				return nil, errNotLoaded
			}
			return &m.cert, nil
		},
		VerifyConnection: func(cs tls.ConnectionState) error {
			return r.verifyServer(cs, serverName, o)
		},
	}
}

// verifyServer does what crypto/tls does for a client, with the current CA,
// and says in words what was wrong.
func (r *Reloader) verifyServer(cs tls.ConnectionState, serverName string, o options) error {
	m := r.current()
	if m == nil {
		return errNotLoaded
	}
	if len(cs.PeerCertificates) == 0 {
		return errors.New("tls: the server sent no certificate")
	}
	leaf := cs.PeerCertificates[0]
	inter := x509.NewCertPool()
	for _, c := range cs.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	name := serverName
	if name == "" {
		name = cs.ServerName
	}
	if name == "" {
		// crypto/tls leaves the name empty when an IP address was dialed,
		// and x509 checks no name then: any certificate of the CA would do.
		return fmt.Errorf("tls: no server name to verify the server certificate %q against (an IP address was dialed): give the name its certificate must carry (a service's TLS.ServerName)", leaf.Subject.CommonName)
	}
	_, err := leaf.Verify(x509.VerifyOptions{
		Roots:         m.pool,
		Intermediates: inter,
		DNSName:       name,
		CurrentTime:   r.now(),
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	if err != nil {
		return fmt.Errorf("tls: %w", explain(err, "server", leaf, r.now()))
	}
	if o.requireAgent {
		return requireAgent("server", cs)
	}
	return nil
}

// ErrNotAgent is returned (wrapped) when RequireAgent refuses a peer.
var ErrNotAgent = errors.New("not an agent certificate")

func requireAgent(role string, cs tls.ConnectionState) error {
	if len(cs.PeerCertificates) == 0 {
		return fmt.Errorf("tls: %s sent no certificate: %w", role, ErrNotAgent)
	}
	leaf := cs.PeerCertificates[0]
	if !pki.IsAgent(leaf) {
		return fmt.Errorf("tls: %s certificate %q is %w (it lacks the DNS name %s); only agents may call here", role, leaf.Subject.CommonName, ErrNotAgent, pki.AgentDNSName)
	}
	return nil
}

// Explain rewrites a server's handshake error about a client's
// certificate (a *tls.CertificateVerificationError) in the words of this
// package: client certificate "ops" expired at ..., is signed by an
// unknown CA, ... Other errors come back as they are. Servers log the
// result.
func Explain(err error) error {
	var cv *tls.CertificateVerificationError
	if !errors.As(err, &cv) || len(cv.UnverifiedCertificates) == 0 {
		return err
	}
	return fmt.Errorf("tls: %w", explain(cv.Err, "client", cv.UnverifiedCertificates[0], time.Now()))
}

// explain turns x509's verification errors into what a person should
// read: which certificate, and what was wrong with it.
func explain(err error, role string, leaf *x509.Certificate, now time.Time) error {
	who := strings.TrimSpace(fmt.Sprintf("%s certificate %q", role, leaf.Subject.CommonName))
	var invalid x509.CertificateInvalidError
	var unknown x509.UnknownAuthorityError
	var host x509.HostnameError
	switch {
	case errors.As(err, &invalid) && invalid.Reason == x509.Expired:
		// The certificate out of its validity may be the CA above leaf.
		bad := leaf
		if invalid.Cert != nil && !invalid.Cert.Equal(leaf) {
			bad = invalid.Cert
			who = fmt.Sprintf("%s: its CA certificate %q", who, bad.Subject.CommonName)
		}
		if now.Before(bad.NotBefore) {
			return fmt.Errorf("%s is not valid before %s (is this machine's clock right?): %w", who, stamp(bad.NotBefore), err)
		}
		return fmt.Errorf("%s expired at %s: %w", who, stamp(bad.NotAfter), err)
	case errors.As(err, &invalid) && invalid.Reason == x509.IncompatibleUsage:
		return fmt.Errorf("%s is not for this use (a client certificate where a server's is needed?): %w", who, err)
	case errors.As(err, &unknown):
		return fmt.Errorf("%s is signed by an unknown CA %q, not the cluster CA: %w", who, leaf.Issuer.CommonName, err)
	case errors.As(err, &host):
		return fmt.Errorf("%s is not valid for %q (it is for %s): %w", who, host.Host, strings.Join(leaf.DNSNames, ", "), err)
	}
	return fmt.Errorf("%s: %w", who, err)
}

func stamp(t time.Time) string { return t.UTC().Format(time.RFC3339) }

func apply(opts []Option) options {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	return o
}

// Server loads f and returns Load(f).ServerConfig(opts...): for a server
// that never reloads.
func Server(f Files, opts ...Option) (*tls.Config, error) {
	r, err := Load(f)
	if err != nil {
		return nil, err
	}
	return r.ServerConfig(opts...), nil
}

// Client loads f and returns Load(f).ClientConfig(serverName, opts...).
func Client(f Files, serverName string, opts ...Option) (*tls.Config, error) {
	r, err := Load(f)
	if err != nil {
		return nil, err
	}
	return r.ClientConfig(serverName, opts...), nil
}
