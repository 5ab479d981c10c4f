package node

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/zrpcio/zrpc/gossip"
	"github.com/zrpcio/zrpc/internal/fielderr"
	"github.com/zrpcio/zrpc/internal/pki"
	"github.com/zrpcio/zrpc/internal/tlsconf"
	"github.com/zrpcio/zrpc/raftstore"
)

// TLS: with tls_ca, tls_cert and tls_key set (or a cluster token, from
// which the agent makes them: issueTokenCertificates), every listener of the agent
// but gossip's is mutual TLS 1.3 with the cluster CA (configured means
// enforced), and gossip must be encrypted by its keyring (Start refuses
// plaintext gossip): the gRPC API takes any certificate of the CA, its
// agent-to-agent services (grpcapi's PeerOnly) and the Raft transport only
// agent certificates (agent.zrpc), and the agent dials its peers with its
// own. Start reads the files; ReloadTLS (SIGHUP) reads them again for new
// connections.

func (c *Config) tlsFiles() tlsconf.Files {
	return tlsconf.Files{CA: c.TLSCA, Cert: c.TLSCert, Key: c.TLSKey}
}

// validateTLS reports a TLS configuration missing one of its files, and
// a cluster token that is too short or given twice or beside the files.
func (c *Config) validateTLS(l *fielderr.List) {
	f := c.tlsFiles()
	switch {
	case c.ClusterToken != "" && c.ClusterTokenFile != "":
		l.Addf("cluster_token_file", "set either cluster_token or cluster_token_file, not both")
	case c.ClusterToken != "":
		if err := pki.CheckToken(c.ClusterToken); err != nil {
			l.Add("cluster_token", err)
		}
	}
	if (c.ClusterToken != "" || c.ClusterTokenFile != "") && f.Enabled() {
		l.Addf("cluster_token", "set either a cluster token or tls_ca, tls_cert and tls_key: the token makes the agent's certificates itself")
	}
	if !f.Enabled() {
		return
	}
	for _, s := range []struct{ key, path string }{{"tls_ca", f.CA}, {"tls_cert", f.Cert}, {"tls_key", f.Key}} {
		if s.path == "" {
			l.Addf(s.key, "must be set with the other tls_ settings: mutual TLS needs the CA, a certificate and its key")
		}
	}
}

// clusterToken returns the cluster token, read from cluster_token_file
// when that is set; "" when there is none.
func (c *Config) clusterToken() (string, error) {
	token := c.ClusterToken
	if c.ClusterTokenFile != "" {
		b, err := os.ReadFile(c.ClusterTokenFile)
		if err != nil {
			return "", fmt.Errorf("cluster_token_file: %w", err)
		}
		token = strings.TrimSpace(string(b))
		if err := pki.CheckToken(token); err != nil {
			return "", fmt.Errorf("cluster_token_file: %s: %w", c.ClusterTokenFile, err)
		}
	}
	return token, nil
}

// issueTokenCertificates signs this agent's certificate with the CA the
// cluster token derives and writes it, its key and the CA certificate to
// <data_dir>/tls (a new key and certificate on every start, for the
// agent's current name and addresses); the TLS settings then name them.
func (n *Node) issueTokenCertificates() error {
	token, err := n.cfg.clusterToken()
	if err != nil || token == "" {
		return err
	}
	files, err := n.signTokenCertificate(token)
	if err != nil {
		return err
	}
	n.tokenTLS = true
	n.cfg.TLSCA, n.cfg.TLSCert, n.cfg.TLSKey = files.CA, files.Cert, files.Key
	n.log.Info("cluster token: signed this agent's certificate with the token's CA", "dir", filepath.Dir(files.Cert))
	return nil
}

// signTokenCertificate signs a new certificate for this agent with the
// token's CA and writes it, its key and the CA certificate to
// <data_dir>/tls.
func (n *Node) signTokenCertificate(token string) (tlsconf.Files, error) {
	var files tlsconf.Files
	ca, err := pki.TokenCA(token)
	if err != nil {
		return files, fmt.Errorf("cluster token: %w", err)
	}
	ips := []string{n.cfg.advertiseIP()}
	if bind := net.ParseIP(n.cfg.BindAddr); bind != nil && !bind.IsUnspecified() {
		ips = append(ips, n.cfg.BindAddr)
	}
	cert, key, err := ca.Sign(pki.CertRequest{Kind: pki.Agent, Name: n.cfg.Name, IPs: ips})
	if err != nil {
		return files, fmt.Errorf("cluster token: sign this agent's certificate: %w", err)
	}
	keyPEM, err := pki.EncodeKey(key)
	if err != nil {
		return files, err
	}
	files.CA, files.Cert, files.Key = n.cfg.TokenCertificateFiles()
	if err := ensureDir(filepath.Dir(files.Cert)); err != nil {
		return files, err
	}
	for _, w := range []struct {
		path string
		data []byte
	}{{files.CA, pki.EncodeCertificate(ca.Cert)}, {files.Key, keyPEM}, {files.Cert, pki.EncodeCertificate(cert)}} {
		if err := writeFileSync(w.path, w.data); err != nil {
			return files, fmt.Errorf("cluster token: write %s: %w", w.path, err)
		}
	}
	return files, nil
}

// Certificates expire (pki: a year by default). One the agent signs
// itself from the cluster token is signed again, and taken into use, once
// less than a third of its lifetime is left, so that an agent running for
// longer than a lifetime never drops out of its cluster. One from files
// the operator renews: the agent warns of it daily in its last 30 days,
// and zrpc_tls_cert_expiry_timestamp_seconds and `zrpcctl status` show
// when it expires.
const (
	certCheckEvery   = time.Hour
	certWarnBefore   = 30 * 24 * time.Hour
	certWarnEvery    = 24 * time.Hour
	tokenCertRenewAt = 3 // renew with 1/tokenCertRenewAt of the lifetime left
)

// watchCertificate looks at the certificate's expiry every certCheckEvery
// (checkCertificate).
func (n *Node) watchCertificate(ctx context.Context) {
	if n.tls == nil {
		return
	}
	tick := time.NewTicker(certCheckEvery)
	defer tick.Stop()
	var lastWarn time.Time
	for {
		lastWarn = n.checkCertificate(time.Now(), lastWarn)
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// checkCertificate renews a token-signed certificate that has less than
// 1/tokenCertRenewAt of its lifetime left at now, and warns of a
// certificate from files that expires within certWarnBefore, unless it
// did at lastWarn less than certWarnEvery ago. It returns when it last
// warned.
func (n *Node) checkCertificate(now, lastWarn time.Time) time.Time {
	expires := n.tls.NotAfter()
	left := expires.Sub(now)
	if n.tokenTLS {
		lifetime := time.Duration(pki.DefaultCertDays) * 24 * time.Hour
		if left > lifetime/tokenCertRenewAt {
			return lastWarn
		}
		if err := n.renewTokenCertificate(); err != nil {
			n.log.Error("could not renew this agent's certificate from the cluster token; retrying in an hour", "cert_expires", stamp(expires), "err", err)
			return lastWarn
		}
		n.log.Info("renewed this agent's certificate from the cluster token", "cert_expires", stamp(n.tls.NotAfter()), "was", stamp(expires))
		return lastWarn
	}
	if left > certWarnBefore || (!lastWarn.IsZero() && now.Sub(lastWarn) < certWarnEvery) {
		return lastWarn
	}
	n.log.Warn("this agent's TLS certificate expires soon: issue a new one (zrpcctl tls cert create --agent), put it in place of the old and send the agent SIGHUP",
		"cert", n.cfg.TLSCert, "cert_expires", stamp(expires), "left", left.Round(time.Hour).String())
	return now
}

// renewTokenCertificate signs a new certificate from the cluster token and
// takes it into use; connections already open keep theirs.
func (n *Node) renewTokenCertificate() error {
	token, err := n.cfg.clusterToken()
	if err != nil {
		return err
	}
	if _, err := n.signTokenCertificate(token); err != nil {
		return err
	}
	return n.tls.Reload()
}

func stamp(t time.Time) string { return t.UTC().Format(time.RFC3339) }

// TokenCertificateFiles are where an agent with a cluster token keeps the
// token CA's certificate, its own certificate and its key.
func (c Config) TokenCertificateFiles() (ca, cert, key string) {
	dir := filepath.Join(c.DataDir, "tls")
	return filepath.Join(dir, "ca.pem"), filepath.Join(dir, "agent.pem"), filepath.Join(dir, "agent-key.pem")
}

// loadTLS reads the TLS files when they are configured, after making them
// from the cluster token when there is one.
func (n *Node) loadTLS() error {
	if err := n.issueTokenCertificates(); err != nil {
		return err
	}
	if !n.cfg.tlsFiles().Enabled() {
		return nil
	}
	if err := n.requireGossipEncryption(); err != nil {
		return err
	}
	r, err := tlsconf.Load(n.cfg.tlsFiles())
	if err != nil {
		return fmt.Errorf("load TLS certificates: %w", err)
	}
	n.tls = r
	n.log.Info("TLS on: gRPC and Raft are mutual TLS", "ca", n.cfg.TLSCA, "cert", n.cfg.TLSCert,
		"cert_expires", stamp(r.NotAfter()))
	return nil
}

// requireGossipEncryption refuses TLS with plaintext gossip: gossip would
// be the one port that carries members' addresses and leave notices in
// the clear, and where anyone could announce a member. A key counts when
// the settings give one (gossipKey: encrypt, encrypt_file or a cluster
// token) or the data dir keeps a gossip keyring.
func (n *Node) requireGossipEncryption() error {
	if key, err := n.cfg.gossipKey(); err != nil || key != nil {
		return err
	}
	keyring := filepath.Join(n.cfg.DataDir, gossip.KeyringFileName)
	if _, err := os.Stat(keyring); err == nil {
		return nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("TLS is on: check for the gossip keyring %s: %w", keyring, err)
	}
	return fmt.Errorf("TLS is on (tls_ca, tls_cert, tls_key) but gossip would be plaintext: "+
		"gossip carries the members' addresses and their leave notices, so with TLS it must be encrypted; "+
		"make a key once with `zrpcd keygen > gossip.key` and give every agent --encrypt-file gossip.key "+
		"(or ZRPC_ENCRYPT); no encrypt, encrypt_file or %s was found", keyring)
}

// TLSEnabled reports whether the agent runs TLS (its TLS files, or those
// a cluster token made): what ReloadTLS reloads. False before Start.
func (n *Node) TLSEnabled() bool { return n.tls != nil }

// ReloadTLS reads the TLS files again (zrpcd does on SIGHUP): new
// connections, served and dialed, use what it read; open ones keep what
// they have. A bad file keeps the old certificates, and the error names
// it. Without TLS it does nothing.
func (n *Node) ReloadTLS() error {
	if n.tls == nil {
		return nil
	}
	if err := n.tls.Reload(); err != nil {
		return fmt.Errorf("reload TLS certificates: %w", err)
	}
	n.log.Info("TLS certificates reloaded", "cert", n.cfg.TLSCert, "cert_expires", stamp(n.tls.NotAfter()))
	return nil
}

// serverTLS is the gRPC API's TLS config (nil without TLS): any
// certificate of the CA, so clients and services may call; grpcapi lets
// only agent certificates through to the agent-to-agent services.
func (n *Node) serverTLS() *tls.Config {
	if n.tls == nil {
		return nil
	}
	return n.tls.ServerConfig()
}

// checkTLS is the TLS config of gRPC health checks of TLS instances of
// service: this agent's certificate, the instance's verified for the
// service's name. Nil without TLS.
func (n *Node) checkTLS(service string) *tls.Config {
	if n.tls == nil {
		return nil
	}
	return n.tls.ClientConfig(service)
}

// peerTransport returns the transport credentials of connections to
// peers: this agent's certificate, and the peer must hold an agent's.
func (n *Node) peerTransport() grpc.DialOption {
	if n.tls == nil {
		return grpc.WithTransportCredentials(insecure.NewCredentials())
	}
	return grpc.WithTransportCredentials(credentials.NewTLS(n.tls.ClientConfig(tlsconf.AgentServerName, tlsconf.RequireAgent())))
}

// raftStreamLayer returns the Raft transport's stream layer: inner (nil
// means raftstore's own TCP one) without TLS; with TLS, inner (or a TCP
// listener on the Raft address) with every connection mutual TLS between
// agent certificates.
func (n *Node) raftStreamLayer(inner raft.StreamLayer) (raft.StreamLayer, error) {
	if n.tls == nil {
		return inner, nil
	}
	if inner == nil {
		bind := n.addr(n.cfg.RaftPort)
		ln, err := net.Listen("tcp", bind)
		if err != nil {
			return nil, fmt.Errorf("listen for raft on %s: %w", bind, err)
		}
		adv := ln.Addr().(*net.TCPAddr)
		if n.cfg.AdvertiseAddr != "" {
			adv = &net.TCPAddr{IP: net.ParseIP(n.cfg.AdvertiseAddr), Port: adv.Port}
		}
		inner = raftstore.NewTCPStreamLayer(ln, adv)
	}
	return &tlsRaftLayer{
		inner:            inner,
		server:           n.tls.ServerConfig(tlsconf.RequireAgent()),
		client:           n.tls.ClientConfig(tlsconf.AgentServerName, tlsconf.RequireAgent()),
		handshakeTimeout: raftHandshakeTimeout,
	}, nil
}

// raftHandshakeTimeout bounds an accepted Raft connection's TLS handshake:
// a caller that connects and never completes it is dropped then, instead
// of holding the transport's reader for that connection forever.
const raftHandshakeTimeout = 10 * time.Second

// tlsRaftLayer makes every Raft connection of inner mutual TLS that only
// agent certificates pass. An accepted connection's handshake runs on its
// first read or write, on the transport's goroutine for that connection,
// so a slow or refused peer never holds Accept up; it has
// handshakeTimeout, and a refused or timed-out one is closed there.
type tlsRaftLayer struct {
	inner            raft.StreamLayer
	server           *tls.Config
	client           *tls.Config
	handshakeTimeout time.Duration
}

func (l *tlsRaftLayer) Accept() (net.Conn, error) {
	c, err := l.inner.Accept()
	if err != nil {
		return nil, err
	}
	return &acceptedTLSConn{Conn: tls.Server(c, l.server), timeout: l.handshakeTimeout}, nil
}

// acceptedTLSConn is a server-side TLS connection whose handshake, on its
// first read or write, must finish within timeout.
type acceptedTLSConn struct {
	*tls.Conn
	timeout time.Duration
	done    atomic.Bool // the handshake succeeded
}

func (c *acceptedTLSConn) handshake() error {
	if c.done.Load() {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	if err := c.Conn.HandshakeContext(ctx); err != nil {
		return fmt.Errorf("raft TLS handshake with %s: %w", c.RemoteAddr(), err)
	}
	c.done.Store(true)
	return nil
}

func (c *acceptedTLSConn) Read(b []byte) (int, error) {
	if err := c.handshake(); err != nil {
		return 0, err
	}
	return c.Conn.Read(b)
}

func (c *acceptedTLSConn) Write(b []byte) (int, error) {
	if err := c.handshake(); err != nil {
		return 0, err
	}
	return c.Conn.Write(b)
}

func (l *tlsRaftLayer) Close() error   { return l.inner.Close() }
func (l *tlsRaftLayer) Addr() net.Addr { return l.inner.Addr() }

// Dial connects and completes the handshake within timeout, so a peer
// that is not an agent fails the dial with the reason.
func (l *tlsRaftLayer) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	deadline := time.Now().Add(timeout)
	c, err := l.inner.Dial(addr, timeout)
	if err != nil {
		return nil, err
	}
	tc := tls.Client(c, l.client)
	tc.SetDeadline(deadline)
	if err := tc.Handshake(); err != nil {
		c.Close()
		return nil, fmt.Errorf("raft TLS handshake with %s: %w", addr, err)
	}
	tc.SetDeadline(time.Time{})
	return tc, nil
}
