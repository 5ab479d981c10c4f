// Package security measures what mutual TLS and ACLs cost: it runs one
// zrpcd agent as its own process, plaintext and then with TLS, gossip
// encryption and ACLs, interleaved over repetitions with a fresh agent
// each time, and drives it from this process (registrations through
// package client; echo calls through rpc.Dial to an rpc.Server in a third
// process, cmd/zrpcecho). cmd/zrpcload is its command line.
//
// It measures and prints; it decides nothing from the numbers.
package security

import (
	"context"
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
	Zrpcd, Zrpcctl, Echo string
}

func (b Binaries) validate() error {
	var errs []error
	for _, f := range []struct{ name, path string }{{"zrpcd", b.Zrpcd}, {"zrpcctl", b.Zrpcctl}, {"zrpcecho", b.Echo}} {
		if err := proc.CheckBinary(f.path); err != nil {
			errs = append(errs, fmt.Errorf("binary %s: %w", f.name, err))
		}
	}
	return errors.Join(errs...)
}

// Config says what to run.
type Config struct {
	Bins Binaries
	// Reps is how many times each configuration runs (A/B/A/B...).
	Reps int
	// Duration bounds each load step; MaxOps bounds its calls.
	Duration time.Duration
	MaxOps   int
	// Warmup is unmeasured load that every agent gets before its first
	// registration step (at the most writers) and the echo server before
	// its step; zero skips it.
	Warmup time.Duration
	// Writers are the concurrent registration writers, one step each;
	// Callers the concurrent echo callers.
	Writers []int
	Callers int
	// ProfileDir, when set, receives a CPU profile of the agent during each
	// run's step at the most writers (<rep>-<mode>-agent.pprof).
	ProfileDir string
	// Dir holds the runs' data dirs, certificates and process logs; empty
	// means a temporary directory, removed at the end.
	Dir string
	// Log receives progress; nil discards it.
	Log *slog.Logger
}

// Validate reports every bad field at once.
func (c Config) Validate() error {
	errs := []error{c.Bins.validate()}
	if c.Reps < 1 {
		errs = append(errs, fmt.Errorf("reps %d: want at least 1", c.Reps))
	}
	if c.Duration <= 0 {
		errs = append(errs, fmt.Errorf("duration %s: want a positive duration", c.Duration))
	}
	if c.Warmup < 0 {
		errs = append(errs, fmt.Errorf("warmup %s: must not be negative", c.Warmup))
	}
	if c.MaxOps < 1 {
		errs = append(errs, fmt.Errorf("max ops %d: want at least 1", c.MaxOps))
	}
	if len(c.Writers) == 0 {
		errs = append(errs, errors.New("writers: want at least one count"))
	}
	for _, w := range append(append([]int(nil), c.Writers...), c.Callers) {
		if w < 1 || w > 1024 {
			errs = append(errs, fmt.Errorf("writers or callers %d: want 1 to 1024", w))
		}
	}
	return errors.Join(errs...)
}

// Modes of a run, in the order each repetition runs them.
const (
	Plaintext = "plaintext"
	Secured   = "TLS+ACL"
)

// Sample is one run's metrics by name, in Report.Metrics' order.
type Sample map[string]float64

// Report holds every run's samples.
type Report struct {
	Metrics []string
	Samples map[string][]Sample // by mode
}

// Run runs cfg.Reps repetitions of plaintext then TLS+ACL. Every process
// it starts is stopped before it returns, also on error and when ctx is
// cancelled.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	dir := cfg.Dir
	if dir == "" {
		tmp, err := os.MkdirTemp("", "zrpc-bench-security-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(tmp)
		dir = tmp
	}
	sec, err := newPKI(ctx, cfg.Bins, filepath.Join(dir, "pki"))
	if err != nil {
		return nil, err
	}
	rep := &Report{Metrics: cfg.metrics(), Samples: map[string][]Sample{}}
	for r := 1; r <= cfg.Reps; r++ {
		for _, mode := range []string{Plaintext, Secured} {
			var s *pki
			if mode == Secured {
				s = sec
			}
			log.Info("run", "rep", r, "mode", mode)
			name := fmt.Sprintf("rep%d-%s", r, strings.ReplaceAll(mode, "+", "-"))
			sample, err := cfg.runOne(ctx, filepath.Join(dir, name), name, s, log.With("rep", r, "mode", mode))
			if err != nil {
				return rep, fmt.Errorf("repetition %d, %s: %w", r, mode, err)
			}
			rep.Samples[mode] = append(rep.Samples[mode], sample)
		}
	}
	return rep, nil
}

// A registration step's metrics are named "register <n>w <what>", the
// echo step's "echo <n>c <what>"; each step has a rate, p50, p99 and
// the CPU per call of the loaded process and of the load tool.
func regMetric(w int) func(string) string {
	return func(what string) string { return "register " + strconv.Itoa(w) + "w " + what }
}

func echoMetric(c int) func(string) string {
	return func(what string) string { return "echo " + strconv.Itoa(c) + "c " + what }
}

const (
	regRate, regProc   = "regs/s", "agent"
	echoRate, echoProc = "calls/s", "server"
)

func stepMetrics(metric func(string) string, rate, proc string) []string {
	return []string{metric(rate), metric("p50 ms"), metric("p99 ms"), metric(proc + " us/op"), metric("load us/op")}
}

func (c Config) metrics() []string {
	var ms []string
	for _, w := range c.Writers {
		ms = append(ms, stepMetrics(regMetric(w), regRate, regProc)...)
	}
	return append(ms, stepMetrics(echoMetric(c.Callers), echoRate, echoProc)...)
}

// record adds st's metrics to sample, in stepMetrics' order, and logs them.
func (st step) record(sample Sample, metric func(string) string, rate, proc string, log *slog.Logger) {
	names := stepMetrics(metric, rate, proc)
	values := []float64{st.perSecond(), st.quantile(0.50), st.quantile(0.99), st.cpuPerOp[proc], st.cpuPerOp["load"]}
	for i, n := range names {
		sample[n] = values[i]
	}
	log.Info(metric("step"), "ops", st.ops, "errors", st.errors, "per_s", int(st.perSecond()),
		"p50_ms", st.quantile(0.5), "p99_ms", st.quantile(0.99), "cpu_us_per_op", st.cpuPerOp)
}

// runOne starts a fresh agent (secured when sec is set) and the echo
// server in dir, runs every step against them and stops them.
func (c Config) runOne(ctx context.Context, dir, name string, sec *pki, log *slog.Logger) (Sample, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	a, err := startAgent(ctx, c.Bins, dir, sec)
	if err != nil {
		return nil, err
	}
	defer a.Proc.Stop()
	creds := credentials{pki: sec}
	var mgmtToken string
	if sec != nil {
		if err := checkEnforced(ctx, a.GRPCAddr, sec); err != nil {
			return nil, err
		}
		if creds.tokenFile, mgmtToken, err = sec.bootstrapACL(ctx, c.Bins, a.GRPCAddr, dir); err != nil {
			return nil, err
		}
	}
	// Both modes settle the same way before the clock starts: the agent's
	// first seconds (its own registration, the first Raft log segments)
	// are not what is measured.
	if c.Warmup > 0 {
		w := slices.Max(c.Writers)
		if _, err := registerLoad(ctx, "warmup", a.GRPCAddr, creds, w, c.Warmup, c.MaxOps, nil); err != nil {
			return nil, fmt.Errorf("warm-up: %w", err)
		}
	}
	sample := Sample{}
	for _, w := range c.Writers {
		var profiled chan error
		if c.ProfileDir != "" && w == slices.Max(c.Writers) {
			profiled = make(chan error, 1)
			path := filepath.Join(c.ProfileDir, name+"-agent.pprof")
			go func() { profiled <- cpuProfile(ctx, a.HTTPAddr, mgmtToken, path, max(1, int(c.Duration.Seconds())-1)) }()
		}
		st, err := registerLoad(ctx, fmt.Sprintf("w%d", w), a.GRPCAddr, creds, w, c.Duration, c.MaxOps, cpuMeter{regProc: a.Proc})
		if profiled != nil {
			if perr := <-profiled; perr != nil && err == nil {
				err = perr
			}
		}
		if err != nil {
			return nil, fmt.Errorf("register, %d writers: %w", w, err)
		}
		st.record(sample, regMetric(w), regRate, regProc, log)
	}
	e, err := startEcho(ctx, c.Bins, dir, a.GRPCAddr, creds)
	if err != nil {
		return nil, err
	}
	defer e.Stop()
	st, err := echoLoad(ctx, a.GRPCAddr, creds, c.Callers, c.Warmup, c.Duration, c.MaxOps, cpuMeter{echoProc: e})
	if err != nil {
		return nil, fmt.Errorf("echo, %d callers: %w", c.Callers, err)
	}
	st.record(sample, echoMetric(c.Callers), echoRate, echoProc, log)
	if err := e.Stop(); err != nil {
		return nil, err
	}
	return sample, a.Proc.Stop()
}

// startEcho starts the echo server, registered through the agent at addr,
// and waits until it says it is registered.
func startEcho(ctx context.Context, bins Binaries, dir, addr string, creds credentials) (*proc.Process, error) {
	var args []string
	if creds.pki != nil {
		args = append(args, "--tls-ca", creds.pki.ca, "--tls-cert", creds.pki.echoCert, "--tls-key", creds.pki.echoKey,
			"--token-file", creds.tokenFile)
	}
	return zrpcd.StartEcho(ctx, bins.Echo, dir, addr, echoService, args...)
}

// WriteTable writes, for each metric, the median and min-max of each mode
// and the ratio of the medians (TLS+ACL / plaintext).
func (r *Report) WriteTable(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "%-26s  %-28s  %-28s  %s\n", "metric", Plaintext+" median (min-max)", Secured+" median (min-max)", "ratio")
	for _, m := range r.Metrics {
		pm, pLo, pHi := summarize(r.Samples[Plaintext], m)
		sm, sLo, sHi := summarize(r.Samples[Secured], m)
		ratio := "-"
		if pm > 0 {
			ratio = fmt.Sprintf("%.2fx", sm/pm)
		}
		fmt.Fprintf(&b, "%-26s  %-28s  %-28s  %s\n", m, cell(m, pm, pLo, pHi), cell(m, sm, sLo, sHi), ratio)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func cell(metric string, med, lo, hi float64) string {
	f := "%.0f"
	if strings.HasSuffix(metric, "ms") {
		f = "%.2f"
	}
	return fmt.Sprintf(f+" ("+f+"-"+f+")", med, lo, hi)
}

// summarize returns the median, min and max of metric over samples.
func summarize(samples []Sample, metric string) (med, lo, hi float64) {
	var v []float64
	for _, s := range samples {
		v = append(v, s[metric])
	}
	if len(v) == 0 {
		return 0, 0, 0
	}
	slices.Sort(v)
	n := len(v)
	med = v[n/2]
	if n%2 == 0 {
		med = (v[n/2-1] + v[n/2]) / 2
	}
	return med, v[0], v[n-1]
}
