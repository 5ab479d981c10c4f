package testcluster

import (
	"crypto/rand"
	"encoding/base64"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/zrpcio/zrpc/internal/tlsconf"
	"github.com/zrpcio/zrpc/node"
)

// WithTLS turns TLS on for every agent, with the CA, certificate and key
// files certs returns for the agent's name (internal/pki/pkitest makes
// them), and encrypts gossip with a key of the cluster's unless an
// earlier option gave one (an agent with TLS refuses plaintext gossip).
// The cluster's own clients (Registry, Status) then dial with the agent's
// certificate.
func WithTLS(certs func(agent string) (ca, cert, key string)) Option {
	raw := make([]byte, 32) // AES-256, as zrpcd keygen makes
	rand.Read(raw)          // never fails: crypto/rand crashes instead
	key := base64.StdEncoding.EncodeToString(raw)
	return WithConfig(func(c *node.Config) {
		c.TLSCA, c.TLSCert, c.TLSKey = certs(c.Name)
		if c.EncryptKey == "" && c.EncryptKeyFile == "" {
			c.EncryptKey = key
		}
	})
}

// WithClusterToken gives every agent the cluster token token (node's
// cluster_token): the agents make their certificates and gossip key from
// it.
func WithClusterToken(token string) Option {
	return WithConfig(func(c *node.Config) { c.ClusterToken = token })
}

// transport is how the cluster's clients dial agent m: with its own
// certificate when it has TLS.
func (c *Cluster) transport(m *member) grpc.DialOption {
	files := tlsconf.Files{CA: m.cfg.TLSCA, Cert: m.cfg.TLSCert, Key: m.cfg.TLSKey}
	if m.cfg.ClusterToken != "" {
		files.CA, files.Cert, files.Key = m.cfg.TokenCertificateFiles()
	}
	if !files.Enabled() {
		return grpc.WithTransportCredentials(insecure.NewCredentials())
	}
	tc, err := tlsconf.Client(files, tlsconf.AgentServerName, tlsconf.RequireAgent())
	if err != nil {
		c.t.Fatalf("%s: TLS of the test's client: %v", m.name, err)
	}
	return grpc.WithTransportCredentials(credentials.NewTLS(tc))
}
