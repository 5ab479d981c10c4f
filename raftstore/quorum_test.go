package raftstore

import (
	"testing"
	"time"
)

func TestQuorumCountsReachableVoters(t *testing.T) {
	servers := []Server{{ID: "n1"}, {ID: "n2"}, {ID: "n3"}, {ID: "n4", Suffrage: Nonvoter}, {ID: "n5"}}
	now := time.Now()
	tests := []struct {
		name     string
		down     map[string]Reach
		lost     bool
		describe string
	}{
		{"all alive", nil, false, "4 of 4 voters reachable; a leader needs 3"},
		{"one down", map[string]Reach{"n2": {Status: "failed", Since: now.Add(-90 * time.Second)}},
			false, "3 of 4 voters reachable (n2 failed 1m30s ago); a leader needs 3"},
		{"a nonvoter down does not count", map[string]Reach{"n4": {Status: "failed"}},
			false, "4 of 4 voters reachable; a leader needs 3"},
		{"two down", map[string]Reach{"n2": {Status: "left"}, "n5": {Status: "unknown"}},
			true, "2 of 4 voters reachable (n2 left, n5 unknown); a leader needs 3"},
		{"itself is always reachable", map[string]Reach{"n1": {Status: "failed"}},
			false, "4 of 4 voters reachable; a leader needs 3"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reach := func(id string) Reach {
				if r, ok := tt.down[id]; ok {
					return r
				}
				return Reach{Alive: true}
			}
			q := quorumOf(servers, "n1", reach)
			if q.Lost() != tt.lost || q.describe(now) != tt.describe {
				t.Errorf("quorum lost=%v %q, want lost=%v %q", q.Lost(), q.describe(now), tt.lost, tt.describe)
			}
		})
	}
	if (Quorum{}).Lost() {
		t.Error("no configuration yet counts as a lost quorum")
	}
}
