package deploy

import (
	"errors"
	"io/fs"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/zrpcio/zrpc/node"
)

// heapPerRegistryByte is the agent's heap per byte max_registry_bytes
// counts, with room to spare: the registry's instances and indexes hold
// about one byte of live heap per byte counted, whatever the instances'
// size and number per service (the count adds a fixed cost per instance
// and per service; raftstore BenchmarkFSMHeapPerInstance), and the
// collector lets the heap grow to twice the live bytes between cycles.
// The watch ring and queues are counted apart below.
const heapPerRegistryByte = 4

// agentBaseHeap is what an agent's heap holds besides its registry and
// watch queues (Raft, gossip, gRPC, blob buffers), with room to spare.
const agentBaseHeap = 64 << 20

// TestAgentMemoryHoldsTheRegistry: every agent holds the whole registry,
// so the registry the cluster accepts (max_registry_bytes, applied by
// the leader to every registration) and an agent's watch queues and ring
// must fit in the soft memory limit the agent takes from its container's
// memory limit (or GOMEMLIMIT, or memory_limit, which must stay below
// the container's). Otherwise registrations grow every agent into the
// kernel's OOM kill, and every restart replays the same log into the same
// kill.
func TestAgentMemoryHoldsTheRegistry(t *testing.T) {
	objs := decodeManifests(t)
	sts := find[*appsv1.StatefulSet](t, objs, "zrpc")
	cluster := agentConfig(t, zrpcd(t, sts.Spec.Template))
	if cluster.MaxRegistryBytes <= 0 {
		t.Fatalf("StatefulSet zrpc: max_registry_bytes %d: set a bound, or the registry grows past any memory limit", cluster.MaxRegistryBytes)
	}
	for _, w := range workloads(objs) {
		if w.pod.Labels["app.kubernetes.io/name"] != "zrpc" {
			continue
		}
		c := zrpcd(t, *w.pod)
		cfg := agentConfig(t, c)
		if cfg.MaxRegistryBytes != cluster.MaxRegistryBytes {
			// Any agent may come to lead (a node agent is promoted when a
			// voter is reaped), and the leader's bound is the cluster's.
			t.Errorf("%s: max_registry_bytes %d, but the StatefulSet's is %d: give every agent the same", w, cfg.MaxRegistryBytes, cluster.MaxRegistryBytes)
		}
		if cfg.WatchQueueBytes <= 0 {
			t.Errorf("%s: watch_queue_bytes %d: set a bound, or slow watchers grow the agent past any memory limit", w, cfg.WatchQueueBytes)
			continue
		}
		soft := softMemoryLimit(t, w, c, cfg)
		need := heapPerRegistryByte*cluster.MaxRegistryBytes + cfg.WatchQueueBytes + int64(cfg.WatchRingBytes) + agentBaseHeap
		if soft < need {
			t.Errorf("%s: soft memory limit %d MiB, but a full registry (max_registry_bytes %d MiB, about %d bytes of heap each) with full watch queues (%d MiB) and ring (%d MiB) needs about %d MiB: raise resources.limits.memory or lower those bounds",
				w, soft>>20, cluster.MaxRegistryBytes>>20, heapPerRegistryByte, cfg.WatchQueueBytes>>20, cfg.WatchRingBytes>>20, need>>20)
		}
	}
}

// agentConfig is the configuration zrpcd builds for container c.
func agentConfig(t *testing.T, c corev1.Container) node.Config {
	t.Helper()
	cfg := node.Default()
	for k, v := range agentSettings(t, c) {
		if err := cfg.Set(k, v); err != nil {
			t.Fatalf("container %s: %s=%q: %v", c.Name, k, v, err)
		}
	}
	return cfg
}

// softMemoryLimit is the soft memory limit zrpcd takes in container c, as
// node.Config.ResolveMemoryLimit finds it with c's environment and memory
// limit as its cgroup's. It fails the test for no container limit, and
// for a GOMEMLIMIT or memory_limit at or above it.
func softMemoryLimit(t *testing.T, w workload, c corev1.Container, cfg node.Config) int64 {
	t.Helper()
	hard := c.Resources.Limits.Memory().Value()
	if hard <= 0 {
		t.Fatalf("%s: no memory limit", w)
	}
	env := expandedEnv(t, c)
	if v, ok := env["GOMEMLIMIT"]; ok && cfg.MemoryLimit == 0 {
		limit, err := parseGoMemLimit(v)
		if err != nil {
			t.Fatalf("%s: GOMEMLIMIT %q: %v", w, v, err)
		}
		if limit >= hard {
			t.Errorf("%s: GOMEMLIMIT %q is not below the container's memory limit (%d bytes): the kernel kills the agent before the collector works", w, v, hard)
		}
		return limit
	}
	cgroup := func(path string) ([]byte, error) {
		if path == "/sys/fs/cgroup/memory.max" {
			return []byte(strconv.FormatInt(hard, 10) + "\n"), nil
		}
		return nil, fs.ErrNotExist
	}
	limit, from := cfg.ResolveMemoryLimit(func(string) (string, bool) { return "", false }, cgroup)
	if from == "none" {
		t.Errorf("%s: memory_limit -1 turns the soft memory limit off", w)
	}
	if limit >= hard {
		t.Errorf("%s: memory_limit %d is not below the container's memory limit (%d bytes): the kernel kills the agent before the collector works", w, limit, hard)
	}
	return limit
}

// parseGoMemLimit parses GOMEMLIMIT's form: a number of bytes with an
// optional unit B, KiB, MiB, GiB or TiB.
func parseGoMemLimit(s string) (int64, error) {
	units := []struct {
		suffix string
		shift  uint
	}{{"TiB", 40}, {"GiB", 30}, {"MiB", 20}, {"KiB", 10}, {"B", 0}}
	shift := uint(0)
	for _, u := range units {
		if num, ok := strings.CutSuffix(s, u.suffix); ok {
			s, shift = num, u.shift
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 {
		return 0, errors.New("want a positive number of bytes, with an optional unit B, KiB, MiB, GiB or TiB")
	}
	return n << shift, nil
}
