package ctlcmd

import (
	"context"
	"fmt"
	"os"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/client"
)

func newACLPolicyCommand(o *options) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "policy",
		Short: "Create, list, read and delete ACL policies",
		Long: `A policy is a named set of rules; tokens carry policies. Rules grant access
by kind and name prefix, the longest prefix deciding:

  service "user." { write }   services named user.*: register, deregister, read
  blob "models/" { read }     blobs named models/*: get, stat, list
  service "" { read }         "" is every name
  operator { read }           status, members, peers (write: leave, remove-peer)
  agent { write }             the agent-to-agent API
  acl { write }               policies and tokens

Write implies read; deny refuses even where a shorter prefix allows.`,
		Example: `  zrpcctl acl policy create svc-user --rules 'service "user." { write }'
  zrpcctl acl policy list`,
		Args: cobra.NoArgs,
	}
	cmd.AddCommand(newACLPolicyCreateCommand(o), newACLPolicyListCommand(o), newACLPolicyReadCommand(o), newACLPolicyDeleteCommand(o))
	return cmd
}

func newACLPolicyCreateCommand(o *options) *cobra.Command {
	var rules, rulesFile, description string
	cmd := &cobra.Command{
		Use:   "create NAME",
		Short: "Create a policy",
		Long: `Create policy NAME with rules given inline (--rules) or in a file
(--rules-file). Rules that do not parse are refused with the line and column
of the mistake and what was expected there. A policy cannot be changed:
create another and give tokens the new one.`,
		Example: `  zrpcctl acl policy create svc-user --rules 'service "user." { write } blob "models/" { read }'
  zrpcctl acl policy create ops --rules-file ops.rules --description "operators"`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if cmd.Flags().Changed("rules") == cmd.Flags().Changed("rules-file") {
				return fmt.Errorf("give the policy's rules with one of --rules or --rules-file")
			}
			if rulesFile != "" {
				b, err := os.ReadFile(rulesFile)
				if err != nil {
					return fmt.Errorf("--rules-file: %w", err)
				}
				rules = string(b)
			}
			return o.run(cmd, false, func(ctx context.Context, c *client.Client, p *printer) error {
				pol, err := c.ACLPolicyCreate(ctx, args[0], description, rules)
				if err != nil {
					return fmt.Errorf("create policy %s: %w", args[0], err)
				}
				return p.fields(pol, policyFields(pol))
			})
		},
	}
	cmd.Flags().StringVar(&rules, "rules", "", "the policy's rules")
	cmd.Flags().StringVar(&rulesFile, "rules-file", "", "file holding the policy's rules")
	cmd.Flags().StringVar(&description, "description", "", "what the policy is for")
	return cmd
}

func newACLPolicyListCommand(o *options) *cobra.Command {
	return &cobra.Command{
		Use:     "list",
		Short:   "List the policies",
		Long:    `List every policy by name, with its description and the revision that created it.`,
		Example: `  zrpcctl acl policy list`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return o.run(cmd, false, func(ctx context.Context, c *client.Client, p *printer) error {
				pols, err := c.ACLPolicies(ctx)
				if err != nil {
					return fmt.Errorf("list policies: %w", err)
				}
				rows := make([][]string, 0, len(pols))
				for _, pol := range pols {
					rows = append(rows, []string{pol.Name, pol.Description, strconv.FormatUint(pol.CreateRevision, 10)})
				}
				return p.table(protoMessages(pols), []string{"name", "description", "create_revision"}, rows)
			})
		},
	}
}

func newACLPolicyReadCommand(o *options) *cobra.Command {
	return &cobra.Command{
		Use:     "read NAME",
		Short:   "Show a policy and its rules",
		Long:    `Show policy NAME: its description, its rules and the revision that created it.`,
		Example: `  zrpcctl acl policy read svc-user`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.run(cmd, false, func(ctx context.Context, c *client.Client, p *printer) error {
				pol, err := c.ACLPolicy(ctx, args[0])
				if err != nil {
					return fmt.Errorf("read policy %s: %w", args[0], err)
				}
				return p.fields(pol, policyFields(pol))
			})
		},
	}
}

func newACLPolicyDeleteCommand(o *options) *cobra.Command {
	return &cobra.Command{
		Use:   "delete NAME",
		Short: "Delete a policy no token names",
		Long: `Delete a policy. A policy that a token still names is not deleted: delete
those tokens first (the error lists them).`,
		Example: `  zrpcctl acl policy delete svc-user`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.run(cmd, false, func(ctx context.Context, c *client.Client, p *printer) error {
				if err := c.ACLPolicyDelete(ctx, args[0]); err != nil {
					return fmt.Errorf("delete policy %s: %w", args[0], err)
				}
				return p.sentence(&zrpcpb.ACLPolicyDeleteResponse{}, "deleted policy "+args[0])
			})
		},
	}
}
