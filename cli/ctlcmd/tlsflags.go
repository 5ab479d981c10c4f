package ctlcmd

import (
	"crypto/tls"
	"fmt"
	"os"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/zrpcio/zrpc/internal/tlsconf"
)

// Environment variables of the global TLS flags.
const (
	tlsCAEnv   = "ZRPC_TLS_CA"
	tlsCertEnv = "ZRPC_TLS_CERT"
	tlsKeyEnv  = "ZRPC_TLS_KEY"
)

// tlsFlags are zrpcctl's global --tls-ca, --tls-cert and --tls-key: set,
// every agent connection is mutual TLS with them.
type tlsFlags struct {
	files tlsconf.Files
}

func (f *tlsFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&f.files.CA, "tls-ca", "", "the cluster CA certificate (ca.pem): talk TLS to the agents (env "+tlsCAEnv+")")
	fs.StringVar(&f.files.Cert, "tls-cert", "", "zrpcctl's certificate, e.g. from zrpcctl tls cert create --client (env "+tlsCertEnv+")")
	fs.StringVar(&f.files.Key, "tls-key", "", "the key of --tls-cert (env "+tlsKeyEnv+")")
}

// complete applies the environment to flags not given and checks that
// either all three or none are set. It reads no file: commands that do
// not talk to agents (tls, gen) must work without them.
func (f *tlsFlags) complete(cmd *cobra.Command) error {
	for _, v := range []struct {
		flag, env string
		dst       *string
	}{{"tls-ca", tlsCAEnv, &f.files.CA}, {"tls-cert", tlsCertEnv, &f.files.Cert}, {"tls-key", tlsKeyEnv, &f.files.Key}} {
		if env := os.Getenv(v.env); env != "" && !cmd.Flags().Changed(v.flag) {
			*v.dst = env
		}
	}
	if !f.files.Enabled() {
		return nil
	}
	if err := f.files.Validate(); err != nil {
		return fmt.Errorf("--tls-ca, --tls-cert and --tls-key go together: %w", err)
	}
	return nil
}

// config returns the TLS config for agent connections, nil when the flags
// are not set.
func (f *tlsFlags) config() (*tls.Config, error) {
	if !f.files.Enabled() {
		return nil, nil
	}
	c, err := tlsconf.Client(f.files, tlsconf.AgentServerName, tlsconf.RequireAgent())
	if err != nil {
		return nil, fmt.Errorf("load --tls-ca, --tls-cert, --tls-key: %w", err)
	}
	return c, nil
}
