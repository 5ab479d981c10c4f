package ctlcmd

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/client"
)

func newACLCommand(o *options) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "acl",
		Short: "Manage ACL policies and tokens",
		Long: `Commands on the cluster's access control. With ACLs on (zrpcd agent --acl)
every call carries a token (--token-file or $ZRPC_TOKEN) and what no policy
of the token grants is denied. Bootstrap once to get the management token,
then create policies and tokens with it.`,
		Example: `  zrpcctl acl bootstrap
  zrpcctl acl policy create svc-user --rules 'service "user." { write } blob "models/" { read }'
  zrpcctl acl token create --policy svc-user --description "user service"`,
		Args: cobra.NoArgs,
	}
	cmd.AddCommand(newACLBootstrapCommand(o), newACLPolicyCommand(o), newACLTokenCommand(o))
	return cmd
}

func newACLBootstrapCommand(o *options) *cobra.Command {
	return &cobra.Command{
		Use:   "bootstrap",
		Short: "Create the management token (once per cluster)",
		Long: `Create the cluster's management token, which may do everything, and print
its secret. This works once per cluster, and no agent can show the secret
again: keep it in a file readable only by you and pass it with --token-file.`,
		Example: `  zrpcctl acl bootstrap
  zrpcctl acl bootstrap -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return o.run(cmd, false, func(ctx context.Context, c *client.Client, p *printer) error {
				tok, secret, err := c.ACLBootstrap(ctx)
				if err != nil {
					return fmt.Errorf("bootstrap ACLs: %w", err)
				}
				fmt.Fprintln(cmd.ErrOrStderr(), "Save the secret now: no agent can show it again.")
				return printTokenWithSecret(p, &zrpcpb.ACLBootstrapResponse{Token: tok, Secret: secret}, tok, secret)
			})
		},
	}
}

// printTokenWithSecret prints a token just created, with its secret; in
// JSON, msg.
func printTokenWithSecret(p *printer, msg any, t *zrpcpb.ACLToken, secret string) error {
	return p.fields(msg, append([]field{{"AccessorID", t.GetAccessorId()}, {"SecretID", secret}}, tokenFields(t)[1:]...))
}

// tokenFields describes a token (never its secret).
func tokenFields(t *zrpcpb.ACLToken) []field {
	return []field{
		{"AccessorID", t.GetAccessorId()},
		{"Description", t.GetDescription()},
		{"Policies", strings.Join(t.GetPolicies(), ", ")},
		{"Created", formatUnixNano(t.GetCreated())},
		{"CreateRevision", strconv.FormatUint(t.GetCreateRevision(), 10)},
	}
}

func policyFields(pol *zrpcpb.ACLPolicy) []field {
	return []field{
		{"Name", pol.GetName()},
		{"Description", pol.GetDescription()},
		{"Rules", pol.GetRules()},
		{"CreateRevision", strconv.FormatUint(pol.GetCreateRevision(), 10)},
	}
}

// formatUnixNano formats a leader-clock time, "" for none.
func formatUnixNano(ns int64) string {
	if ns == 0 {
		return ""
	}
	return time.Unix(0, ns).UTC().Format(time.RFC3339)
}
