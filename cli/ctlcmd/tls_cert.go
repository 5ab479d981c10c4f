package ctlcmd

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/zrpcio/zrpc/internal/pki"
)

type tlsCertOptions struct {
	pki.CertOptions
	agent, client, service bool
	tokenFile              string
}

func newTLSCertCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "cert",
		Short: "Create certificates signed by the cluster CA",
		Long: `Certificates for agents (--agent), clients such as zrpcctl (--client) and
services (--service), signed by the CA that ` + "`zrpcctl tls ca create`" + ` made.`,
		Example: `  zrpcctl tls cert create --agent --name n1 --ip 10.0.0.1`,
		Args:    cobra.NoArgs,
	}
	cmd.AddCommand(newTLSCertCreateCommand())
	return cmd
}

func newTLSCertCreateCommand() *cobra.Command {
	o := &tlsCertOptions{}
	cmd := &cobra.Command{
		Use:   "create --agent|--client|--service --name NAME [--ip IP]... [--dns NAME]...",
		Short: "Create an agent, client or service certificate: NAME.pem and NAME-key.pem",
		Long: `Create a certificate signed by the CA (DIR/ca.pem and DIR/ca-key.pem, or
--ca and --ca-key) and its key (mode 0600): DIR/NAME.pem and DIR/NAME-key.pem.

  --agent    valid for agent.zrpc, NAME, localhost, 127.0.0.1, ::1 and every
             --ip and --dns; for serving and dialing as an agent
  --client   common name NAME, DNS name NAME.client.zrpc; dials only, and is
             refused where an agent certificate is required
  --service  valid for NAME (the service, e.g. user.rpc) and every --ip and
             --dns; for a service's server and its clients

With --cluster-token-file (or $ZRPC_CLUSTER_TOKEN), the CA is the one the
agents of a cluster run with a cluster token derive from it, and its
certificate is written to DIR/ca.pem: a way to give zrpcctl and services
certificates of such a cluster.

Existing files are never replaced unless --force is given.`,
		Example: `  zrpcctl tls cert create --agent --name n1 --ip 10.0.0.1
  zrpcctl tls cert create --client --name ops --days 30
  zrpcctl tls cert create --service --name user.rpc --dir /etc/user/tls --ca ca.pem --ca-key ca-key.pem
  zrpcctl tls cert create --client --name ops --cluster-token-file /etc/zrpc/token`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			kind, err := o.kind()
			if err != nil {
				return err
			}
			o.Kind = kind
			if err := checkDays(o.Days); err != nil {
				return err
			}
			if err := o.Validate(); err != nil {
				return err
			}
			if o.Token, err = clusterToken(o.tokenFile); err != nil {
				return err
			}
			// A token from the environment may be left over from running an
			// agent: say where it came from, as it decides the CA.
			fromEnv := o.Token != "" && o.tokenFile == ""
			if o.Token != "" && (o.CACert != "" || o.CAKey != "") {
				if fromEnv {
					return fmt.Errorf("$%s holds a cluster token, and --ca and --ca-key are given: sign with one CA, unset %s to use the files", clusterTokenEnv, clusterTokenEnv)
				}
				return errors.New("give either a cluster token or --ca and --ca-key, not both")
			}
			cmd.SilenceUsage = true
			w, err := pki.CreateCert(o.CertOptions)
			if err != nil && fromEnv {
				return fmt.Errorf("create %s certificate with the CA of the cluster token in $%s (unset it to sign with the CA files): %w", kind, clusterTokenEnv, forceHint(err))
			}
			if err != nil {
				return fmt.Errorf("create %s certificate: %w", kind, forceHint(err))
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "wrote %s (%s certificate for %s) and %s (its key, keep it secret)\n", w.Cert, kind, o.Name, w.Key)
			if err == nil && w.CA != "" {
				_, err = fmt.Fprintf(cmd.OutOrStdout(), "wrote %s (the cluster token's CA certificate, which agents and clients verify against)\n", w.CA)
			}
			return err
		},
	}
	fs := cmd.Flags()
	fs.BoolVar(&o.agent, "agent", false, "an agent certificate")
	fs.BoolVar(&o.client, "client", false, "a client certificate")
	fs.BoolVar(&o.service, "service", false, "a service certificate")
	fs.StringVar(&o.Name, "name", "", "the agent's, client's or service's name (required)")
	fs.StringSliceVar(&o.IPs, "ip", nil, "an IP address the certificate is valid for (repeatable)")
	fs.StringSliceVar(&o.DNSNames, "dns", nil, "another DNS name the certificate is valid for (repeatable)")
	fs.BoolVar(&o.NoLocalhost, "no-localhost", false, "leave localhost, 127.0.0.1 and ::1 out of an agent certificate")
	fs.IntVar(&o.Days, "days", pki.DefaultCertDays, "how many days the certificate is valid")
	fs.StringVar(&o.Dir, "dir", "", "directory of the CA and of the new files (default: the current one)")
	fs.StringVar(&o.CACert, "ca", "", "the CA certificate (default: DIR/ca.pem)")
	fs.StringVar(&o.CAKey, "ca-key", "", "the CA key (default: DIR/ca-key.pem)")
	fs.BoolVar(&o.Overwrite, "force", false, "replace existing NAME.pem and NAME-key.pem")
	fs.StringVar(&o.tokenFile, "cluster-token-file", "", "sign with the CA of the cluster token in this file (default: $"+clusterTokenEnv+" when set)")
	return cmd
}

// clusterTokenEnv holds a cluster token, as it does for zrpcd.
const clusterTokenEnv = "ZRPC_CLUSTER_TOKEN"

// clusterToken reads the cluster token from file, else from
// $ZRPC_CLUSTER_TOKEN; "" when neither is given.
func clusterToken(file string) (string, error) {
	token := strings.TrimSpace(os.Getenv(clusterTokenEnv))
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return "", fmt.Errorf("--cluster-token-file: %w", err)
		}
		token = strings.TrimSpace(string(b))
	}
	if token == "" {
		return "", nil
	}
	if err := pki.CheckToken(token); err != nil {
		return "", err
	}
	return token, nil
}

// kind is the one of --agent, --client, --service that was given.
func (o *tlsCertOptions) kind() (pki.Kind, error) {
	var kinds []pki.Kind
	for _, k := range []struct {
		set  bool
		kind pki.Kind
	}{{o.agent, pki.Agent}, {o.client, pki.Client}, {o.service, pki.Service}} {
		if k.set {
			kinds = append(kinds, k.kind)
		}
	}
	if len(kinds) != 1 {
		return 0, errors.New("give exactly one of --agent, --client, --service")
	}
	return kinds[0], nil
}
