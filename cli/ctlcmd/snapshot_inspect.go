package ctlcmd

import (
	"github.com/spf13/cobra"

	"github.com/zrpcio/zrpc/snapshot"
)

func newSnapshotInspectCommand(o *options) *cobra.Command {
	return &cobra.Command{
		Use:   "inspect FILE",
		Short: "Check a snapshot file and show what it holds",
		Long: `Read the snapshot file FILE, check its header and SHA-256 trailer and walk
every record of its state, then print its index, term, revision, when it
was made, its size and hash, and the counts of agents, sessions, services,
instances, blobs and ACL tokens. A damaged file fails with what is wrong
with it. No agent is contacted.`,
		Example: `  zrpcctl snapshot inspect backup.snap
  zrpcctl snapshot inspect backup.snap -o json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cmd.SilenceUsage = true
			p, err := newPrinter(cmd.OutOrStdout(), o.output)
			if err != nil {
				return err
			}
			info, err := snapshot.InspectFile(args[0])
			if err != nil {
				return err
			}
			s := snapshotInfo(args[0], info)
			return p.fields(s, snapshotFields(s))
		},
	}
}
