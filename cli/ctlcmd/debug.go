package ctlcmd

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/zrpcio/zrpc/client"
)

// debugFlags are the flags of `zrpcctl debug`.
type debugFlags struct {
	duration time.Duration
	interval time.Duration
	output   string
	httpAddr string
}

// Bounds of `zrpcctl debug`'s timing flags.
const (
	defaultDebugDuration = 30 * time.Second
	defaultDebugInterval = 10 * time.Second
	maxDebugDuration     = time.Hour
	defaultHTTPPort      = "8480"
)

func newDebugCommand(o *options) *cobra.Command {
	f := &debugFlags{}
	cmd := &cobra.Command{
		Use:   "debug",
		Short: "Capture an agent's state, metrics, profiles and logs into a .tar.gz for a bug report",
		Long: `Capture, from one agent (the first reachable of --addr, and its HTTP endpoint
at --http-addr, by default port 8480 on the host of the first --addr), what a
bug report needs, into one .tar.gz:

  index.json              what was captured, when, and every capture that failed and why
  version.json            the agent's build
  status.json             its Raft state: term, leader, commit/applied/last log index, last contact
  members.json            its gossip view of the members (status, role, zone, build)
  peers.json              the Raft configuration (voters, nonvoters, leader, last index)
  repair.json             the blob repair queue
  config.json             its settings, secret ones (keys, tokens) redacted by the agent
  interval-NN/            every --interval: metrics.prom, status.json, members.json
  watches.txt             the watch series (open streams, queued bytes, slow ends) of the last sample
  cpu.pprof               a CPU profile over --duration
  heap.pprof, goroutine.txt, logs.txt   at the end: heap and goroutine profiles, recent log lines

Progress goes to stderr. Ctrl-C stops the capture and writes what it has.
A capture the agent refuses (with ACLs on, pprof, config and logs need a token
with operator:read) or that fails is listed in index.json, the rest is kept,
and zrpcctl exits non-zero. Nothing is written when the agent cannot be reached,
and a capture stops at once, writing nothing, when the archive cannot be
written (a full disk). The archive never replaces a file: when its name was
taken during the capture, it gets the next free one (NAME-2.tar.gz, ...).
No secret of the agent is captured: its config comes redacted, and the token
zrpcctl sends is never written.`,
		Example: `  zrpcctl debug
  zrpcctl debug --duration 2m --interval 15s --output /tmp/bug-1234.tar.gz
  ZRPC_TOKEN=... zrpcctl --addr 10.0.0.1:8400 debug --http-addr 10.0.0.1:8480 --output reports/`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !cmd.Flags().Changed("http-addr") {
				f.httpAddr = agentHTTPAddr(o.endpoints()[0])
			}
			if err := f.check(); err != nil {
				return err
			}
			path, err := f.archivePath(time.Now())
			if err != nil {
				return err
			}
			return o.run(cmd, true, func(ctx context.Context, c *client.Client, _ *printer) error {
				ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
				defer stop()
				d := &debugRun{flags: f, opts: o, client: c, progress: cmd.ErrOrStderr(), path: path}
				return d.run(ctx)
			})
		},
	}
	fs := cmd.Flags()
	fs.DurationVar(&f.duration, "duration", defaultDebugDuration, "how long to capture metrics samples and the CPU profile (at most 1h)")
	fs.DurationVar(&f.interval, "interval", defaultDebugInterval, "time between two metrics, status and members samples (at most --duration)")
	fs.StringVar(&f.output, "output", "", "the archive: a path ending in .tar.gz or .tgz, or a directory to write zrpc-debug-<time>.tar.gz into (default: the current directory)")
	fs.StringVar(&f.httpAddr, "http-addr", "", "the agent's HTTP endpoint host:port (its http_bind:http_port), for metrics, profiles, config and logs (default: the host of the first --addr, port "+defaultHTTPPort+")")
	return cmd
}

// agentHTTPAddr is the HTTP endpoint of the agent whose gRPC API is at
// grpcAddr, when it runs with the default HTTP port: the captures must
// come from the agent that answers the gRPC calls, not from another one
// on the same machine (agents on 127.0.0.2, 127.0.0.3, ...).
func agentHTTPAddr(grpcAddr string) string {
	host, _, err := net.SplitHostPort(grpcAddr)
	if err != nil {
		return grpcAddr // check names it
	}
	return net.JoinHostPort(host, defaultHTTPPort)
}

// check refuses flags that cannot make a capture.
func (f *debugFlags) check() error {
	switch {
	case f.duration < time.Second || f.duration > maxDebugDuration:
		return fmt.Errorf("invalid --duration %s: want 1s to %s", f.duration, maxDebugDuration)
	case f.interval < 100*time.Millisecond:
		return fmt.Errorf("invalid --interval %s: want at least 100ms", f.interval)
	case f.interval > f.duration:
		return fmt.Errorf("invalid --interval %s: longer than --duration %s, so no second sample would be taken", f.interval, f.duration)
	}
	if _, _, err := net.SplitHostPort(f.httpAddr); err != nil {
		return fmt.Errorf("invalid --http-addr %q: want host:port of the agent's HTTP endpoint: %w", f.httpAddr, err)
	}
	return nil
}

// archivePath is the file to write: --output itself when it names a
// .tar.gz, else zrpc-debug-<time>.tar.gz in the directory it names. The
// directory must exist; the file must not.
func (f *debugFlags) archivePath(now time.Time) (string, error) {
	path := f.output
	if !strings.HasSuffix(path, ".tar.gz") && !strings.HasSuffix(path, ".tgz") {
		dir := path
		if dir == "" {
			dir = "."
		}
		if st, err := os.Stat(dir); err != nil || !st.IsDir() {
			return "", fmt.Errorf("invalid --output %q: not a directory, nor a path ending in .tar.gz", f.output)
		}
		path = filepath.Join(dir, "zrpc-debug-"+now.UTC().Format("20060102T150405Z")+".tar.gz")
	}
	if st, err := os.Stat(filepath.Dir(path)); err != nil || !st.IsDir() {
		return "", fmt.Errorf("invalid --output %q: directory %s does not exist", f.output, filepath.Dir(path))
	}
	if _, err := os.Stat(path); err == nil {
		return "", fmt.Errorf("invalid --output: %s exists; give another name or remove it", path)
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("invalid --output: %w", err)
	}
	return path, nil
}
