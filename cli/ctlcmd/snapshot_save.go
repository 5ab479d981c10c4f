package ctlcmd

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/zrpcio/zrpc/client"
	"github.com/zrpcio/zrpc/snapshot"
)

func newSnapshotSaveCommand(o *options) *cobra.Command {
	var stale bool
	cmd := &cobra.Command{
		Use:   "save FILE",
		Short: "Save a verified snapshot of the cluster's state to a file",
		Long: `Save a point-in-time snapshot of the cluster's whole Raft state to FILE. The
leader's state is saved (any agent relays it); with --stale, the state of
the agent zrpcctl talks to, which may lag the leader but needs none.

The file is written to a temporary file next to FILE and synced, then
verified: it is read back, its SHA-256 checked and every record of its
state walked (the agent loads each snapshot it sends into a scratch state
machine first when it restores). Only then does it take FILE's name,
replacing a file there; a failed or interrupted save leaves FILE as it
was and no temporary file. A FILE that exists and is not a regular file
(a device, a FIFO, a symlink) is refused. On a terminal a progress bar shows on stderr.
--timeout bounds only the wait for an agent to start sending.`,
		Example: `  zrpcctl snapshot save backup.snap
  zrpcctl --addr 10.0.0.2:8400 snapshot save --stale n2.snap`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			path := args[0]
			defer transferContext(cmd)()
			return o.run(cmd, true, func(ctx context.Context, c *client.Client, p *printer) error {
				info, err := saveSnapshot(ctx, o, c, cmd.ErrOrStderr(), path, stale)
				if err != nil {
					return asInterrupted(ctx, "save snapshot", err)
				}
				s := snapshotInfo(path, info)
				return p.sentence(s, fmt.Sprintf("saved and verified %s: index %d, term %d, revision %d, %d services, %d instances, %d blobs, %s, sha256 %s",
					path, s.Index, s.Term, s.Revision, s.Services, s.Instances, s.Blobs, formatSize(s.FileBytes), s.Sha256))
			})
		},
	}
	cmd.Flags().BoolVar(&stale, "stale", false, "save the state of the agent zrpcctl talks to instead of the leader's")
	return cmd
}

// saveSnapshot streams a snapshot into path atomically and returns what
// the verified file holds.
func saveSnapshot(ctx context.Context, o *options, c *client.Client, errOut io.Writer, path string, stale bool) (*snapshot.Info, error) {
	var info *snapshot.Info
	bar := newProgressBar(errOut, "snapshot", -1)
	defer bar.finish()
	err := snapshot.WriteFile(path,
		func(w io.Writer) error {
			fa := o.firstAnswer(ctx)
			if !stale {
				fa.diagnose = o.leaderless(c)
			}
			defer fa.close()
			_, err := c.SaveSnapshot(fa.ctx, w, client.SnapshotOptions{Stale: stale, Progress: func(n int64) {
				fa.answered()
				bar.set(n)
			}})
			if err != nil && !errors.Is(context.Cause(fa.ctx), errNoFirstAnswer) {
				return err // it says "save snapshot" already
			}
			return fa.wrap("save snapshot", err)
		},
		func(tmp string) (err error) {
			info, err = snapshot.InspectFile(tmp)
			return err
		})
	var unsynced *snapshot.DirSyncError
	switch {
	case errors.As(err, &unsynced):
		return nil, err // the file is there: the error says so
	case err != nil:
		return nil, fmt.Errorf("%w; %s was not written", err, path)
	}
	return info, nil
}
