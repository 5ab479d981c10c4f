package gossip

import (
	"errors"
	"strings"
	"testing"

	"github.com/hashicorp/memberlist"
)

func TestMetaRoundTrip(t *testing.T) {
	for _, m := range []Meta{testMeta("a"), {Name: "b"}, {Name: "c<&>\u2028", GRPCAddr: "[::1]:8400", Zone: "é"}, {Name: "d", RaftHello: true}, {Name: "e", ShardsFull: true}, {Name: "f", ShardRoom: 1 << 30, Leaving: true, FSMVersion: 2}, {Name: "g", NonVoter: true}} {
		b, err := m.encode()
		if err != nil {
			t.Fatalf("encode(%+v): %v", m, err)
		}
		got, err := decodeMeta(b)
		if err != nil {
			t.Fatalf("decode(%s): %v", b, err)
		}
		if got != m {
			t.Errorf("round trip of %+v gave %+v", m, got)
		}
	}
}

func TestMetaTooLarge(t *testing.T) {
	big := testMeta("a")
	big.Build = strings.Repeat("x", memberlist.MetaMaxSize)
	cfg := testConfig(t, "a")
	cfg.Meta = big
	if _, err := New(cfg); !errors.Is(err, ErrMetaTooLarge) {
		t.Errorf("New with %d-byte build: %v, want ErrMetaTooLarge", len(big.Build), err)
	}

	// Exactly at the limit is fine, one byte more is not.
	edge := Meta{Name: "a", Build: "x"}
	short, _ := edge.encode()
	edge.Build = strings.Repeat("x", 1+memberlist.MetaMaxSize-len(short))
	if b, err := edge.encode(); err != nil || len(b) != memberlist.MetaMaxSize {
		t.Fatalf("meta of exactly %d bytes: %d bytes, %v", memberlist.MetaMaxSize, len(b), err)
	}
	edge.Build += "x"
	if _, err := edge.encode(); !errors.Is(err, ErrMetaTooLarge) {
		t.Errorf("meta one byte over the limit: %v, want ErrMetaTooLarge", err)
	}

	a := startAgent(t, "a", nil)
	if err := a.UpdateMeta(big); !errors.Is(err, ErrMetaTooLarge) {
		t.Errorf("UpdateMeta with %d-byte build: %v, want ErrMetaTooLarge", len(big.Build), err)
	}
	if m, _ := memberNamed(a.Gossip, "a"); m.Meta != a.meta {
		t.Errorf("a rejected update changed the meta to %+v", m.Meta)
	}
}

func TestDecodeMetaRejectsGarbage(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want string // in the error
	}{
		{"empty", "", "empty"},
		{"not json", "\x00\xff\x17garbage", "decode meta"},
		{"truncated", `{"v":1,"name":"a"`, "decode meta"},
		{"null", "null", "version 0"},
		{"array", `[1,2]`, "decode meta"},
		{"future version", `{"v":2,"name":"a"}`, "version 2"},
		{"no name", `{"v":1}`, "name is empty"},
		{"bad grpc address", `{"v":1,"name":"a","grpc":"nowhere"}`, "grpc address"},
		{"bad raft address", `{"v":1,"name":"a","raft":"nowhere"}`, "raft address"},
		{"wrong type", `{"v":"1","name":"a"}`, "decode meta"},
		{"trailing data", `{"v":1,"name":"a"}x`, "decode meta"},
		{"too long", `{"v":1,"name":"` + strings.Repeat("a", memberlist.MetaMaxSize) + `"}`, "over the limit"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := decodeMeta([]byte(tt.in))
			if err == nil {
				t.Fatalf("decoded %q as %+v", tt.in, m)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not say %q", err, tt.want)
			}
			if m != (Meta{}) {
				t.Errorf("failed decode returned %+v, want an empty Meta", m)
			}
		})
	}
	// Unknown fields are ignored: a newer build may add some.
	if m, err := decodeMeta([]byte(`{"v":1,"name":"a","shiny":true}`)); err != nil || m.Name != "a" {
		t.Errorf("meta with an unknown field: %+v, %v", m, err)
	}
}

func FuzzDecodeMeta(f *testing.F) {
	b, _ := testMeta("a").encode()
	f.Add(b)
	f.Add([]byte(`{"v":1,"name":"\u2028<>&"}`))
	f.Add([]byte(`{"v":1,"name":"a","grpc":"[::1]:80","zone":"\xff"}`))
	f.Add([]byte("\x00\x01garbage"))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodeMeta(b)
		if err != nil {
			if m != (Meta{}) {
				t.Fatalf("failed decode returned %+v", m)
			}
			return
		}
		// What was accepted re-encodes (unless escaping grew it past the
		// limit) and decodes to the same thing.
		enc, err := m.encode()
		if errors.Is(err, ErrMetaTooLarge) {
			return
		}
		if err != nil {
			t.Fatalf("re-encode %+v: %v", m, err)
		}
		m2, err := decodeMeta(enc)
		if err != nil || m2 != m {
			t.Fatalf("round trip of %+v gave %+v, %v", m, m2, err)
		}
	})
}

// TestMetaOfAnOlderAgentReadsWithoutRaftHello: meta as agents from before
// the Raft hello send it (no "rh") decodes with RaftHello false, so that
// their Raft connections are not greeted.
func TestMetaOfAnOlderAgentReadsWithoutRaftHello(t *testing.T) {
	m, err := decodeMeta([]byte(`{"v":1,"name":"old","raft":"10.0.0.1:8401","role":"server","build":"0.0.9"}`))
	if err != nil || m.RaftHello || m.RaftAddr != "10.0.0.1:8401" {
		t.Fatalf("older meta decoded as %+v (%v), want RaftHello false", m, err)
	}
}
