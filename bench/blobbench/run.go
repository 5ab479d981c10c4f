// Package blobbench measures zrpc's blobs from outside and compares them
// with a plain gRPC stream of the same bytes: real zrpcd agents on
// loopback (a fresh cluster per repetition), `zrpcctl blob put` and `blob
// get` as the client, and, in the same run, a plain grpc-go server that
// writes the stream into one file and fsyncs it (put) and streams the file
// back (get), and cp + fsync of the file. Rounds are interleaved: each
// repetition runs every system once, the order rotating from one
// repetition to the next, so a drift of a shared machine touches all
// alike. A zrpc round puts the blob, gets it, kills m agents with SIGKILL
// and gets it again (degraded). Every get's bytes are checked against the
// SHA-256 of what was put; a wrong byte fails the run. It reports MB/s,
// each zrpc operation's ratio to the plain stream within a repetition, and
// the agents' (or the stream server's) CPU seconds per GB, from /proc.
// cmd/zrpcblobbench is its command line.
//
// It measures and prints; it decides nothing from the numbers.
package blobbench

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/zrpcio/zrpc/bench/internal/proc"
)

// The systems a repetition runs: the plain stream, cp + fsync, and zrpc
// at every agent count and block size.
const (
	Stream = "grpc-stream"
	Copy   = "cp+fsync"
	Zrpc   = "zrpc"
)

// The operations a round measures.
const (
	OpPut         = "put"
	OpGet         = "get"
	OpDegradedGet = "degraded-get"
)

// Binaries are the programs the benchmark runs.
type Binaries struct {
	// Zrpcd is the agent, Zrpcctl the client whose blob put and get are
	// measured.
	Zrpcd, Zrpcctl string
	// Self is cmd/zrpcblobbench, run as the plain stream's server
	// ("serve") and client ("put", "get").
	Self string
}

// Config says what to run.
type Config struct {
	Bins Binaries
	// Reps is how many times every system runs.
	Reps int
	// Size is the blob's size in bytes (random data).
	Size int64
	// Agents are the zrpc cluster sizes, BlockSizes the agents'
	// --blob-block-size values (0: the agents' default); zrpc runs at every
	// combination.
	Agents     []int
	BlockSizes []int
	// Dir holds the data, the processes' logs and the agents' data dirs;
	// empty means a temporary directory, removed at the end. The agents'
	// data is removed after each round either way.
	Dir string
	// Log receives progress, one line per measured operation; nil
	// discards.
	Log *slog.Logger
}

// Validate reports every field that cannot work, by name.
func (c Config) Validate() error {
	var errs []error
	for _, b := range []struct{ name, path string }{{"zrpcd", c.Bins.Zrpcd}, {"zrpcctl", c.Bins.Zrpcctl}, {"zrpcblobbench", c.Bins.Self}} {
		if err := proc.CheckBinary(b.path); err != nil {
			errs = append(errs, fmt.Errorf("binary %s: %w", b.name, err))
		}
	}
	if c.Reps < 1 {
		errs = append(errs, fmt.Errorf("reps %d: run at least 1 repetition (3 or more to see the spread)", c.Reps))
	}
	if c.Size < 1 {
		errs = append(errs, fmt.Errorf("size %d: the blob needs at least 1 byte", c.Size))
	}
	if len(c.Agents) == 0 {
		errs = append(errs, errors.New("agents: give at least one cluster size"))
	}
	for _, n := range c.Agents {
		if n < 2 {
			errs = append(errs, fmt.Errorf("agents %d: a cluster that survives a lost agent needs at least 2", n))
		}
	}
	if len(c.BlockSizes) == 0 {
		errs = append(errs, errors.New("block sizes: give at least one (0 for the agents' default)"))
	}
	for _, b := range c.BlockSizes {
		if b < 0 {
			errs = append(errs, fmt.Errorf("block size %d: must not be negative (0: the agents' default)", b))
		}
	}
	return errors.Join(errs...)
}

// System is one of the things a repetition measures: the plain stream, cp
// + fsync, or zrpc on Agents agents with BlockSize blocks.
type System struct {
	Name      string `json:"system"`
	Agents    int    `json:"agents,omitempty"`
	BlockSize int    `json:"block_size,omitempty"`
}

// String names the system in logs and tables.
func (s System) String() string {
	if s.Name != Zrpc {
		return s.Name
	}
	b := "default blocks"
	if s.BlockSize > 0 {
		b = FormatSize(int64(s.BlockSize)) + " blocks"
	}
	return fmt.Sprintf("zrpc, %d agents, %s", s.Agents, b)
}

// Round is one system in one repetition.
type Round struct {
	Rep int `json:"rep"`
	System
}

// systems lists every system of a repetition: the baselines, then zrpc at
// every block size and agent count.
func (c Config) systems() []System {
	out := []System{{Name: Stream}, {Name: Copy}}
	for _, b := range c.BlockSizes {
		for _, n := range c.Agents {
			out = append(out, System{Name: Zrpc, Agents: n, BlockSize: b})
		}
	}
	return out
}

// rounds returns the order of the rounds: each repetition runs every
// system once, starting one system later than the repetition before.
func rounds(reps int, systems []System) []Round {
	var out []Round
	for r := range reps {
		for i := range systems {
			out = append(out, Round{Rep: r + 1, System: systems[(i+r)%len(systems)]})
		}
	}
	return out
}

// Sample is one measured operation of a round.
type Sample struct {
	Round
	Op      string  `json:"op"`
	Bytes   int64   `json:"bytes"`
	Seconds float64 `json:"seconds"`
	// ServerCPUSeconds is the CPU time of the agents (zrpc; for a degraded
	// get the surviving ones) or of the stream server during the
	// operation; zero for cp.
	ServerCPUSeconds float64 `json:"server_cpu_seconds"`
	// ClientCPUSeconds is the client process's CPU time (zrpcctl, the
	// stream client, cp).
	ClientCPUSeconds float64 `json:"client_cpu_seconds"`
	// Killed names the agents killed before a degraded get.
	Killed []string `json:"killed,omitempty"`
	// LoadAverage is the machine's one-minute load average when the round
	// started: how shared the machine was.
	LoadAverage float64 `json:"load_average"`
}

// MBPerSecond is the operation's throughput in 10^6 bytes per second.
func (s Sample) MBPerSecond() float64 { return float64(s.Bytes) / 1e6 / s.Seconds }

// ServerCPUPerGB is the server side's CPU seconds per 10^9 bytes.
func (s Sample) ServerCPUPerGB() float64 { return s.ServerCPUSeconds / (float64(s.Bytes) / 1e9) }

// source is the blob's bytes on disk and their digest.
type source struct {
	path   string
	size   int64
	sha256 [sha256.Size]byte
}

// writeSource writes size random bytes to path, fsynced, and returns their
// digest.
func writeSource(path string, size int64) (source, error) {
	f, err := os.Create(path)
	if err != nil {
		return source{}, fmt.Errorf("write the data: %w", err)
	}
	defer f.Close()
	h := sha256.New()
	var seed [32]byte
	seed[0] = byte(time.Now().UnixNano())
	r := rand.NewChaCha8(seed)
	if _, err := io.Copy(io.MultiWriter(f, h), io.LimitReader(r, size)); err != nil {
		return source{}, fmt.Errorf("write the data: %w", err)
	}
	if err := f.Sync(); err != nil {
		return source{}, fmt.Errorf("write the data: %w", err)
	}
	s := source{path: path, size: size}
	copy(s.sha256[:], h.Sum(nil))
	return s, f.Close()
}

// ErrWrongBytes is what a get that returned other bytes than were put
// fails with.
var ErrWrongBytes = errors.New("the bytes read back differ from those put")

// verify checks that the file at path holds the source's bytes.
func (s source) verify(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("verify: %w", err)
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return fmt.Errorf("verify %s: %w", path, err)
	}
	if n != s.size || [sha256.Size]byte(h.Sum(nil)) != s.sha256 {
		return fmt.Errorf("%s: %w (%d bytes, SHA-256 %x; put %d bytes, SHA-256 %x)", path, ErrWrongBytes, n, h.Sum(nil), s.size, s.sha256)
	}
	return nil
}

// Run writes the data, runs the rounds and calls emit with every sample
// as it is measured. It returns the samples so far with any error.
func Run(ctx context.Context, cfg Config, emit func(Sample) error) ([]Sample, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("blobbench: %w", err)
	}
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	dir := cfg.Dir
	if dir == "" {
		tmp, err := os.MkdirTemp("", "zrpc-blobbench-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(tmp)
		dir = tmp
	} else if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	src, err := writeSource(filepath.Join(dir, "data.bin"), cfg.Size)
	if err != nil {
		return nil, err
	}
	defer os.Remove(src.path)
	var samples []Sample
	for i, r := range rounds(cfg.Reps, cfg.systems()) {
		rdir := filepath.Join(dir, fmt.Sprintf("round-%03d-%s", i+1, slug(r.System)))
		if err := os.MkdirAll(rdir, 0o700); err != nil {
			return samples, err
		}
		load, _ := proc.LoadAverage()
		got, err := runRound(ctx, cfg.Bins, rdir, r, src)
		for _, s := range got {
			s.LoadAverage = load
			log.Info("measured", "rep", s.Rep, "system", s.System.String(), "op", s.Op,
				"mb_per_s", fmt.Sprintf("%.1f", s.MBPerSecond()),
				"server_cpu_s_per_gb", fmt.Sprintf("%.2f", s.ServerCPUPerGB()), "killed", s.Killed, "load", s.LoadAverage)
			samples = append(samples, s)
			if emit != nil {
				if eerr := emit(s); eerr != nil && err == nil {
					err = eerr
				}
			}
		}
		if err != nil {
			return samples, fmt.Errorf("rep %d, %s: %w (logs in %s)", r.Rep, r.System, err, rdir)
		}
	}
	return samples, nil
}

// slug names a system in a directory name.
func slug(s System) string {
	if s.Name != Zrpc {
		return strings.ReplaceAll(s.Name, "+", "-")
	}
	return fmt.Sprintf("zrpc-%d-%s", s.Agents, strconv.Itoa(s.BlockSize))
}

// runRound runs one system's operations in rdir.
func runRound(ctx context.Context, bins Binaries, rdir string, r Round, src source) ([]Sample, error) {
	switch r.Name {
	case Stream:
		return streamRound(ctx, bins, rdir, r, src)
	case Copy:
		return copyRound(ctx, rdir, r, src)
	default:
		return zrpcRound(ctx, bins, rdir, r, src)
	}
}
