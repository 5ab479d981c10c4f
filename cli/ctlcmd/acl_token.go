package ctlcmd

import (
	"context"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/client"
)

func newACLTokenCommand(o *options) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "token",
		Short: "Create, list, read and delete ACL tokens",
		Long: `A token carries policies. Its accessor id names it and grants nothing; its
secret, shown once when it is created, is what a caller sends (--token-file,
$ZRPC_TOKEN, client.Config.Token, the token_file of an rpc config).`,
		Example: `  zrpcctl acl token create --policy svc-user
  zrpcctl acl token list`,
		Args: cobra.NoArgs,
	}
	cmd.AddCommand(newACLTokenCreateCommand(o), newACLTokenListCommand(o), newACLTokenReadCommand(o), newACLTokenDeleteCommand(o))
	return cmd
}

func newACLTokenCreateCommand(o *options) *cobra.Command {
	var policies []string
	var description string
	cmd := &cobra.Command{
		Use:   "create --policy NAME...",
		Short: "Create a token and print its secret (once)",
		Long: `Create a token carrying the policies named by --policy (each must exist) and
print its accessor id and its secret. No agent can show the secret again.`,
		Example: `  zrpcctl acl token create --policy svc-user --description "user service"
  zrpcctl acl token create --policy svc-user --policy models -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if len(policies) == 0 {
				return fmt.Errorf("--policy is required: a token carries at least one policy")
			}
			return o.run(cmd, false, func(ctx context.Context, c *client.Client, p *printer) error {
				tok, secret, err := c.ACLTokenCreate(ctx, description, policies...)
				if err != nil {
					return fmt.Errorf("create token: %w", err)
				}
				fmt.Fprintln(cmd.ErrOrStderr(), "Save the secret now: no agent can show it again.")
				return printTokenWithSecret(p, &zrpcpb.ACLTokenCreateResponse{Token: tok, Secret: secret}, tok, secret)
			})
		},
	}
	cmd.Flags().StringArrayVar(&policies, "policy", nil, "a policy the token carries (repeat for several)")
	cmd.Flags().StringVar(&description, "description", "", "what the token is for")
	return cmd
}

func newACLTokenListCommand(o *options) *cobra.Command {
	return &cobra.Command{
		Use:     "list",
		Short:   "List the tokens (accessor ids, never secrets)",
		Long:    `List every token by accessor id, with its description, policies and creation time. Secrets are never shown.`,
		Example: `  zrpcctl acl token list`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return o.run(cmd, false, func(ctx context.Context, c *client.Client, p *printer) error {
				toks, err := c.ACLTokens(ctx)
				if err != nil {
					return fmt.Errorf("list tokens: %w", err)
				}
				rows := make([][]string, 0, len(toks))
				for _, t := range toks {
					rows = append(rows, []string{t.AccessorId, t.Description, strings.Join(t.Policies, ","), formatUnixNano(t.Created)})
				}
				return p.table(protoMessages(toks), []string{"accessor_id", "description", "policies", "created"}, rows)
			})
		},
	}
}

func newACLTokenReadCommand(o *options) *cobra.Command {
	return &cobra.Command{
		Use:     "read ACCESSOR_ID",
		Short:   "Show a token (never its secret)",
		Long:    `Show the token with ACCESSOR_ID: its description, policies and creation time.`,
		Example: `  zrpcctl acl token read 3f1c0d9e8b7a65f4e3d2c1b0a9f8e7d6`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.run(cmd, false, func(ctx context.Context, c *client.Client, p *printer) error {
				t, err := c.ACLToken(ctx, args[0])
				if err != nil {
					return fmt.Errorf("read token %s: %w", args[0], err)
				}
				return p.fields(t, tokenFields(t))
			})
		},
	}
}

func newACLTokenDeleteCommand(o *options) *cobra.Command {
	return &cobra.Command{
		Use:     "delete ACCESSOR_ID",
		Short:   "Delete a token: its secret stops working",
		Long:    `Delete the token with ACCESSOR_ID. Calls with its secret are refused as unauthenticated from then on.`,
		Example: `  zrpcctl acl token delete 3f1c0d9e8b7a65f4e3d2c1b0a9f8e7d6`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.run(cmd, false, func(ctx context.Context, c *client.Client, p *printer) error {
				if err := c.ACLTokenDelete(ctx, args[0]); err != nil {
					return fmt.Errorf("delete token %s: %w", args[0], err)
				}
				return p.sentence(&zrpcpb.ACLTokenDeleteResponse{}, "deleted token "+args[0])
			})
		},
	}
}
