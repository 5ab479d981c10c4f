package ctlcmd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/zrpcio/zrpc/api/apierr"
	"github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/client"
)

// Defaults of zrpcctl's global flags.
const (
	defaultAddr    = "127.0.0.1:8400"
	addrEnv        = "ZRPC_ADDR"
	defaultTimeout = 5 * time.Second
)

// options are zrpcctl's global flags, shared by every command.
type options struct {
	addr    string
	output  string
	timeout time.Duration
	tls     tlsFlags
	// tokens are the token flags; token is the ACL token they give.
	tokens tokenFlags
	token  string
}

// NewCommand returns the zrpcctl root command: the operator's tool, which
// talks to agents through package client.
func NewCommand() *cobra.Command {
	o := &options{}
	root := &cobra.Command{
		Use:   "zrpcctl",
		Short: "zrpcctl inspects and changes a zrpc cluster through its agents",
		Long: `zrpcctl is the operator's tool for a zrpc cluster. It talks to the gRPC API of
one or more agents (--addr, or $ZRPC_ADDR); when an agent does not answer it
tries the next one. Results print as a table, or as JSON with -o json.`,
		Example: `  zrpcctl service list
  zrpcctl --addr 10.0.0.1:8400,10.0.0.2:8400 service get user.rpc --passing
  ZRPC_ADDR=10.0.0.1:8400 zrpcctl status -o json`,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			if cmd.Annotations[groupAnnotation] != "" {
				return nil // a group prints its help: it needs no flags checked
			}
			return o.complete(cmd)
		},
	}
	fs := root.PersistentFlags()
	fs.StringVar(&o.addr, "addr", defaultAddr, "comma-separated agent gRPC addresses host:port (env "+addrEnv+")")
	fs.StringVarP(&o.output, "output", "o", outputTable, "output format: table or json")
	fs.DurationVar(&o.timeout, "timeout", defaultTimeout, "how long to wait for each answer from the agents; with several agents in --addr, one that takes a call and does not answer is left for the next after half of it")
	o.tls.register(fs)
	o.tokens.register(fs)
	root.AddCommand(
		newServiceCommand(o),
		newStatusCommand(o),
		newMembersCommand(o),
		newLeaveCommand(o),
		newRaftCommand(o),
		newVersionCommand(o),
		newBlobCommand(o),
		newACLCommand(o),
		newKeyringCommand(o),
		newBenchCommand(o),
		newDebugCommand(o),
		newSnapshotCommand(o),
	)
	root.AddCommand(newGenCommand())
	root.AddCommand(newTLSCommand())
	refuseUnknownSubcommands(root)
	return root
}

// textOnly are the commands under zrpcctl whose output is text whatever
// -o says: they write files (gen, tls) or a shell script (completion).
var textOnly = map[string]bool{"gen": true, "tls": true, "completion": true}

// topCommand is the command under zrpcctl that cmd is, or is under.
func topCommand(cmd *cobra.Command) *cobra.Command {
	for cmd.HasParent() && cmd.Parent().HasParent() {
		cmd = cmd.Parent()
	}
	return cmd
}

// groupAnnotation marks the commands refuseUnknownSubcommands made runnable.
const groupAnnotation = "zrpcctl.group"

// refuseUnknownSubcommands makes every group of commands under root
// (service, acl policy, raft, ...) fail on an argument that names none of
// its commands. Left to cobra, such a group prints its help and exits 0,
// so `zrpcctl service lst` in a script looks like a success. zrpcctl
// itself is left to cobra, which refuses an unknown command already.
func refuseUnknownSubcommands(root *cobra.Command) {
	for _, cmd := range root.Commands() {
		refuseUnknownSubcommands(cmd)
		if cmd.Runnable() || !cmd.HasSubCommands() {
			continue
		}
		cmd.Args = unknownSubcommand
		cmd.SuggestionsMinimumDistance = 2 // as cobra suggests for zrpcctl's own commands
		if cmd.Annotations == nil {
			cmd.Annotations = map[string]string{}
		}
		cmd.Annotations[groupAnnotation] = "true"
		cmd.RunE = func(cmd *cobra.Command, _ []string) error { return cmd.Help() }
	}
}

// unknownSubcommand refuses any argument of a group of commands: it is a
// mistyped or missing command.
func unknownSubcommand(cmd *cobra.Command, args []string) error {
	if len(args) == 0 {
		return nil
	}
	cmd.SilenceUsage = true // the error says where the commands are listed
	msg := fmt.Sprintf("unknown command %q for %q", args[0], cmd.CommandPath())
	if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
		msg += "; did you mean " + strings.Join(s, " or ") + "?"
	}
	return fmt.Errorf("%s (`%s --help` lists its commands)", msg, cmd.CommandPath())
}

// complete applies $ZRPC_ADDR and checks the global flags' shapes.
func (o *options) complete(cmd *cobra.Command) error {
	if env := os.Getenv(addrEnv); env != "" && !cmd.Flags().Changed("addr") {
		o.addr = env
	}
	if err := (client.Config{Endpoints: o.endpoints()}).Validate(); err != nil {
		return fmt.Errorf("invalid --addr %q: %w", o.addr, err)
	}
	if _, err := newPrinter(nil, o.output); err != nil {
		return err
	}
	if top := topCommand(cmd); o.output == outputJSON && textOnly[top.Name()] {
		return fmt.Errorf("-o json: %s prints text only (it writes files or scripts, not data about the cluster); leave -o out", top.CommandPath())
	}
	if o.timeout <= 0 {
		return fmt.Errorf("invalid --timeout %s: want a positive duration", o.timeout)
	}
	if err := o.tls.complete(cmd); err != nil {
		return err
	}
	var err error
	o.token, err = o.tokens.resolve(cmd)
	return err
}

func (o *options) endpoints() []string {
	var eps []string
	for ep := range strings.SplitSeq(o.addr, ",") {
		if ep = strings.TrimSpace(ep); ep != "" {
			eps = append(eps, ep)
		}
	}
	return eps
}

// runFunc is the runtime part of a command, after its flags were checked.
type runFunc func(ctx context.Context, c *client.Client, p *printer) error

// run connects to the agents and runs fn. From here on errors are not usage
// errors: cobra does not print the usage, and errors from the agents get a
// hint where one helps. ctx bounds fn by --timeout unless stream is set.
func (o *options) run(cmd *cobra.Command, stream bool, fn runFunc) error {
	cmd.SilenceUsage = true
	p, err := newPrinter(cmd.OutOrStdout(), o.output)
	if err != nil {
		return err
	}
	log := newCLILogger(cmd.ErrOrStderr(), slog.LevelInfo)
	tc, err := o.tls.config()
	if err != nil {
		return err
	}
	cfg := client.Config{Endpoints: o.endpoints(), DialTimeout: o.timeout, Logger: log, TLS: tc, Token: o.token}
	if len(cfg.Endpoints) > 1 {
		// An agent that takes a call and never answers it gets half the
		// command's time, so that the next one is asked within --timeout.
		cfg.AttemptTimeout = o.timeout / 2
	}
	c, err := client.New(cfg)
	if err != nil {
		return fmt.Errorf("create client: %w", err)
	}
	defer c.Close()
	ctx := cmd.Context()
	if !stream {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, o.timeout)
		defer cancel()
	}
	return o.explain(fn(ctx, c, p))
}

// explain adds a hint to an error from the agents when the remedy is likely.
func (o *options) explain(err error) error {
	if err == nil {
		return nil
	}
	var hint string
	switch {
	case errors.Is(err, apierr.ErrStaleRead):
		hint = "the agent has lost contact with the leader; --consistency stale reads its copy anyway"
	case errors.Is(err, apierr.ErrNoLeader), errors.Is(err, apierr.ErrNotLeader):
		hint = "the cluster has no leader now; `zrpcctl status` says which voters the agent cannot reach (a leader needs a majority of them), `zrpcctl members` what its gossip sees"
	case errors.Is(err, context.DeadlineExceeded), status.Code(err) == codes.DeadlineExceeded, connectTimedOut(err):
		agents := "the agent at " + o.addr
		if strings.Contains(o.addr, ",") {
			agents = "any of the agents at " + o.addr
		}
		hint = fmt.Sprintf("no answer within --timeout %s; is %s overloaded, stopped or partitioned? `zrpcctl members` through another agent shows what gossip sees", o.timeout, agents)
	case status.Code(err) == codes.Unavailable && strings.Contains(err.Error(), "does not look like a TLS handshake"):
		hint = fmt.Sprintf("the agent at %s does not speak TLS: leave out --tls-ca, --tls-cert and --tls-key (and %s, %s, %s), or check that it is the agent you meant",
			o.addr, tlsCAEnv, tlsCertEnv, tlsKeyEnv)
	case status.Code(err) == codes.Unavailable && strings.Contains(err.Error(), "HTTP/1.1 header"):
		hint = fmt.Sprintf("%s answers HTTP/1 (the agent's HTTP port?): --addr takes the gRPC port, "+
			"8400 unless the agent was started with --grpc-port (`zrpcd agent` prints its gRPC address when it starts)", o.addr)
	case status.Code(err) == codes.Unavailable && hungUp(err):
		hint = fmt.Sprintf("something at %s took the connection and closed it: an agent with TLS on (give --tls-ca, --tls-cert and --tls-key, or %s, %s, %s), "+
			"or not an agent's gRPC port (its Raft or gossip port?): --addr takes the gRPC port, 8400 unless the agent was started with --grpc-port",
			o.addr, tlsCAEnv, tlsCertEnv, tlsKeyEnv)
	case status.Code(err) == codes.Unavailable:
		hint = fmt.Sprintf("is an agent running at %s? start one with `zrpcd agent --dev`", o.addr)
	case errors.Is(err, apierr.ErrDiskFull):
		hint = "the leader's disk is full: free space in its data dir (`zrpcctl status` names the leader); the write was not stored, retry it then"
	case errors.Is(err, apierr.ErrUnauthenticated):
		hint = "the agent has ACLs on: give a token with --token-file or $" + tokenEnv
	case status.Code(err) == codes.Unimplemented && strings.Contains(err.Error(), "unknown service "+zrpcpb.ACL_ServiceDesc.ServiceName):
		hint = fmt.Sprintf("the agent at %s runs with ACLs off, so it has no policies or tokens to manage: start the agents with --acl (or acl: true) to turn them on", o.addr)
	case status.Code(err) == codes.Unimplemented:
		hint = fmt.Sprintf("is %s a zrpc agent of a compatible version? compare `zrpcctl version`", o.addr)
	}
	if hint == "" {
		return err
	}
	return &hintError{err: err, hint: hint}
}

// connectTimedOut reports whether err is a connection to an agent that
// timed out (the dial timeout is --timeout): no answer to the TCP
// handshake (the host is down, or cut off), or a connection the agent's
// kernel took but no agent answered on, which gRPC then closed itself
// (a stopped or overloaded agent). Neither is a sign of a wrong port or
// of no agent at all.
func connectTimedOut(err error) bool {
	if status.Code(err) != codes.Unavailable {
		return false
	}
	msg := err.Error()
	return strings.Contains(msg, "Error while dialing") && strings.Contains(msg, "i/o timeout") ||
		strings.Contains(msg, "error reading server preface") && strings.Contains(msg, net.ErrClosed.Error())
}

// hungUp reports whether err is a connection that was taken and closed
// before gRPC's HTTP/2 preface came back: a TLS listener hanging up on
// plaintext, or a listener of another protocol (the agent's Raft port
// waits for its own framing, gossip's for its own).
func hungUp(err error) bool {
	msg := err.Error()
	for _, sign := range []string{"error reading server preface", "broken pipe", "connection reset by peer"} {
		if strings.Contains(msg, sign) {
			return true
		}
	}
	return false
}

// hintError prints as the error, then the hint on its own line.
type hintError struct {
	err  error
	hint string
}

func (e *hintError) Error() string { return e.err.Error() + "\nHint: " + e.hint }

func (e *hintError) Unwrap() error { return e.err }
