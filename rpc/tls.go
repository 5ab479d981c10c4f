package rpc

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/zrpcio/zrpc/internal/tlsconf"
	"github.com/zrpcio/zrpc/rpc/resolver"
)

// TLSConfig is a service's mutual TLS: PEM files of the cluster CA, the
// service's certificate (`zrpcctl tls cert create --service --name
// user.rpc`) and its key. Set, it secures both the service's own traffic
// (its server requires a client certificate of the CA; its clients verify
// the servers) and its connections to the agents, which must hold agent
// certificates. Empty means plaintext everywhere.
type TLSConfig struct {
	CA   string `yaml:"CA"`
	Cert string `yaml:"Cert"`
	Key  string `yaml:"Key"`
	// ServerName is the name the servers' certificates must carry, for
	// clients only. Empty means the target's service ("user.rpc" for
	// zrpc:///user.rpc), or a direct:/// target's one host name; a
	// direct:/// target of several addresses, or of an IP address (which
	// names no service), needs it.
	ServerName string `yaml:"ServerName"`
}

// Enabled reports whether TLS is configured (any file set).
func (c TLSConfig) Enabled() bool { return c.files().Enabled() }

func (c TLSConfig) files() tlsconf.Files { return tlsconf.Files{CA: c.CA, Cert: c.Cert, Key: c.Key} }

// validate reports a configured TLS that lacks a file.
func (c TLSConfig) validate() error {
	if !c.Enabled() {
		if c.ServerName != "" {
			return errors.New("setting TLS.ServerName: set without TLS.CA, TLS.Cert, TLS.Key")
		}
		return nil
	}
	if err := c.files().Validate(); err != nil {
		return fmt.Errorf("setting TLS: %w (keys CA, Cert, Key)", err)
	}
	return nil
}

// ErrServerNameRequired is what Dial and ClientConfig.Validate return,
// wrapped, for TLS to a direct:/// target of several addresses or of an
// IP address without TLSConfig.ServerName: such a target carries no name
// to verify the servers' certificates by.
var ErrServerNameRequired = errors.New("setting TLS.ServerName: required")

// validateFor is validate for a client of target: a direct:/// target of
// several addresses, or of an IP address, has no name to verify the
// servers by.
func (c TLSConfig) validateFor(target string) error {
	if err := c.validate(); err != nil {
		return err
	}
	if !c.Enabled() || c.ServerName != "" {
		return nil
	}
	addrs, direct := strings.CutPrefix(target, "direct:///")
	if !direct {
		return nil
	}
	if strings.Contains(addrs, ",") {
		return fmt.Errorf("%w with %q, a direct:/// target of several addresses (the name the servers' certificates carry)", ErrServerNameRequired, target)
	}
	host, _, err := net.SplitHostPort(addrs)
	if err != nil {
		host = addrs
	}
	if _, err := netip.ParseAddr(strings.Trim(host, "[]")); err == nil {
		return fmt.Errorf("%w with %q, a direct:/// target of an IP address (the name the server's certificate carries, such as its service's)", ErrServerNameRequired, target)
	}
	return nil
}

// validateServer is validate for a server, which has no ServerName.
func (c TLSConfig) validateServer() error {
	if c.ServerName != "" {
		return errors.New("setting TLS.ServerName: for clients only")
	}
	return c.validate()
}

// serverTLS holds a server's certificates; nil when TLS is off.
type serverTLS struct {
	certs *tlsconf.Reloader
}

// newServerTLS prepares cfg's TLS without reading the files (Start reads
// them) and returns the grpc option that serves it.
func newServerTLS(cfg TLSConfig, log *slog.Logger) (*serverTLS, []grpc.ServerOption, error) {
	if !cfg.Enabled() {
		return nil, nil, nil
	}
	r, err := tlsconf.NewReloader(cfg.files())
	if err != nil {
		return nil, nil, err
	}
	return &serverTLS{certs: r}, []grpc.ServerOption{grpc.Creds(tlsconf.ServerCredentials(r.ServerConfig(), log))}, nil
}

// load reads the files; nothing to do without TLS.
func (t *serverTLS) load() error {
	if t == nil {
		return nil
	}
	if err := t.certs.Reload(); err != nil {
		return fmt.Errorf("load TLS: %w", err)
	}
	return nil
}

// agents is the config of connections to the agents: nil without TLS.
func (t *serverTLS) agents() *tls.Config {
	if t == nil {
		return nil
	}
	return t.certs.ClientConfig(tlsconf.AgentServerName, tlsconf.RequireAgent())
}

// ReloadTLS reads the server's TLS files again (call it on SIGHUP): new
// connections, to the server and to the agents, use the new certificate;
// open ones keep theirs. A bad file keeps the old material and the error
// names it. Without TLS it does nothing.
func (s *Server) ReloadTLS() error {
	if s.tls == nil {
		return nil
	}
	return s.tls.certs.Reload()
}

// WithTLS makes Dial use mutual TLS as c says, to the service's instances
// and to the agents that resolve it. Dial reads the files.
func WithTLS(c TLSConfig) DialOption { return func(o *dialOptions) { o.tls = &c } }

// dialTLS returns the transport credentials of o's TLS (plaintext without
// it) and adds the agents' TLS to the resolver's options.
func (o *dialOptions) dialTLS(target string) (grpc.DialOption, error) {
	if o.tls == nil || !o.tls.Enabled() {
		return grpc.WithTransportCredentials(insecure.NewCredentials()), nil
	}
	if err := o.tls.validateFor(target); err != nil {
		return nil, err
	}
	r, err := tlsconf.Load(o.tls.files())
	if err != nil {
		return nil, fmt.Errorf("load TLS: %w", err)
	}
	o.resolver = append(o.resolver, resolver.WithTLS(r.ClientConfig(tlsconf.AgentServerName, tlsconf.RequireAgent())))
	return grpc.WithTransportCredentials(credentials.NewTLS(r.ClientConfig(o.tls.ServerName))), nil
}
