package agentcmd

import (
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/zrpcio/zrpc/node"
)

func newAgentRecoverCommand() *cobra.Command {
	var (
		cfgFile string
		dryRun  bool
	)
	cmd := &cobra.Command{
		Use:   "recover",
		Short: "Make a stopped agent the only voter of its cluster, after a majority of voters is lost for good",
		Long: `Outage recovery. A cluster that has lost a majority of its voters for
good (their machines or disks are gone) has no leader and cannot elect one:
writes, joins, ` + "`zrpcctl raft remove-peer`" + ` and the removal of the dead agents
all need one. recover rewrites the Raft state in the data dir of one
stopped agent so that it is its cluster's only voter, keeping its registry,
blob metadata and shards; nothing is sent anywhere. Then:

  1. run it with --dry-run on every surviving agent (each stopped) and pick
     the one whose LAST_INDEX is highest: entries only the others hold are
     lost, and entries in the chosen agent's log that were not yet
     committed become committed;
  2. run it without --dry-run on that agent, with the flags or --config it
     runs with (its name, data dir and Raft address);
  3. start it as usual: it leads at once;
  4. start every other agent with an empty data dir and --join it.

Recovery gives the cluster a new id: an agent that comes back with its old
Raft state (one given up for lost, or a survivor not emptied) is refused by
gossip and by Raft, and both it and the recovered agents log why, for its
log may hold entries the recovered log lacks under the same index and term.
Empty its data dir (move it aside if it holds something you need) and start
it again with --join. Recover one agent only: each recovery makes a cluster
of its own, and two recovered agents refuse each other.

The dead agents are removed after dead_node_reap, and repair rebuilds their
blob shards on the agents that join. Do not use it while a majority of the
voters can still come back: restart them instead.`,
		Example: `  zrpcd agent recover --dry-run --config /etc/zrpc/agent.yaml
  zrpcd agent recover --config /etc/zrpc/agent.yaml
  zrpcd agent recover --name n1 --data-dir /var/lib/zrpc --bind 10.0.0.1`,
		Args: cobra.NoArgs,
	}
	fs := cmd.Flags()
	bindAgentFlags(fs)
	fs.StringVar(&cfgFile, "config", "", "YAML config file the agent runs with")
	fs.BoolVar(&dryRun, "dry-run", false, "show the agent's Raft configuration and how far its log goes, change nothing (reads a copy of the Raft state, made in $TMPDIR)")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		cfg, cleanup, err := resolveAgentConfig(fs, cfgFile, false, os.LookupEnv)
		if err != nil {
			return err
		}
		defer cleanup()
		warnSecretFlags(fs, cmd.ErrOrStderr())
		if cfg.LogLevel == "info" {
			cfg.LogLevel = "warn" // raft's restore progress only when asked for
		}
		rep, addr, err := node.Recover(cfg, dryRun, newLogger(cfg, cmd.ErrOrStderr()))
		if err != nil {
			return err
		}
		printRecover(cmd.OutOrStdout(), cfg, rep, addr, dryRun)
		return nil
	}
	return cmd
}

// printRecover says what recover found, what it did and what comes next.
func printRecover(w io.Writer, cfg node.Config, rep node.RecoverReport, addr string, dryRun bool) {
	prev := make([]string, 0, len(rep.Previous))
	for _, s := range rep.Previous {
		prev = append(prev, fmt.Sprintf("%s (%s, %s)", s.ID, s.Suffrage, s.Address))
	}
	fmt.Fprintf(w, "Agent:           %s\n", cfg.Name)
	fmt.Fprintf(w, "Data dir:        %s\n", cfg.DataDir)
	fmt.Fprintf(w, "Raft peers:      %s\n", strings.Join(prev, ", "))
	fmt.Fprintf(w, "LAST_INDEX:      %d (term %d)\n", rep.LastIndex, rep.LastTerm)
	if dryRun {
		fmt.Fprintf(w, "\nNothing changed (--dry-run). Without it, %s becomes the only voter of its cluster, at %s, and the cluster gets a new id.\n", cfg.Name, addr)
		return
	}
	fmt.Fprintf(w, "Now:             %s, the only voter, at %s\n", cfg.Name, addr)
	fmt.Fprintf(w, "Registry:        revision %d, %d instances, %d blobs\n", rep.Revision, rep.Instances, rep.Blobs)
	if rep.ClusterID != "" {
		was := rep.PreviousClusterID
		if was == "" {
			was = "none: its first leader never wrote one"
		}
		fmt.Fprintf(w, "Cluster ID:      %s (was %s)\n", rep.ClusterID, was)
	}
	fmt.Fprintf(w, "\nStart %s as usual: it leads at once. Start the other agents with empty data dirs and --join it:\n"+
		"an agent that kept its Raft state is refused, as it belongs to the cluster's old id.\n", cfg.Name)
}
