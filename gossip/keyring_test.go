package gossip

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func newKey(t *testing.T) string {
	t.Helper()
	k, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// encrypted configures an agent with key as its encrypt setting and a
// keyring file at file ("" for none).
func encrypted(t *testing.T, key, file string) func(*Config) {
	t.Helper()
	k, err := ParseKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return func(c *Config) {
		c.EncryptKey = k
		c.KeyringFile = file
	}
}

// startEncryptedCluster starts n agents ("a", "b", ...) sharing key, each
// with its own keyring file, joined through the first.
func startEncryptedCluster(t *testing.T, n int, key string) []*agent {
	t.Helper()
	agents := make([]*agent, n)
	for i := range agents {
		name := string(rune('a' + i))
		agents[i] = startAgent(t, name, encrypted(t, key, filepath.Join(t.TempDir(), KeyringFileName)))
	}
	for _, a := range agents[1:] {
		if _, err := a.Join(context.Background(), []string{agents[0].LocalAddr()}); err != nil {
			t.Fatalf("%s joins: %v", a.name, err)
		}
	}
	for _, a := range agents {
		waitFor(t, a.name+" to see all members alive", func() bool {
			return countStatus(a.Members(), StatusAlive) == n
		})
	}
	return agents
}

// gossipStillFlows changes a's meta and waits until every agent sees it:
// gossip among them is understood both ways.
func gossipStillFlows(t *testing.T, agents []*agent, build string) {
	t.Helper()
	a := agents[0]
	m := a.meta
	m.Build = build
	if err := a.UpdateMeta(m); err != nil {
		t.Fatalf("UpdateMeta: %v", err)
	}
	for _, b := range agents[1:] {
		waitFor(t, b.name+" to see a's meta "+build, func() bool {
			got, ok := memberNamed(b.Gossip, a.name)
			return ok && got.Meta.Build == build
		})
	}
}

func TestKeyringRotationKeepsMembersAliveAndLocksOutTheOldKey(t *testing.T) {
	oldKey, newKey := newKey(t), newKey(t)
	agents := startEncryptedCluster(t, 3, oldKey)

	steps := []struct {
		name string
		op   func(*Gossip, string) error
		key  string
	}{
		{"install", (*Gossip).InstallKey, newKey},
		{"use", (*Gossip).UseKey, newKey},
		{"remove", (*Gossip).RemoveKey, oldKey},
	}
	for _, step := range steps {
		for _, a := range agents {
			if err := step.op(a.Gossip, step.key); err != nil {
				t.Fatalf("%s on %s: %v", step.name, a.name, err)
			}
		}
		gossipStillFlows(t, agents, "after-"+step.name)
	}

	for _, a := range agents {
		primary, all := a.Keys()
		if primary != newKey || !slices.Equal(all, []string{newKey}) {
			t.Errorf("%s has primary %s and keys %v, want only the new key %s",
				a.name, KeyFingerprint(primary), fingerprints(all), KeyFingerprint(newKey))
		}
		for _, b := range agents {
			if b != a && a.rec.has(EventFailed, b.name) {
				t.Errorf("%s saw %s fail during the rotation", a.name, b.name)
			}
		}
	}

	stale := startAgent(t, "s", encrypted(t, oldKey, ""))
	if n, err := stale.Join(context.Background(), []string{agents[0].LocalAddr()}); err == nil {
		t.Fatalf("an agent with only the removed key joined (%d answered)", n)
	}
	fresh := startAgent(t, "f", encrypted(t, newKey, ""))
	if _, err := fresh.Join(context.Background(), []string{agents[0].LocalAddr()}); err != nil {
		t.Fatalf("an agent with the new key cannot join: %v", err)
	}
	for _, a := range agents {
		if _, ok := memberNamed(a.Gossip, "s"); ok {
			t.Errorf("%s lists the agent that has only the removed key", a.name)
		}
	}
}

func fingerprints(keys []string) []string {
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i] = KeyFingerprint(k)
	}
	return out
}

func TestKeyringSurvivesRestartAndWinsOverEncryptSetting(t *testing.T) {
	oldKey, newKey := newKey(t), newKey(t)
	file := filepath.Join(t.TempDir(), KeyringFileName)

	g, err := New(testConfig(t, "a"))
	if err != nil {
		t.Fatal(err)
	}
	g.cfg.EncryptKey, _ = ParseKey(oldKey)
	g.cfg.KeyringFile = file
	if err := g.Start(); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(file); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("keyring file after Start with the encrypt setting: %v, %v; want mode 0600", fi, err)
	}
	for _, op := range []func(string) error{g.InstallKey, g.UseKey} {
		if err := op(newKey); err != nil {
			t.Fatal(err)
		}
	}
	g.Close()

	// Started again with the old key as its setting: the file wins.
	a := startAgent(t, "a", encrypted(t, oldKey, file))
	primary, all := a.Keys()
	if primary != newKey || !slices.Equal(all, []string{newKey, oldKey}) {
		t.Fatalf("after restart: primary %s, keys %v; want primary %s, keys [new old]",
			KeyFingerprint(primary), fingerprints(all), KeyFingerprint(newKey))
	}
	if fi, err := os.Stat(file); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("keyring file: %v, %v; want mode 0600", fi, err)
	}
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), newKey) || !strings.Contains(string(b), oldKey) {
		t.Fatalf("keyring file does not hold both keys:\n%s", b)
	}

	// A file holding a keyring starts an agent whose setting has no key.
	c := startAgent(t, "c", func(c *Config) { c.KeyringFile = file })
	if primary, _ := c.Keys(); primary != newKey {
		t.Fatalf("agent without an encrypt setting but with the keyring file: primary %s, want %s",
			KeyFingerprint(primary), KeyFingerprint(newKey))
	}
}

func TestKeyringCorruptFileFailsStartNamingIt(t *testing.T) {
	good, other := newKey(t), newKey(t)
	tests := []struct {
		name, content, want string
	}{
		{"empty", "", "corrupt"},
		{"not json", "not a keyring", "corrupt"},
		{"no keys", `{"primary":"` + good + `","keys":[]}`, "holds no keys"},
		{"bad key", `{"primary":"` + good + `","keys":["` + good + `","c2hvcnQ="]}`, "keys[1]: encryption key is 5 bytes long"},
		{"bad primary", `{"primary":"!!","keys":["` + good + `"]}`, "primary: encryption key is not valid base64"},
		{"primary not a key", `{"primary":"` + other + `","keys":["` + good + `"]}`, "primary key is not among its keys"},
		{"unknown field", `{"primary":"` + good + `","keys":["` + good + `"],"extra":1}`, "corrupt"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			file := filepath.Join(t.TempDir(), KeyringFileName)
			if err := os.WriteFile(file, []byte(tt.content), 0o600); err != nil {
				t.Fatal(err)
			}
			cfg := testConfig(t, "a")
			cfg.EncryptKey, _ = ParseKey(good)
			cfg.KeyringFile = file
			g, err := New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { g.Close() })
			err = g.Start()
			if err == nil || !strings.Contains(err.Error(), file) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Start with a keyring file holding %q: %v; want an error naming %s and saying %q", tt.content, err, file, tt.want)
			}
			if b, _ := os.ReadFile(file); string(b) != tt.content {
				t.Errorf("the corrupt keyring file was rewritten:\n%s", b)
			}
		})
	}
}

func TestKeyringRefusesBadOperationsAndKeepsItsKeys(t *testing.T) {
	primary, installed := newKey(t), newKey(t)
	file := filepath.Join(t.TempDir(), KeyringFileName)
	a := startAgent(t, "a", encrypted(t, primary, file))
	if err := a.InstallKey(installed); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(file)

	tests := []struct {
		name   string
		op     func(string) error
		key    string
		want   string
		wantIs error
	}{
		{"install empty", a.InstallKey, "", "empty", nil},
		{"install not base64", a.InstallKey, "not base64!", "not valid base64", nil},
		{"install too short", a.InstallKey, "c2hvcnQ=", "5 bytes long", nil},
		{"use not installed", a.UseKey, newKey(t), "not installed", ErrKeyNotInstalled},
		{"use bad", a.UseKey, "%%", "not valid base64", nil},
		{"remove primary", a.RemoveKey, primary, "primary", ErrRemovePrimary},
		{"remove bad", a.RemoveKey, "", "empty", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.op(tt.key)
			if err == nil || !strings.Contains(err.Error(), tt.want) || (tt.wantIs != nil && !errors.Is(err, tt.wantIs)) {
				t.Fatalf("error %v, want one saying %q", err, tt.want)
			}
			if strings.Contains(err.Error(), primary) || strings.Contains(err.Error(), installed) {
				t.Errorf("error %q holds a whole key", err)
			}
			p, all := a.Keys()
			if p != primary || !slices.Equal(all, []string{primary, installed}) {
				t.Errorf("keyring changed: primary %s, keys %v", KeyFingerprint(p), fingerprints(all))
			}
			if after, _ := os.ReadFile(file); string(after) != string(before) {
				t.Errorf("keyring file changed:\n%s", after)
			}
		})
	}

	// Repeating a done step is harmless, so a rotation can be retried.
	for _, op := range []func(string) error{a.InstallKey, a.UseKey} {
		if err := op(primary); err != nil {
			t.Errorf("repeat with the primary key: %v", err)
		}
	}
	if err := a.RemoveKey(newKey(t)); err != nil {
		t.Errorf("remove a key that is not installed: %v", err)
	}
}

func TestKeyringFailedWriteChangesNothing(t *testing.T) {
	primary, next := newKey(t), newKey(t)
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "gone"), 0o700); err != nil {
		t.Fatal(err)
	}
	a := startAgent(t, "a", encrypted(t, primary, filepath.Join(dir, "gone", KeyringFileName)))
	// The file's directory vanishes after Start wrote the file.
	if err := os.RemoveAll(filepath.Join(dir, "gone")); err != nil {
		t.Fatal(err)
	}
	if err := a.InstallKey(next); err == nil || !strings.Contains(err.Error(), "keyring file") {
		t.Fatalf("install with the keyring file's directory gone: %v, want an error about the keyring file", err)
	}
	if p, all := a.Keys(); p != primary || !slices.Equal(all, []string{primary}) {
		t.Fatalf("keyring changed although its file was not written: primary %s, keys %v", KeyFingerprint(p), fingerprints(all))
	}
}

func TestKeyringOfUnencryptedGossip(t *testing.T) {
	g, err := New(testConfig(t, "x"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Close() })
	key := newKey(t)
	if err := g.InstallKey(key); !errors.Is(err, ErrNotStarted) {
		t.Fatalf("install before Start: %v, want ErrNotStarted", err)
	}
	if err := g.Start(); err != nil {
		t.Fatal(err)
	}
	if p, all := g.Keys(); p != "" || len(all) != 0 {
		t.Fatalf("unencrypted gossip lists keys %s %v", p, all)
	}
	for name, op := range map[string]func(string) error{"install": g.InstallKey, "use": g.UseKey, "remove": g.RemoveKey} {
		err := op(key)
		if !errors.Is(err, ErrNotEncrypted) || !strings.Contains(err.Error(), "encryption from the start") {
			t.Errorf("%s on unencrypted gossip: %v, want ErrNotEncrypted saying why", name, err)
		}
	}
}
