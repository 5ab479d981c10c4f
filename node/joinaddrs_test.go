package node

import (
	"slices"
	"testing"
)

// TestJoinAddrsListsEachAddressOnce: an agent restarted with --join and a
// peers file naming the same agents tries (and logs) each address once,
// the configured ones first.
func TestJoinAddrsListsEachAddressOnce(t *testing.T) {
	for _, c := range []struct {
		join, saved, want []string
	}{
		{[]string{"a:1", "b:1"}, []string{"a:1", "b:1"}, []string{"a:1", "b:1"}},
		{[]string{"a:1"}, []string{"c:1", "a:1"}, []string{"a:1", "c:1"}},
		{[]string{"a:1", "a:1"}, nil, []string{"a:1"}},
		{nil, []string{"c:1"}, []string{"c:1"}},
		{nil, nil, nil},
	} {
		if got := joinAddrs(c.join, c.saved); !slices.Equal(got, c.want) {
			t.Errorf("joinAddrs(%v, %v) = %v, want %v", c.join, c.saved, got, c.want)
		}
	}
}
