package node

import (
	"fmt"
	"math"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
)

// minMemoryLimit is the smallest memory_limit accepted: an agent's heap
// alone is tens of MiB, and a limit below it keeps the collector running.
const minMemoryLimit = 64 << 20

// cgroupShare is the part of a cgroup's memory limit an automatic limit
// takes: the rest is for what the Go heap does not count (goroutine
// stacks, the runtime's own structures, raft-wal's mapped segments and the
// page cache the cgroup charges), so that the collector works harder well
// before the kernel kills the agent.
const cgroupShare = 0.75

// memoryLimitFiles are where cgroup v2 and v1 publish the memory limit.
var memoryLimitFiles = []string{
	"/sys/fs/cgroup/memory.max",
	"/sys/fs/cgroup/memory/memory.limit_in_bytes",
}

// ResolveMemoryLimit is the soft memory limit memory_limit asks for, and where it
// came from ("memory_limit", "GOMEMLIMIT", "cgroup" or "none"); limit is
// math.MaxInt64 for none. env reads the environment and readFile the
// cgroup files (os.LookupEnv and os.ReadFile outside tests).
//
// A registry's memory is mostly its instances; without a limit the
// collector lets the heap grow to twice what is live before it collects
// (GOGC=100), and what it frees the process keeps for a while. Under a
// limit it collects sooner as the heap nears it, and returns freed memory
// to the system to stay under it. The limit is soft: a heap that is live
// beyond it still grows (the collector then uses at most half the CPU), so
// a low limit slows the agent, never fails it.
func (c *Config) ResolveMemoryLimit(env func(string) (string, bool), readFile func(string) ([]byte, error)) (limit int64, from string) {
	switch {
	case c.MemoryLimit > 0:
		return c.MemoryLimit, "memory_limit"
	case c.MemoryLimit < 0:
		return math.MaxInt64, "none"
	}
	if v, ok := env("GOMEMLIMIT"); ok && v != "" {
		// The runtime read it at start; keep what it set.
		return debug.SetMemoryLimit(-1), "GOMEMLIMIT"
	}
	for _, f := range memoryLimitFiles {
		b, err := readFile(f)
		if err != nil {
			continue
		}
		v := strings.TrimSpace(string(b))
		n, err := strconv.ParseInt(v, 10, 64)
		// "max" (v2), or v1's page-rounded MaxInt64: no limit.
		if err != nil || n <= 0 || n >= math.MaxInt64/2 {
			continue
		}
		return max(int64(float64(n)*cgroupShare), minMemoryLimit), "cgroup"
	}
	return math.MaxInt64, "none"
}

// ApplyMemoryLimit sets the process's soft memory limit as cfg's
// memory_limit says (see Config.ResolveMemoryLimit) and describes it for the
// agent's start-up log. It changes the whole process, so the agent's
// binary calls it once; agents started in a test process leave it alone.
func ApplyMemoryLimit(cfg Config) string {
	limit, from := cfg.ResolveMemoryLimit(os.LookupEnv, os.ReadFile)
	debug.SetMemoryLimit(limit)
	if limit == math.MaxInt64 {
		return "none"
	}
	return fmt.Sprintf("%d MiB (%s)", limit>>20, from)
}
