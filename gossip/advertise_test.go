package gossip

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

// lossyMemberlist stands in for memberlist's UpdateNode and Members: the
// first lose updates are dropped as memberlist drops one that gossip
// about the agent outran (the refutation keeps the old meta, and
// UpdateNode reports a timeout, or nothing with no peer to wait for);
// later ones record the delegate's meta.
type lossyMemberlist struct {
	name     string
	recorded []byte
	next     []byte // what the delegate answers
	lose     int
	timeout  bool // a lost update reports a timeout
	updates  int
	listed   bool
}

func (l *lossyMemberlist) UpdateNode(time.Duration) error {
	l.updates++
	if l.updates <= l.lose {
		if l.timeout {
			return errors.New("timeout waiting for update broadcast")
		}
		return nil
	}
	l.recorded = l.next
	return nil
}

func (l *lossyMemberlist) Members() []*memberlist.Node {
	if !l.listed {
		return []*memberlist.Node{{Name: "peer", Meta: []byte("peer's")}}
	}
	return []*memberlist.Node{{Name: "peer", Meta: []byte("peer's")}, {Name: l.name, Meta: l.recorded}}
}

// An update memberlist dropped is made again, with a new incarnation,
// until memberlist records the meta; what memberlist reported about the
// broadcast of the one recorded is returned.
func TestAdvertiseMetaMakesALostUpdateAgain(t *testing.T) {
	for _, tc := range []struct {
		name    string
		lose    int
		timeout bool
		updates int
		err     string
	}{
		{"recorded at once", 0, false, 1, ""},
		{"lost without a peer to wait for", 1, false, 2, ""},
		{"lost, reported as a timeout", 1, true, 2, ""},
		{"lost twice", 2, true, 3, ""},
		{"lost every time", metaAttempts, true, metaAttempts, "did not record the new meta after 3 attempts (last: timeout waiting for update broadcast)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ml := &lossyMemberlist{name: "a", recorded: []byte("old"), next: []byte("new"), lose: tc.lose, timeout: tc.timeout, listed: true}
			err := advertiseMeta(ml, "a", []byte("new"), time.Second)
			if tc.err == "" && err != nil || tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
				t.Fatalf("advertiseMeta = %v, want error %q", err, tc.err)
			}
			if ml.updates != tc.updates {
				t.Fatalf("UpdateNode called %d times, want %d", ml.updates, tc.updates)
			}
			if tc.err == "" && string(ml.recorded) != "new" {
				t.Fatalf("memberlist records %q, want %q", ml.recorded, "new")
			}
		})
	}
}

// An agent memberlist no longer lists is not re-advertised in a loop: the
// error says it is not listed.
func TestAdvertiseMetaWhenTheAgentIsNotListed(t *testing.T) {
	ml := &lossyMemberlist{name: "a", next: []byte("new"), listed: false}
	if err := advertiseMeta(ml, "a", []byte("new"), time.Second); !errors.Is(err, errNotListed) || ml.updates != 1 {
		t.Fatalf("advertiseMeta = %v after %d updates, want %v after 1", err, ml.updates, errNotListed)
	}
}
