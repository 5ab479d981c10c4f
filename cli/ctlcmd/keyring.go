package ctlcmd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/proto"

	"github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/client"
)

func newKeyringCommand(o *options) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "keyring",
		Short: "Rotate the gossip encryption key of every agent",
		Long: `Commands on the gossip encryption keys of the agents. An agent encrypts gossip
with its primary key and accepts every key it has installed, so the key is
rotated with no downtime in three steps, each applied by the answering agent
on every alive agent:

  zrpcctl keyring install NEWKEY   # every agent accepts the new key
  zrpcctl keyring use NEWKEY       # every agent encrypts with it
  zrpcctl keyring remove OLDKEY    # the old key is refused from now on

Each command reports every agent's result and fails if any agent failed or
did not answer; it is safe to run again. An agent that is down is reported
as not reached: it keeps its old keys, and once the old key is removed it
cannot rejoin, so bring it back and run the step again before remove. A key
on the command line shows in
the process list: prefer --key-file FILE, or - to read it from stdin. Gossip
that was started without encryption cannot be encrypted this way.`,
		Example: `  zrpcd keygen > new.key
  zrpcctl keyring install --key-file new.key
  zrpcctl keyring use --key-file new.key
  zrpcctl keyring remove - < old.key
  zrpcctl keyring list`,
		Args: cobra.NoArgs,
	}
	cmd.AddCommand(newKeyringListCommand(o))
	for _, op := range keyringOps {
		cmd.AddCommand(newKeyringChangeCommand(o, op))
	}
	return cmd
}

// keyringOp is a keyring command that changes the agents' keys.
type keyringOp struct {
	name, short, long string
	call              func(*client.Client, context.Context, string) (*zrpcpb.KeyringResponse, error)
}

var keyringOps = []keyringOp{
	{"install", "Install a gossip key on every agent",
		"Install KEY on every alive agent: they accept gossip encrypted with it, and keep\nencrypting with their primary key. Installing an installed key does nothing.",
		(*client.Client).KeyringInstall},
	{"use", "Make an installed gossip key the primary key of every agent",
		"Make KEY the primary key of every alive agent: they encrypt gossip with it. It\nmust be installed on every agent first (zrpcctl keyring install): while an\nalive agent lacks it or does not answer, nothing is changed, as that agent\nwould be cut off from gossip.",
		(*client.Client).KeyringUse},
	{"remove", "Remove a gossip key from every agent",
		"Remove KEY from every alive agent: gossip encrypted with it is refused from\nnow on. While it is the primary key of an alive agent, or an alive agent does\nnot answer, nothing is changed (zrpcctl keyring use the new key first);\nremoving a key that is not installed does nothing.",
		(*client.Client).KeyringRemove},
}

func newKeyringChangeCommand(o *options, op keyringOp) *cobra.Command {
	var keyFile string
	cmd := &cobra.Command{
		Use:   op.name + " {KEY | - | --key-file FILE}",
		Short: op.short,
		Long: op.long + `

KEY is base64 (` + "`zrpcd keygen`" + ` prints one). Give it with --key-file FILE, or as -
to read it from stdin: a key given as an argument shows in the process list.`,
		Example: fmt.Sprintf("  zrpcctl keyring %s --key-file new.key\n  zrpcctl keyring %s - < new.key", op.name, op.name),
		Args:    cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			key, err := readKeyringKey(cmd.InOrStdin(), args, keyFile)
			if err != nil {
				return err
			}
			return o.run(cmd, false, func(ctx context.Context, c *client.Client, p *printer) error {
				resp, err := op.call(c, ctx, key)
				if resp != nil {
					if perr := printKeyringResults(p, resp); perr != nil {
						return perr
					}
				}
				return err // names the operation and the agents that failed
			})
		},
	}
	cmd.Flags().StringVar(&keyFile, "key-file", "", "read KEY from this file")
	return cmd
}

// maxKeyInput bounds what is read for a key: a 32-byte key is 44 base64
// characters.
const maxKeyInput = 4096

// readKeyringKey returns the key given as the one argument, read from
// stdin when the argument is "-", or from keyFile. Exactly one source must
// be given; surrounding white space is dropped.
func readKeyringKey(stdin io.Reader, args []string, keyFile string) (string, error) {
	var raw []byte
	switch {
	case len(args) == 1 && keyFile != "":
		return "", errors.New("give KEY or --key-file, not both")
	case keyFile != "":
		b, err := os.ReadFile(keyFile)
		if err != nil {
			return "", fmt.Errorf("--key-file: %w", err)
		}
		raw = b
	case len(args) == 1 && args[0] == "-":
		b, err := io.ReadAll(io.LimitReader(stdin, maxKeyInput+1))
		if err != nil {
			return "", fmt.Errorf("read KEY from stdin: %w", err)
		}
		raw = b
	case len(args) == 1:
		raw = []byte(args[0])
	default:
		return "", errors.New("KEY is required: give it with --key-file FILE, as - to read stdin, or as an argument")
	}
	if len(raw) > maxKeyInput {
		return "", fmt.Errorf("KEY is longer than %d bytes; a gossip key is 24-44 base64 characters", maxKeyInput)
	}
	key := strings.TrimSpace(string(raw))
	if key == "" {
		return "", errors.New("KEY is empty")
	}
	return key, nil
}

// printKeyringResults prints one row per agent: whether the operation
// succeeded there, and why not; in JSON the whole answer.
func printKeyringResults(p *printer, resp *zrpcpb.KeyringResponse) error {
	if p.json {
		return p.printJSON(resp)
	}
	rows := make([][]string, 0, len(resp.GetAgents()))
	for _, r := range resp.GetAgents() {
		rows = append(rows, []string{r.GetAgent(), okOrFailed(r), r.GetError()})
	}
	return p.table([]proto.Message{resp}, []string{"agent", "result", "error"}, rows)
}

func okOrFailed(r *zrpcpb.KeyringAgentResult) string {
	if r.GetOk() {
		return "ok"
	}
	return "failed"
}
