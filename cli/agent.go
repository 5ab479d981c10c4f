package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/zrpcio/zrpc/node"
)

// NewAgentdCommand returns the zrpcd root command.
func NewAgentdCommand() *cobra.Command {
	root := &cobra.Command{
		Use:   "zrpcd",
		Short: "zrpcd runs a zrpc agent: service registry, health checks and API on one machine",
		Long: `zrpcd is the zrpc agent. Run one per machine: agents keep the service
registry in a Raft-replicated state machine, check the health of the
instances they own and serve the gRPC API that zrpcctl and the rpc package use.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(newAgentCommand(), newKeygenCommand(), newVersionCommand("zrpcd"))
	return root
}

// agentFlags are the flags of `zrpcd agent`; each maps to a node.Config field
// and wins over the config file and the environment.
func bindAgentFlags(fs *pflag.FlagSet, c *node.Config) {
	fs.StringVar(&c.Name, "name", c.Name, "agent name, unique in the cluster (default: host name)")
	fs.StringVar(&c.DataDir, "data-dir", c.DataDir, "directory for the Raft log, snapshots and blobs")
	fs.StringVar(&c.BindAddr, "bind", c.BindAddr, "IP address every listener binds to")
	fs.StringVar(&c.AdvertiseAddr, "advertise", c.AdvertiseAddr, "IP address peers and clients use (default: --bind)")
	fs.IntVar(&c.GRPCPort, "grpc-port", c.GRPCPort, "gRPC API port (0 picks a free port)")
	fs.IntVar(&c.RaftPort, "raft-port", c.RaftPort, "Raft transport port")
	fs.IntVar(&c.GossipPort, "gossip-port", c.GossipPort, "gossip port (tcp+udp)")
	fs.IntVar(&c.HTTPPort, "http-port", c.HTTPPort, "HTTP port for /metrics, /healthz, /readyz, /debug/pprof")
	fs.StringVar(&c.Zone, "zone", c.Zone, "zone or rack of this machine, used for placement and routing")
	fs.StringVar(&c.LogLevel, "log-level", c.LogLevel, "log level: debug, info, warn or error")
	fs.StringVar(&c.LogFormat, "log-format", c.LogFormat, "log format: text or json")
	fs.IntVar(&c.BootstrapExpect, "bootstrap-expect", c.BootstrapExpect, "wait for this many agents to see each other, then bootstrap them together (0: off)")
	fs.IntVar(&c.Voters, "voters", c.Voters, "Raft voters the cluster keeps (1-5); further agents join as nonvoters")
	fs.DurationVar(&c.DeadNodeReap, "dead-node-reap", c.DeadNodeReap, "how long a failed agent's instances stay critical before the agent and its instances are removed")
	fs.StringVar(&c.EncryptKey, "encrypt", c.EncryptKey, "base64 gossip encryption key shared by all agents (zrpcd keygen prints one)")
	fs.StringVar(&c.GossipProfile, "gossip-profile", c.GossipProfile, "gossip timers: lan, or local for agents on one machine")
	fs.IntVar(&c.BlobBlockSize, "blob-block-size", c.BlobBlockSize, "bytes per erasure-coded block of a blob (4096 to 8 MiB)")
	fs.Int64Var(&c.BlobMaxSize, "blob-max-size", c.BlobMaxSize, "largest blob a put may store, in bytes")
	fs.Int64Var(&c.ShardMaxBytes, "shard-max-bytes", c.ShardMaxBytes, "disk space this agent gives to blob shards, in bytes (0: no limit)")
	fs.DurationVar(&c.BlobRepairDelay, "blob-repair-delay", c.BlobRepairDelay, "how long an agent must be failed before its shards are rebuilt on others")
	fs.Int64Var(&c.BlobScrubRate, "blob-scrub-rate", c.BlobScrubRate, "bytes per second the scrubber re-reads to find bit rot (0: off)")
}

func newAgentCommand() *cobra.Command {
	var (
		cfgFile string
		dev     bool
	)
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Run an agent",
		Long: `Run an agent in the foreground until SIGINT or SIGTERM.

With an empty data dir the agent bootstraps a one-node cluster and leads it;
with existing state it resumes. Configuration comes from, lowest first:
defaults, the YAML file given by --config, ZRPC_* environment variables
(ZRPC_NAME, ZRPC_DATA_DIR, ZRPC_GRPC_PORT, ... named after the YAML keys),
and flags. A bad value stops the agent before it touches the data dir.

A first signal shuts down in order (stop serving, close sessions, hand off
leadership, stop Raft, close stores); a second one exits at once.`,
		Example: `  # try it out: one node, data in a temp dir
  zrpcd agent --dev

  # a persistent agent
  zrpcd agent --name n1 --data-dir /var/lib/zrpc

  # several agents on one machine: distinct ports (or --bind 127.0.0.x)
  zrpcd agent --name n2 --data-dir d2 --grpc-port 8410 --raft-port 8411 --gossip-port 8412 --http-port 8490`,
		Args: cobra.NoArgs,
	}
	flags := node.Default()
	fs := cmd.Flags()
	bindAgentFlags(fs, &flags)
	fs.StringVar(&cfgFile, "config", "", "YAML config file (keys as in node.Config: name, data_dir, grpc_port, ...)")
	fs.BoolVar(&dev, "dev", false, "development mode: one node named dev, data in a temp dir removed on exit")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		final, cleanup, err := resolveAgentConfig(fs, &flags, cfgFile, dev)
		if err != nil {
			return err
		}
		defer cleanup()
		return runAgent(cmd.Context(), final, cmd.OutOrStdout(), cmd.ErrOrStderr())
	}
	cmd.AddCommand(newAgentJoinCommand())
	return cmd
}

func newAgentJoinCommand() *cobra.Command {
	var cfgFile string
	cmd := &cobra.Command{
		Use:   "join ADDR...",
		Short: "Run an agent that joins an existing cluster",
		Long: `Run an agent that joins the cluster through any of the given gossip
addresses (host:port, default port 8402). It retries with capped exponential
backoff, logging each attempt, until one answers. The leader then adds the
agent to Raft: as a voter while the cluster has fewer than --voters, as a
nonvoter beyond. An agent that joined once rejoins from its data dir after a
restart without being told where.`,
		Example: `  zrpcd agent join 10.0.0.1:8402 --name n2 --data-dir /var/lib/zrpc
  # on one machine: a second and third agent on other loopback addresses
  zrpcd agent join 127.0.0.1:8402 --name n2 --data-dir d2 --bind 127.0.0.2
  zrpcd agent join 127.0.0.1:8402 --name n3 --data-dir d3 --bind 127.0.0.3`,
		Args: cobra.MinimumNArgs(1),
	}
	flags := node.Default()
	fs := cmd.Flags()
	bindAgentFlags(fs, &flags)
	fs.StringVar(&cfgFile, "config", "", "YAML config file")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		final, cleanup, err := resolveAgentConfig(fs, &flags, cfgFile, false)
		if err != nil {
			return err
		}
		defer cleanup()
		for _, a := range args {
			if _, _, err := net.SplitHostPort(a); err != nil {
				a = net.JoinHostPort(a, "8402")
			}
			final.Join = append(final.Join, a)
		}
		if err := final.Validate(); err != nil {
			return fmt.Errorf("invalid agent configuration:\n%w", err)
		}
		return runAgent(cmd.Context(), final, cmd.OutOrStdout(), cmd.ErrOrStderr())
	}
	return cmd
}

// resolveAgentConfig layers defaults, --dev, the file, the environment and
// then the flags that were set explicitly.
func resolveAgentConfig(fs *pflag.FlagSet, flags *node.Config, file string, dev bool) (node.Config, func(), error) {
	cfg := node.Default()
	cleanup := func() {}
	if dev {
		dir, err := os.MkdirTemp("", "zrpc-dev-")
		if err != nil {
			return cfg, cleanup, fmt.Errorf("create dev data dir: %w", err)
		}
		cleanup = func() { os.RemoveAll(dir) }
		cfg.DataDir = dir
		cfg.Name = "dev"
		cfg.LogLevel = "info"
	}
	if file != "" {
		if err := cfg.LoadFile(file); err != nil {
			cleanup()
			return cfg, func() {}, err
		}
	}
	if err := cfg.LoadEnv(os.LookupEnv); err != nil {
		cleanup()
		return cfg, func() {}, fmt.Errorf("environment: %w", err)
	}
	// Flags the user set win over the file and the environment.
	fs.Visit(func(f *pflag.Flag) { applyFlag(&cfg, flags, f.Name) })
	if err := cfg.Validate(); err != nil {
		cleanup()
		return cfg, func() {}, fmt.Errorf("invalid agent configuration:\n%w", err)
	}
	return cfg, cleanup, nil
}

// applyFlag copies the field behind flag name from src to dst.
func applyFlag(dst, src *node.Config, name string) {
	switch name {
	case "name":
		dst.Name = src.Name
	case "data-dir":
		dst.DataDir = src.DataDir
	case "bind":
		dst.BindAddr = src.BindAddr
	case "advertise":
		dst.AdvertiseAddr = src.AdvertiseAddr
	case "grpc-port":
		dst.GRPCPort = src.GRPCPort
	case "raft-port":
		dst.RaftPort = src.RaftPort
	case "gossip-port":
		dst.GossipPort = src.GossipPort
	case "http-port":
		dst.HTTPPort = src.HTTPPort
	case "zone":
		dst.Zone = src.Zone
	case "log-level":
		dst.LogLevel = src.LogLevel
	case "log-format":
		dst.LogFormat = src.LogFormat
	case "bootstrap-expect":
		dst.BootstrapExpect = src.BootstrapExpect
	case "voters":
		dst.Voters = src.Voters
	case "dead-node-reap":
		dst.DeadNodeReap = src.DeadNodeReap
	case "encrypt":
		dst.EncryptKey = src.EncryptKey
	case "gossip-profile":
		dst.GossipProfile = src.GossipProfile
	}
}

func newLogger(cfg node.Config, w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.LogLevel))
	opts := &slog.HandlerOptions{Level: level}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// runAgent starts a node and runs it until a signal or ctx ends.
func runAgent(ctx context.Context, cfg node.Config, out, errw io.Writer) error {
	log := newLogger(cfg, errw)
	node.Build = buildString()
	n, err := node.New(cfg, node.WithLogger(log))
	if err != nil {
		return err
	}
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)

	startCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := n.Start(startCtx); err != nil {
		return fmt.Errorf("start agent: %w", err)
	}
	fmt.Fprintf(out, "zrpcd %s agent %q running\n  gRPC API:  %s   (zrpcctl --addr %s)\n  HTTP:      http://%s/metrics\n  data dir:  %s\n",
		buildString(), cfg.Name, n.GRPCAddr(), n.GRPCAddr(), n.HTTPAddr(), cfg.DataDir)

	select {
	case <-ctx.Done():
	case <-n.Left():
		log.Info("left the cluster; shutting down")
	case s := <-sigs:
		log.Info("signal received; shutting down (send it again to exit now)", "signal", s.String())
	}
	done := make(chan error, 1)
	go func() { done <- n.Close() }()
	select {
	case err := <-done:
		return err
	case s := <-sigs:
		log.Warn("second signal; exiting without a clean shutdown", "signal", s.String())
		return errors.New("forced exit")
	}
}
