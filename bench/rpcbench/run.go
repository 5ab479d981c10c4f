// Package rpcbench compares zrpc's RPC path with plain grpc-go and go-zero
// zrpc from outside: for each system a server and a load generator run as
// processes of their own (zrpc's server is cmd/zrpcecho registered in a
// zrpcd agent, and its client dials zrpc:///echo.rpc through that agent).
// Rounds are interleaved: each repetition runs every system at every
// caller count, the systems' order rotating from one repetition to the
// next, so a drift of a shared machine touches all alike. It reports
// calls per second, CPU per call (server, agent and load processes, from
// /proc) and the load process's allocations per call, as medians with
// min-max, and each system's ratio to grpc-go within a repetition. Given
// another build of zrpc (Config.Base), it runs that build too, as system
// zrpc-base, and reports zrpc ÷ zrpc-base within each repetition: the A/B
// comparison of a change. cmd/zrpcrpcbench is its command line.
//
// It measures and prints; it decides nothing from the numbers.
package rpcbench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/zrpcio/zrpc/bench/internal/proc"
	"github.com/zrpcio/zrpc/bench/internal/zrpcd"
)

// Binaries are the programs the benchmark runs.
type Binaries struct {
	// Zrpcd is the agent and Echo zrpc's echo server (cmd/zrpcecho).
	Zrpcd, Echo string
	// Self is cmd/zrpcrpcbench, run as the grpc-go and go-zero servers
	// ("serve") and as every load process ("load").
	Self string
}

// Config says what to run.
type Config struct {
	Bins Binaries
	// Base, when its paths are set, is another build of zrpc, run as
	// system ZrpcBase interleaved with the others: the comparison of a
	// change with the build before it.
	Base Binaries
	// Systems are the systems to run, from Systems and ZrpcBase; empty
	// means Systems, and ZrpcBase too when Base is set.
	Systems []string
	// ZrpcClient is the variant of system zrpc's client (see
	// LoadConfig.ZrpcClient); zrpc-base always runs the default. With
	// Base set to the same build it compares a variant with the default.
	ZrpcClient string
	// Reps is how many times every system runs at every caller count.
	Reps int
	// Callers are the concurrent callers of the load process, one round
	// each.
	Callers []int
	// Warmup is each load process's unmeasured load; Duration its
	// measured one.
	Warmup, Duration time.Duration
	// Payload is the request size in bytes (the echo answers as much).
	Payload int
	// Dir holds the processes' logs and the agent's data; empty means a
	// temporary directory, removed at the end.
	Dir string
	// Log receives progress, one line per round; nil discards.
	Log *slog.Logger
}

// Validate reports every field that cannot work, by name.
func (c Config) Validate() error {
	var errs []error
	for _, b := range []struct{ name, path string }{{"zrpcd", c.Bins.Zrpcd}, {"zrpcecho", c.Bins.Echo}, {"zrpcrpcbench", c.Bins.Self}} {
		if err := proc.CheckBinary(b.path); err != nil {
			errs = append(errs, fmt.Errorf("binary %s: %w", b.name, err))
		}
	}
	if c.hasBase() {
		for _, b := range []struct{ name, path string }{{"base zrpcd", c.Base.Zrpcd}, {"base zrpcecho", c.Base.Echo}, {"base zrpcrpcbench", c.Base.Self}} {
			if err := proc.CheckBinary(b.path); err != nil {
				errs = append(errs, fmt.Errorf("binary %s: %w", b.name, err))
			}
		}
	}
	for _, sys := range c.Systems {
		switch {
		case sys == ZrpcBase && !c.hasBase():
			errs = append(errs, fmt.Errorf("systems: %s needs the base build's binaries (--base DIR)", ZrpcBase))
		case sys != ZrpcBase && !slices.Contains(Systems, sys):
			errs = append(errs, fmt.Errorf("systems: unknown system %q (want %s or %s)", sys, strings.Join(Systems, ", "), ZrpcBase))
		}
	}
	if _, err := zrpcClientOptions(c.ZrpcClient); err != nil {
		errs = append(errs, err)
	}
	if c.Reps < 1 {
		errs = append(errs, fmt.Errorf("reps %d: run at least 1 repetition (3 or more to see the spread)", c.Reps))
	}
	if len(c.Callers) == 0 {
		errs = append(errs, errors.New("callers: give at least one caller count"))
	}
	for _, n := range c.Callers {
		if n < 1 {
			errs = append(errs, fmt.Errorf("callers %d: must be at least 1", n))
		}
	}
	if c.Duration <= 0 {
		errs = append(errs, fmt.Errorf("duration %v: must be positive", c.Duration))
	}
	if c.Warmup < 0 {
		errs = append(errs, fmt.Errorf("warmup %v: must not be negative", c.Warmup))
	}
	if c.Payload < 0 {
		errs = append(errs, fmt.Errorf("payload %d: must not be negative", c.Payload))
	}
	return errors.Join(errs...)
}

func (c Config) hasBase() bool { return c.Base != (Binaries{}) }

// systems returns the systems to run, in the order of a repetition's
// first round.
func (c Config) systems() []string {
	if len(c.Systems) > 0 {
		return c.Systems
	}
	if c.hasBase() {
		return append(slices.Clip(Systems), ZrpcBase)
	}
	return Systems
}

// Round is one measured load process: a system at a caller count in a
// repetition.
type Round struct {
	Rep     int
	System  string
	Callers int
}

// rounds returns the order of the rounds: each repetition runs every
// caller count, and within it every system once, starting one system later
// than the repetition before.
func rounds(reps int, callers []int, systems []string) []Round {
	var out []Round
	for r := range reps {
		for _, c := range callers {
			for i := range systems {
				out = append(out, Round{Rep: r + 1, System: systems[(i+r)%len(systems)], Callers: c})
			}
		}
	}
	return out
}

// Sample is what one round measured.
type Sample struct {
	Round
	Result
	// ServerCPUSeconds is the CPU time of the system's server process in
	// the measured window, AgentCPUSeconds that of zrpc's agent (zero for
	// the others, which have none).
	ServerCPUSeconds, AgentCPUSeconds float64
	// ServerSleeps and AgentSleeps are how many times the threads of the
	// server and of the agent blocked in the kernel in the measured window
	// (see threadSleeps); zero where not counted.
	ServerSleeps, AgentSleeps int64
}

// CallsPerSecond is the round's throughput.
func (s Sample) CallsPerSecond() float64 { return float64(s.Calls) / s.Seconds }

// CPUPerCall is the CPU microseconds per call of server, agent and load
// process together.
func (s Sample) CPUPerCall() float64 {
	return (s.ServerCPUSeconds + s.AgentCPUSeconds + s.CPUSeconds) * 1e6 / float64(s.Calls)
}

// perCall is seconds of CPU in microseconds per call.
func (s Sample) perCall(seconds float64) float64 { return seconds * 1e6 / float64(s.Calls) }

// SleepsPerCall is how many times per call a thread of the server, the
// agent or the load process blocked in the kernel: the hand-offs between
// goroutines that left a thread idle.
func (s Sample) SleepsPerCall() float64 {
	return float64(s.ServerSleeps+s.AgentSleeps+s.Sleeps) / float64(s.Calls)
}

// AllocsPerCall is the load process's allocations per call.
func (s Sample) AllocsPerCall() float64 { return float64(s.Allocs) / float64(s.Calls) }

// system is one system's running server (and zrpc's agent) and the
// address its load process is given.
type system struct {
	server, agent *proc.Process // agent nil but for zrpc
	target        string
}

// cpu returns the CPU time so far of the server and of the agent, in
// seconds.
func (s *system) cpu() (server, agent float64) {
	return cpuSeconds(s.server), cpuSeconds(s.agent)
}

func cpuSeconds(p *proc.Process) float64 {
	if p == nil {
		return 0
	}
	d, err := p.CPUTime()
	if err != nil {
		return 0
	}
	return d.Seconds()
}

// sleeps returns the thread sleeps so far of the server and of the agent.
func (s *system) sleeps() (server, agent int64) {
	return sleepsOf(s.server), sleepsOf(s.agent)
}

func sleepsOf(p *proc.Process) int64 {
	if p == nil {
		return 0
	}
	n, err := threadSleeps(p.Pid())
	if err != nil {
		return 0
	}
	return n
}

func (s *system) stop() error {
	err := s.server.Stop()
	if s.agent != nil {
		err = errors.Join(err, s.agent.Stop())
	}
	return err
}

// Run starts every system's server once, runs the rounds and stops the
// servers. It returns the samples so far with any error.
func Run(ctx context.Context, cfg Config) ([]Sample, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("rpcbench: %w", err)
	}
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	dir := cfg.Dir
	if dir == "" {
		tmp, err := os.MkdirTemp("", "zrpc-rpcbench-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(tmp)
		dir = tmp
	} else if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	systems := map[string]*system{}
	defer func() {
		for _, s := range systems {
			s.stop()
		}
	}()
	for _, name := range cfg.systems() {
		s, err := startSystem(ctx, cfg, dir, name)
		if err != nil {
			return nil, fmt.Errorf("start %s: %w", name, err)
		}
		systems[name] = s
	}
	var samples []Sample
	for i, r := range rounds(cfg.Reps, cfg.Callers, cfg.systems()) {
		s, err := runRound(ctx, cfg, dir, i, r, systems[r.System])
		if err != nil {
			return samples, fmt.Errorf("rep %d, %s, %d callers: %w", r.Rep, r.System, r.Callers, err)
		}
		log.Info("round", "rep", r.Rep, "system", r.System, "callers", r.Callers,
			"calls_per_s", int(s.CallsPerSecond()), "cpu_us_per_call", fmt.Sprintf("%.1f", s.CPUPerCall()),
			"server_us", fmt.Sprintf("%.1f", s.perCall(s.ServerCPUSeconds)), "agent_us", fmt.Sprintf("%.1f", s.perCall(s.AgentCPUSeconds)),
			"load_us", fmt.Sprintf("%.1f", s.perCall(s.CPUSeconds)),
			"allocs_per_call", fmt.Sprintf("%.1f", s.AllocsPerCall()),
			"sleeps_per_call", fmt.Sprintf("%.2f", s.SleepsPerCall()),
			"server_sleeps", fmt.Sprintf("%.2f", float64(s.ServerSleeps)/float64(s.Calls)),
			"agent_sleeps", fmt.Sprintf("%.2f", float64(s.AgentSleeps)/float64(s.Calls)),
			"load_sleeps", fmt.Sprintf("%.2f", float64(s.Sleeps)/float64(s.Calls)), "errors", s.Errors)
		samples = append(samples, s)
	}
	for name, s := range systems {
		delete(systems, name)
		if err := s.stop(); err != nil {
			return samples, err
		}
	}
	return samples, nil
}

func startSystem(ctx context.Context, cfg Config, dir, name string) (*system, error) {
	bins := cfg.Bins
	switch name {
	case Zrpc, ZrpcBase:
		if name == ZrpcBase {
			bins = cfg.Base
		}
		own := filepath.Join(dir, name)
		if err := os.MkdirAll(own, 0o700); err != nil {
			return nil, err
		}
		a, err := zrpcd.StartAgent(ctx, bins.Zrpcd, filepath.Join(own, "agent"))
		if err != nil {
			return nil, err
		}
		e, err := zrpcd.StartEcho(ctx, bins.Echo, own, a.GRPCAddr, EchoService)
		if err != nil {
			a.Proc.Stop()
			return nil, err
		}
		return &system{server: e, agent: a.Proc, target: a.GRPCAddr}, nil
	default:
		ports, err := proc.FreePorts(1)
		if err != nil {
			return nil, err
		}
		addr := "127.0.0.1:" + strconv.Itoa(ports[0])
		p, err := proc.Start(dir, "serve-"+name, bins.Self, "serve", "--system", name, "--listen", addr)
		if err != nil {
			return nil, err
		}
		if err := proc.WaitLog(ctx, p, Listening, zrpcd.ReadyTimeout); err != nil {
			p.Stop()
			return nil, err
		}
		return &system{server: p, target: addr}, nil
	}
}

// roundTimeout bounds a load process beyond its warm-up and duration:
// starting, connecting and reporting.
const roundTimeout = 60 * time.Second

// runRound runs one load process against s and reads the servers' CPU time
// around its measured window.
func runRound(ctx context.Context, cfg Config, dir string, i int, r Round, s *system) (Sample, error) {
	ctx, cancel := context.WithTimeout(ctx, cfg.Warmup+cfg.Duration+roundTimeout)
	defer cancel()
	logPath := filepath.Join(dir, fmt.Sprintf("load-%03d-%s-%d.log", i+1, r.System, r.Callers))
	logf, err := os.Create(logPath)
	if err != nil {
		return Sample{}, err
	}
	defer logf.Close()
	self, system := cfg.Bins.Self, r.System
	if r.System == ZrpcBase {
		self, system = cfg.Base.Self, Zrpc
	}
	args := []string{"load", "--system", system, "--target", s.target,
		"--callers", strconv.Itoa(r.Callers), "--payload", strconv.Itoa(cfg.Payload),
		"--warmup", cfg.Warmup.String(), "--duration", cfg.Duration.String()}
	if r.System == Zrpc && cfg.ZrpcClient != "" {
		args = append(args, "--zrpc-client", cfg.ZrpcClient)
	}
	cmd := proc.Command(self, args...)
	cmd.Stderr = logf
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return Sample{}, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return Sample{}, err
	}
	if err := cmd.Start(); err != nil {
		return Sample{}, fmt.Errorf("start load: %w", err)
	}
	stopped := context.AfterFunc(ctx, func() { cmd.Process.Kill() })
	defer stopped()
	sample, readErr := readRound(stdout, stdin, s)
	stdin.Close()
	io.Copy(io.Discard, stdout)
	waitErr := cmd.Wait()
	if err := ctx.Err(); err != nil {
		return Sample{}, fmt.Errorf("load process: %w (log %s)", err, logPath)
	}
	if err := errors.Join(readErr, waitErr); err != nil {
		b, _ := os.ReadFile(logPath)
		return Sample{}, fmt.Errorf("load process: %w\n%s", err, tail(string(b)))
	}
	sample.Round = r
	if sample.Errors > 0 {
		return sample, fmt.Errorf("%d of %d calls failed, one with: %s", sample.Errors, sample.Errors+sample.Calls, sample.FirstError)
	}
	return sample, nil
}

// readRound waits for the load process's Ready, reads the servers' CPU
// time, lets the process start measuring, and reads its Result and the
// servers' CPU time again.
func readRound(stdout io.Reader, stdin io.Writer, s *system) (Sample, error) {
	lines := bufio.NewScanner(stdout)
	if !lines.Scan() || lines.Text() != Ready {
		return Sample{}, fmt.Errorf("no %q line after the warm-up (got %q)", Ready, lines.Text())
	}
	serverBefore, agentBefore := s.cpu()
	serverSleeps, agentSleeps := s.sleeps()
	if _, err := io.WriteString(stdin, "go\n"); err != nil {
		return Sample{}, err
	}
	if !lines.Scan() {
		return Sample{}, errors.New("no result line")
	}
	serverAfter, agentAfter := s.cpu()
	serverSleepsAfter, agentSleepsAfter := s.sleeps()
	var sample Sample
	if err := json.Unmarshal(lines.Bytes(), &sample.Result); err != nil {
		return Sample{}, fmt.Errorf("result line %q: %w", lines.Text(), err)
	}
	sample.ServerCPUSeconds = serverAfter - serverBefore
	sample.AgentCPUSeconds = agentAfter - agentBefore
	sample.ServerSleeps = serverSleepsAfter - serverSleeps
	sample.AgentSleeps = agentSleepsAfter - agentSleeps
	return sample, nil
}

func tail(s string) string {
	const max = 2000
	if len(s) > max {
		s = s[len(s)-max:]
	}
	return strings.TrimSpace(s)
}
