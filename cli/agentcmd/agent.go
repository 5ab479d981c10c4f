package agentcmd

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

	"github.com/zrpcio/zrpc/cli"
	"github.com/zrpcio/zrpc/node"
)

// NewCommand returns the zrpcd root command.
func NewCommand() *cobra.Command {
	root := &cobra.Command{
		Use:   "zrpcd",
		Short: "zrpcd runs a zrpc agent: service registry, health checks and API on one machine",
		Long: `zrpcd is the zrpc agent. Run one per machine: agents keep the service
registry in a Raft-replicated state machine, check the health of the
instances they own and serve the gRPC API that zrpcctl and the rpc package use.`,
		Example: `  zrpcd agent --dev
  zrpcd agent --name n1 --data-dir /var/lib/zrpc
  zrpcd agent --help   # every setting, as a flag`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(newAgentCommand(), newKeygenCommand(), newVersionCommand("zrpcd"))
	// zrpcd prints no usage on errors (it would bury the error under
	// every setting): a bad flag says where the flags are listed.
	root.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error {
		return fmt.Errorf("%w (`%s --help` lists the flags)", err, cmd.CommandPath())
	})
	return root
}

// settingFlag is the flag of one node.Config setting. It keeps what was
// given on the command line; resolveAgentConfig applies it over the file and
// the environment.
type settingFlag struct {
	setting node.Setting
	value   string
	set     bool
}

func (f *settingFlag) String() string { return f.value }
func (f *settingFlag) Type() string   { return f.setting.Type }

// Set checks v by parsing it into a scratch Config, so a bad value is
// reported with its flag's name. A list flag given twice collects both.
func (f *settingFlag) Set(v string) error {
	if f.set && f.setting.Type == "strings" {
		v = f.value + "," + v
	}
	var probe node.Config
	if err := probe.Set(f.setting.Key, v); err != nil {
		return err
	}
	f.value, f.set = v, true
	return nil
}

// bindAgentFlags declares one flag for every node.Config setting (see
// node.Settings), with the setting's help text and default.
func bindAgentFlags(fs *pflag.FlagSet) {
	def := node.Default()
	for _, s := range node.Settings() {
		f := fs.VarPF(&settingFlag{setting: s, value: def.Get(s.Key)}, s.Flag, "", s.Help)
		if s.Type == "bool" {
			f.NoOptDefVal = "true"
		}
	}
}

// warnSecretFlags warns about each secret given as a flag: every user of
// the machine can read it in the process list.
func warnSecretFlags(fs *pflag.FlagSet, w io.Writer) {
	fs.Visit(func(f *pflag.Flag) {
		sf, ok := f.Value.(*settingFlag)
		if !ok || !sf.setting.Secret {
			return
		}
		instead := sf.setting.Env + " or the config file"
		if file, ok := node.SettingByKey(sf.setting.Key + "_file"); ok {
			instead = "--" + file.Flag + ", " + instead
		}
		fmt.Fprintf(w, "warning: --%s on the command line is visible to every user of this machine (ps, /proc); give it with %s instead\n",
			f.Name, instead)
	})
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
Give the gossip key with --encrypt-file or ZRPC_ENCRYPT: a key passed as
--encrypt is visible in the process list (the agent warns, and redacts it
in /debug/pprof/cmdline).

With --tls-ca, --tls-cert and --tls-key (zrpcctl tls makes them) the gRPC
API and Raft are mutual TLS only; SIGHUP reloads the certificate files,
and nothing else: other settings take effect when the agent is restarted.

A first signal shuts down in order (stop serving, close sessions, hand off
leadership, stop Raft, close stores); a second one exits at once, except
the same signal again within a second (a wrapper that signals the process
and then its group), which counts as the first. A shutdown not done after
a minute (a disk that does not answer) exits non-zero, naming the step it
was waiting for.`,
		Example: `  # try it out: one node, data in a temp dir
  zrpcd agent --dev

  # a persistent agent
  zrpcd agent --name n1 --data-dir /var/lib/zrpc

  # several agents on one machine: distinct ports (or --bind 127.0.0.x --http-bind 127.0.0.x --dns-bind 127.0.0.x)
  zrpcd agent --name n2 --data-dir d2 --grpc-port 8410 --raft-port 8411 --gossip-port 8412 --http-port 8490 --dns-port 8610`,
		Args: cobra.NoArgs,
	}
	fs := cmd.Flags()
	bindAgentFlags(fs)
	fs.StringVar(&cfgFile, "config", "", "YAML config file (keys as in node.Config: name, data_dir, grpc_port, ...)")
	fs.BoolVar(&dev, "dev", false, "development mode: one node named dev, data in a temp dir removed on exit")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		final, cleanup, err := resolveAgentConfig(fs, cfgFile, dev, os.LookupEnv)
		if err != nil {
			return err
		}
		warnSecretFlags(fs, cmd.ErrOrStderr())
		defer cleanup()
		return runAgent(cmd.Context(), final, cmd.OutOrStdout(), cmd.ErrOrStderr())
	}
	cmd.AddCommand(newAgentJoinCommand(), newAgentRecoverCommand())
	return cmd
}

func newAgentJoinCommand() *cobra.Command {
	var cfgFile string
	cmd := &cobra.Command{
		Use:   "join ADDR...",
		Short: "Run an agent that joins an existing cluster",
		Long: `Run an agent that joins the cluster through any of the given gossip
addresses (host[:port]; the port defaults to this agent's --gossip-port,
8402 unless set, as agents of a cluster usually share it). A DNS name
stands for every address it resolves to (A and AAAA), so the name of a
headless Kubernetes Service joins all its pods. It retries with capped
exponential backoff, logging each attempt and looking names up again,
until one answers. The leader then adds the
agent to Raft: as a voter while the cluster has fewer than --voters, as a
nonvoter beyond. An agent that joined once rejoins from its data dir after a
restart without being told where.`,
		Example: `  zrpcd agent join 10.0.0.1:8402 --name n2 --data-dir /var/lib/zrpc
  zrpcd agent join zrpc.zrpc.svc.cluster.local --bootstrap-expect 3
  # on one machine: a second and third agent on other loopback addresses
  zrpcd agent join 127.0.0.1:8402 --name n2 --data-dir d2 --bind 127.0.0.2
  zrpcd agent join 127.0.0.1:8402 --name n3 --data-dir d3 --bind 127.0.0.3`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return fmt.Errorf("give the gossip address (host[:port]) of at least one agent of the cluster to join; `%s --help` shows how", cmd.CommandPath())
			}
			return nil
		},
	}
	fs := cmd.Flags()
	bindAgentFlags(fs)
	fs.StringVar(&cfgFile, "config", "", "YAML config file")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		final, cleanup, err := resolveJoinConfig(fs, cfgFile, args, os.LookupEnv)
		if err != nil {
			return err
		}
		warnSecretFlags(fs, cmd.ErrOrStderr())
		defer cleanup()
		return runAgent(cmd.Context(), final, cmd.OutOrStdout(), cmd.ErrOrStderr())
	}
	return cmd
}

// resolveJoinConfig is resolveAgentConfig with the addresses given to
// `agent join` added to the join list. An address without a port takes
// the agent's gossip_port, as one given with --join does: agents of a
// cluster usually share their gossip port, whatever it is.
func resolveJoinConfig(fs *pflag.FlagSet, file string, args []string, lookup func(string) (string, bool)) (node.Config, func(), error) {
	cfg, cleanup, err := resolveAgentConfig(fs, file, false, lookup)
	if err != nil {
		return cfg, cleanup, err
	}
	cfg.Join = append(cfg.Join, args...)
	if err := cfg.Validate(); err != nil {
		cleanup()
		return cfg, func() {}, fmt.Errorf("invalid agent configuration:\n%w", err)
	}
	return cfg, cleanup, nil
}

// resolveAgentConfig layers defaults, --dev, the file, the environment (read
// through lookup) and then the flags that were set explicitly, and
// validates the result.
func resolveAgentConfig(fs *pflag.FlagSet, file string, dev bool, lookup func(string) (string, bool)) (node.Config, func(), error) {
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
	if err := layerAgentConfig(&cfg, fs, file, lookup); err != nil {
		cleanup()
		return cfg, func() {}, err
	}
	if err := cfg.Validate(); err != nil {
		cleanup()
		return cfg, func() {}, fmt.Errorf("invalid agent configuration:\n%w", err)
	}
	return cfg, cleanup, nil
}

// layerAgentConfig overrides cfg with the file, then the environment, then
// the flags set on the command line: flag > env > file > default.
func layerAgentConfig(cfg *node.Config, fs *pflag.FlagSet, file string, lookup func(string) (string, bool)) error {
	if file != "" {
		if err := cfg.LoadFile(file); err != nil {
			return err
		}
	}
	if err := cfg.LoadEnv(lookup); err != nil {
		return fmt.Errorf("environment: %w", err)
	}
	var errs []error
	fs.Visit(func(f *pflag.Flag) {
		if sf, ok := f.Value.(*settingFlag); ok {
			if err := cfg.Set(sf.setting.Key, sf.value); err != nil {
				errs = append(errs, fmt.Errorf("--%s: %w", f.Name, err))
			}
		}
	})
	return errors.Join(errs...)
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

// runningAgent is what waitForEnd watches of a started agent (a
// *node.Node).
type runningAgent interface {
	Left() <-chan struct{}
	RaftFailed() <-chan struct{}
	RaftFailure() string
	Refused() <-chan struct{}
	Refusal() error
	ReloadTLS() error
}

// startInterruptibly runs start with a context that SIGINT or SIGTERM
// (on sigs) ends: Ctrl-C during a slow start (a large blob store or Raft
// snapshot to open) stops it between its steps, where the signal would
// otherwise wait until the agent was up. It returns the signal that came
// if start succeeded all the same. A second signal (not the first one
// repeated at once, see repeatedSignalWindow) returns at once with an
// error, start still running: a step that hangs on a disk that does not
// answer never reaches the context, and the process exits without it.
//
// No timer ends the start: its steps do not wait on the context, so one
// would not stop a step that hangs, only fail, once it was done, the start
// of an agent whose stores take long to open, at every attempt. The
// operator or the supervisor stops a start that takes too long, by signal.
func startInterruptibly(ctx context.Context, start func(context.Context) error, sigs <-chan os.Signal, log *slog.Logger) (os.Signal, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- start(ctx) }()
	var first os.Signal
	var firstAt time.Time
	for {
		select {
		case err := <-done:
			if first != nil && err != nil {
				return first, fmt.Errorf("interrupted by %s: %w", first, err)
			}
			return first, err
		case s := <-sigs:
			switch {
			case first == nil:
				log.Warn("signal during start; stopping it (send it again to exit now)", "signal", s.String())
				first, firstAt = s, time.Now()
				cancel()
			case repeated(s, first, firstAt):
				log.Debug("the signal that stopped the start came again at once; taken as the same request", "signal", s.String())
			default:
				log.Warn("second signal during start; exiting without a clean shutdown", "signal", s.String())
				return s, fmt.Errorf("forced exit by a second signal (%s) during the start", s)
			}
		}
	}
}

// repeated reports whether s is the signal first, received at firstAt,
// sent again within repeatedSignalWindow.
func repeated(s, first os.Signal, firstAt time.Time) bool {
	return first != nil && s == first && time.Since(firstAt) < repeatedSignalWindow
}

// waitForEnd returns when ctx ends, the agent has left, its Raft node
// failed (returned as an error: the process exits non-zero, for its
// supervisor to restart it) or a signal of sigs arrives (returned as sig);
// on SIGHUP (hup) it reloads the TLS certificates if tlsOn (reloadOnHUP)
// and waits on.
func waitForEnd(ctx context.Context, n runningAgent, sigs, hup <-chan os.Signal, tlsOn bool, log *slog.Logger) (sig os.Signal, err error) {
	for {
		select {
		case <-ctx.Done():
			return nil, nil
		case <-n.Left():
			log.Info("left the cluster; shutting down")
			return nil, nil
		case <-n.RaftFailed():
			err := fmt.Errorf("the agent stopped its Raft node: %s", n.RaftFailure())
			log.Error("shutting down: this agent can apply no more writes nor keep its instances' health; its peers see it failed until it is restarted", "err", err)
			return nil, err
		case <-n.Refused():
			err := n.Refusal()
			log.Error("shutting down: the cluster refused this agent", "err", err)
			return nil, err
		case s := <-sigs:
			log.Info("signal received; shutting down (send it again to exit now)", "signal", s.String())
			return s, nil
		case <-hup:
			reloadOnHUP(n, tlsOn, log)
		}
	}
}

// reloadOnHUP is what SIGHUP does: it reloads the TLS files when the
// agent runs TLS (tlsOn), the only settings read again while it runs, and
// says at INFO what it did, so that an operator who edited other settings
// and sent SIGHUP learns that they take a restart.
func reloadOnHUP(n runningAgent, tlsOn bool, log *slog.Logger) {
	if !tlsOn {
		log.Info("SIGHUP: nothing to reload: no TLS configured; SIGHUP reloads only the TLS files, " +
			"other settings (config file, environment, flags) take effect when the agent is restarted")
		return
	}
	if err := n.ReloadTLS(); err != nil {
		log.Error("SIGHUP: TLS certificates not reloaded; the old ones stay in use", "err", err)
		return
	}
	log.Info("SIGHUP: TLS files reloaded; other settings (config file, environment, flags) take effect when the agent is restarted")
}

// listeners is what printBanner needs of a started node.
type listeners interface {
	GRPCAddr() string
	HTTPAddr() string
	DNSAddr() string
}

// printBanner tells whoever started the agent where to reach it: the gRPC
// API (with the zrpcctl flag that reaches it), the web UI and metrics, DNS
// when it is on (with a query to try), and the data directory.
func printBanner(out io.Writer, cfg node.Config, n listeners) {
	grpc := n.GRPCAddr()
	fmt.Fprintf(out, "zrpcd %s agent %q running\n", cli.VersionString(), cfg.Name)
	fmt.Fprintf(out, "  gRPC API:  %s   (zrpcctl --addr %s)\n", grpc, grpc)
	if h := n.HTTPAddr(); h != "" {
		fmt.Fprintf(out, "  web UI:    http://%s/ui/\n  metrics:   http://%s/metrics\n", h, h)
	}
	if d := n.DNSAddr(); d != "" {
		try := ""
		if host, port, err := net.SplitHostPort(d); err == nil {
			try = fmt.Sprintf("   (dig @%s -p %s SERVICE.service.%s)", host, port, cfg.DNSDomain)
		}
		fmt.Fprintf(out, "  DNS:       %s%s\n", d, try)
	}
	fmt.Fprintf(out, "  data dir:  %s\n", cfg.DataDir)
}

// shutdownBound is how long the agent's shutdown may take (a store that
// does not close on a hung disk) before the process exits without
// finishing it; tests shorten it.
var shutdownBound = time.Minute

// repeatedSignalWindow: the signal that started the shutdown, arriving
// again within this, is the same request sent twice (GNU timeout and some
// supervisors signal the process and then its group), not an operator's
// second Ctrl-C.
const repeatedSignalWindow = time.Second

// stoppingAgent is what shutDown needs of an agent (a *node.Node).
type stoppingAgent interface {
	Close() error
	ClosingStep() string
}

// shutDown closes n, which a signal first (nil if none did) or another
// end asked for, and returns Close's error. A signal of sigs meanwhile
// exits at once without a clean shutdown, unless it is first repeated
// within repeatedSignalWindow; so does a shutdown still running after
// bound, with an error saying which step it was still waiting for.
func shutDown(n stoppingAgent, first os.Signal, sigs <-chan os.Signal, bound time.Duration, log *slog.Logger) error {
	began := time.Now()
	done := make(chan error, 1)
	go func() { done <- n.Close() }()
	timer := time.NewTimer(bound)
	defer timer.Stop()
	for {
		select {
		case err := <-done:
			return err
		case s := <-sigs:
			if repeated(s, first, began) {
				log.Debug("the signal that started the shutdown came again at once; taken as the same request", "signal", s.String())
				continue
			}
			step := n.ClosingStep()
			log.Warn("second signal; exiting without a clean shutdown", "signal", s.String(), "step", step)
			return fmt.Errorf("forced exit by a second signal (%s) while the shutdown was at step %q", s, step)
		case <-timer.C:
			err := fmt.Errorf("the shutdown did not finish within %s: it was still at step %q; exiting without a clean shutdown "+
				"(a disk that does not answer under the data dir is the usual cause; check it before starting the agent again)", bound, n.ClosingStep())
			log.Error("shutdown abandoned", "err", err)
			return err
		}
	}
}

// runAgent starts a node (built with opts) and runs it until a signal or
// ctx ends.
func runAgent(ctx context.Context, cfg node.Config, out, errw io.Writer, opts ...node.Option) error {
	log := newLogger(cfg, errw)
	log.Info("soft memory limit", "limit", node.ApplyMemoryLimit(cfg))
	log.Info("garbage collection", "pacing", node.ApplyGCFloor())
	cfg.Build = cli.VersionString()
	n, err := node.New(cfg, append([]node.Option{node.WithLogger(log)}, opts...)...)
	if err != nil {
		return err
	}
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	// SIGHUP is taken from before the start: unhandled, it would end the
	// process. One that comes during the start reloads the certificates
	// once it is done.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	interrupted, err := startInterruptibly(ctx, n.Start, sigs, log)
	if err != nil {
		return fmt.Errorf("start agent: %w", err)
	}
	if interrupted != nil {
		// Started just as the signal came: shut down as asked.
		log.Info("signal during start; shutting down", "signal", interrupted.String())
		return shutDown(n, interrupted, sigs, shutdownBound, log)
	}
	printBanner(out, cfg, n)

	first, failed := waitForEnd(ctx, n, sigs, hup, n.TLSEnabled(), log)
	err = shutDown(n, first, sigs, shutdownBound, log)
	if failed != nil {
		return failed // Close's error adds nothing: the Raft log failed first
	}
	return err
}
