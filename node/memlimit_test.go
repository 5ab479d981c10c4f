package node

import (
	"errors"
	"math"
	"os"
	"testing"
)

// The soft memory limit comes from memory_limit when set, else from
// GOMEMLIMIT, else from 3/4 of the cgroup's memory limit (v2, then v1),
// else there is none; -1 turns it off whatever the environment says.
func TestMemoryLimitComesFromTheSettingTheEnvironmentOrTheCgroup(t *testing.T) {
	const gib = 1 << 30
	files := func(m map[string]string) func(string) ([]byte, error) {
		return func(name string) ([]byte, error) {
			if v, ok := m[name]; ok {
				return []byte(v), nil
			}
			return nil, os.ErrNotExist
		}
	}
	env := func(m map[string]string) func(string) (string, bool) {
		return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
	}
	v2, v1 := memoryLimitFiles[0], memoryLimitFiles[1]
	for _, tc := range []struct {
		name      string
		setting   int64
		env       map[string]string
		files     map[string]string
		wantFrom  string
		wantLimit int64 // 0: not checked (GOMEMLIMIT keeps the runtime's)
	}{
		{"setting", 3 * gib, map[string]string{"GOMEMLIMIT": "1GiB"}, map[string]string{v2: "4294967296\n"}, "memory_limit", 3 * gib},
		{"off", -1, map[string]string{"GOMEMLIMIT": "1GiB"}, map[string]string{v2: "4294967296\n"}, "none", math.MaxInt64},
		{"GOMEMLIMIT", 0, map[string]string{"GOMEMLIMIT": "1GiB"}, map[string]string{v2: "4294967296\n"}, "GOMEMLIMIT", 0},
		{"cgroup v2", 0, nil, map[string]string{v2: "4294967296\n"}, "cgroup", 3 * gib},
		{"cgroup v2 without a limit", 0, nil, map[string]string{v2: "max\n"}, "none", math.MaxInt64},
		{"cgroup v1", 0, nil, map[string]string{v1: "2147483648\n"}, "cgroup", 3 * gib / 2},
		{"cgroup v1 without a limit", 0, nil, map[string]string{v1: "9223372036854771712\n"}, "none", math.MaxInt64},
		{"tiny cgroup", 0, nil, map[string]string{v2: "1048576"}, "cgroup", minMemoryLimit},
		{"no cgroup", 0, nil, nil, "none", math.MaxInt64},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := Default()
			c.MemoryLimit = tc.setting
			limit, from := c.ResolveMemoryLimit(env(tc.env), files(tc.files))
			if from != tc.wantFrom || (tc.wantLimit != 0 && limit != tc.wantLimit) {
				t.Errorf("limit %d from %s, want %d from %s", limit, from, tc.wantLimit, tc.wantFrom)
			}
		})
	}
}

// An unreadable cgroup file is no limit, not an error.
func TestMemoryLimitIgnoresAnUnreadableCgroup(t *testing.T) {
	c := Default()
	limit, from := c.ResolveMemoryLimit(func(string) (string, bool) { return "", false },
		func(string) ([]byte, error) { return nil, errors.New("permission denied") })
	if limit != math.MaxInt64 || from != "none" {
		t.Errorf("limit %d from %s, want none", limit, from)
	}
}
