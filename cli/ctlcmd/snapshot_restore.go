package ctlcmd

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/zrpcio/zrpc/api/apierr"
	"github.com/zrpcio/zrpc/client"
	"github.com/zrpcio/zrpc/snapshot"
)

func newSnapshotRestoreCommand(o *options) *cobra.Command {
	var yes bool
	cmd := &cobra.Command{
		Use:   "restore FILE",
		Short: "Replace the cluster's state with a snapshot file",
		Long: `Replace the whole state of the cluster (registry, blob metadata, ACL
policies and tokens) with the snapshot FILE, through Raft: every agent
converges on it, and watchers receive the new state at a new revision.

FILE is checked first, here (its header, its SHA-256 and every record of
its state) and again on the agent, which also loads it into a scratch
state machine; a file that fails either is refused before anything in
the cluster changes. The cluster keeps its own identity (cluster id and
secret). Agents that the snapshot names but the cluster does not have are
removed with their instances and sessions by the leader after
dead_node_reap. Blob metadata is restored, not the blobs' bytes: blobs
whose shards the cluster's agents do not hold cannot be read.

The restore asks for confirmation on a terminal; --yes skips it (and is
required when stdin is not a terminal). It prints the revision the
registry is at afterwards.`,
		Example: `  zrpcctl snapshot restore backup.snap
  zrpcctl snapshot restore backup.snap --yes`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			path := args[0]
			cmd.SilenceUsage = true
			if !yes && !isTerminal(cmd.InOrStdin()) {
				return errConfirmWithYes
			}
			info, err := snapshot.InspectFile(path)
			if err != nil {
				return fmt.Errorf("refusing to restore: %w", err)
			}
			if !yes {
				if err := confirmRestore(cmd.InOrStdin(), cmd.ErrOrStderr(), path, info); err != nil {
					return err
				}
			}
			defer transferContext(cmd)()
			return o.run(cmd, true, func(ctx context.Context, c *client.Client, p *printer) error {
				f, err := os.Open(path)
				if err != nil {
					return err
				}
				defer f.Close()
				bar := newProgressBar(cmd.ErrOrStderr(), "restore", int64(info.FileSize))
				var sent int64
				resp, err := c.RestoreSnapshot(ctx, f, client.SnapshotOptions{Progress: func(n int64) {
					sent = n
					bar.set(n)
				}})
				bar.finish()
				if err != nil {
					return restoreInterrupted(ctx, err, path, sent >= int64(info.FileSize))
				}
				return p.sentence(resp, fmt.Sprintf("restored %s (index %d, revision %d): the registry is at revision %d",
					path, resp.FileIndex, resp.FileRevision, resp.GetHeader().GetRevision()))
			})
		},
	}
	cmd.Flags().BoolVar(&yes, "yes", false, "restore without asking for confirmation")
	return cmd
}

// restoreInterrupted reports a restore that Ctrl-C (or SIGTERM) ended by
// what became of the cluster's state: an agent restores only a whole
// file, so one interrupted while sending it changed nothing, but once
// every byte was sent the agents may have restored it all the same.
func restoreInterrupted(ctx context.Context, err error, path string, allSent bool) error {
	err = asInterrupted(ctx, "restore snapshot", err)
	if !errors.Is(err, errInterrupted) {
		return err
	}
	if !allSent {
		return &hintError{err: err, hint: "the agent had not received the whole file, so nothing was changed"}
	}
	return &hintError{err: fmt.Errorf("%w: %w after every byte of %s was sent", err, apierr.ErrOutcomeUnknown, path),
		hint: "the cluster may have restored it: `zrpcctl service list` shows whether the registry holds the snapshot's services " +
			"(`zrpcctl snapshot inspect " + path + "` counts them); restoring the file again sets the same state"}
}

var (
	// errNotConfirmed: the operator did not confirm a restore.
	errNotConfirmed = errors.New("restore not confirmed; nothing was changed")
	// errConfirmWithYes: there is no terminal to ask for confirmation on.
	errConfirmWithYes = errors.New("restore replaces the cluster's whole state: confirm with --yes (stdin is not a terminal to ask on); nothing was changed")
)

// confirmRestore asks on out and reads the answer from in, a terminal.
func confirmRestore(in io.Reader, out io.Writer, path string, info *snapshot.Info) error {
	fmt.Fprintf(out, "Replace the cluster's whole state with %s (revision %d, made %s: %d services, %d instances, %d blobs)? Type yes: ",
		path, info.Revision, info.Created.Format("2006-01-02 15:04:05Z07:00"), info.Services, info.Instances, info.Blobs)
	answer, _ := bufio.NewReader(in).ReadString('\n')
	if strings.TrimSpace(answer) != "yes" {
		return errNotConfirmed
	}
	return nil
}
