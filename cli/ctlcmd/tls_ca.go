package ctlcmd

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/zrpcio/zrpc/internal/pki"
)

func newTLSCACommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "ca",
		Short: "Create the cluster's certificate authority",
		Long: `The cluster CA signs every certificate of the cluster; agents, clients and
services trust what it signed and nothing else.`,
		Example: `  zrpcctl tls ca create --dir /etc/zrpc/tls`,
		Args:    cobra.NoArgs,
	}
	cmd.AddCommand(newTLSCACreateCommand())
	return cmd
}

func newTLSCACreateCommand() *cobra.Command {
	o := pki.CAOptions{}
	cmd := &cobra.Command{
		Use:   "create [--dir DIR] [--days N]",
		Short: "Create a CA: ca.pem and ca-key.pem (ECDSA P-256)",
		Long: `Create a new certificate authority for a cluster: DIR/ca.pem (the
certificate every agent, client and service trusts) and DIR/ca-key.pem (its
private key, mode 0600: keep it where certificates are made, not on the
agents). Existing files are never replaced unless --force is given.`,
		Example: `  zrpcctl tls ca create
  zrpcctl tls ca create --dir /etc/zrpc/tls --days 3650`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkDays(o.Days); err != nil {
				return err
			}
			cmd.SilenceUsage = true
			w, err := pki.CreateCA(o)
			if err != nil {
				return fmt.Errorf("create CA: %w", forceHint(err))
			}
			ca, err := pki.LoadCA(w.Cert, w.Key)
			if err != nil {
				return err
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "wrote %s (CA certificate, valid until %s) and %s (CA key, keep it secret)\n",
				w.Cert, ca.Cert.NotAfter.UTC().Format("2006-01-02"), w.Key)
			return err
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&o.Dir, "dir", "", "directory to write ca.pem and ca-key.pem to (default: the current one)")
	fs.IntVar(&o.Days, "days", pki.DefaultCADays, "how many days the CA is valid")
	fs.BoolVar(&o.Overwrite, "force", false, "replace existing ca.pem and ca-key.pem")
	return cmd
}
