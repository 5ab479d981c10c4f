package node

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/zrpcio/zrpc/gossip"
)

// TestDebugConfigRedactsSecrets: /debug/zrpc/config lists every setting
// with the values of secret ones replaced.
func TestDebugConfigRedactsSecrets(t *testing.T) {
	key, err := gossip.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(t)
	cfg.EncryptKey = key
	cfg.Zone = "z9"
	n := startNode(t, cfg)
	body := httpGet(t, n, "/debug/zrpc/config")
	if strings.Contains(body, key) {
		t.Fatalf("/debug/zrpc/config shows the gossip key:\n%s", body)
	}
	var got map[string]string
	if err := json.Unmarshal([]byte(body), &got); err != nil {
		t.Fatalf("/debug/zrpc/config is not a JSON object: %v\n%s", err, body)
	}
	if got["encrypt"] != redacted || got["zone"] != "z9" || got["cluster_token"] != "" || len(got) != len(Settings())+1 {
		t.Fatalf("/debug/zrpc/config: encrypt %q zone %q cluster_token %q, %d keys; want REDACTED, z9, empty, %d",
			got["encrypt"], got["zone"], got["cluster_token"], len(got), len(Settings())+1)
	}
}

// TestLogRingKeepsRecentLines: the agent's recent log lines are served at
// /debug/zrpc/logs, at most logRingLines of them, newest last, also
// when the agent's own logger discards them.
func TestLogRingKeepsRecentLines(t *testing.T) {
	n, err := New(testConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	for i := range logRingLines + 10 {
		n.log.Info("line", "i", i)
	}
	n.log.Debug("not kept: below INFO and the logger discards it")
	n.log.With("component", "x").WithGroup("g").Warn("grouped", "k", "v")
	r := n.logs
	r.mu.Lock()
	lines := len(r.lines)
	first, last := string(r.lines[0]), string(r.lines[len(r.lines)-1])
	r.mu.Unlock()
	if lines != logRingLines || !strings.Contains(first, fmt.Sprintf("i=%d", 11)) || !strings.Contains(last, "component=x g.k=v") {
		t.Fatalf("ring: %d lines, first %q, last %q; want %d, from i=11 to the grouped line", lines, first, last, logRingLines)
	}
	big := strings.Repeat("x", 4096)
	for range logRingBytes / 4096 * 2 {
		n.log.Info(big)
	}
	r.mu.Lock()
	total, counted := 0, r.bytes
	for _, l := range r.lines {
		total += len(l)
	}
	r.mu.Unlock()
	if total > logRingBytes || total != counted {
		t.Fatalf("ring holds %d bytes (counted %d), over %d", total, counted, logRingBytes)
	}

	started := startNode(t, testConfig(t), WithLogger(slog.New(slog.DiscardHandler)))
	if body := httpGet(t, started, "/debug/zrpc/logs"); !strings.Contains(body, "agent started") {
		t.Fatalf("/debug/zrpc/logs lacks the start line:\n%s", body)
	}
}
