package node

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/zrpcio/zrpc/gossip"
)

func TestRedactArgsHidesSecretFlagValues(t *testing.T) {
	tests := []struct{ in, want []string }{
		{[]string{"zrpcd", "agent", "--encrypt", "S1", "--name", "n1"}, []string{"zrpcd", "agent", "--encrypt", "REDACTED", "--name", "n1"}},
		{[]string{"zrpcd", "agent", "--encrypt=S2"}, []string{"zrpcd", "agent", "--encrypt=REDACTED"}},
		{[]string{"zrpcd", "agent", "-encrypt", "S3"}, []string{"zrpcd", "agent", "-encrypt", "REDACTED"}},
		{[]string{"zrpcd", "agent", "-encrypt=S4", "--zone", "z"}, []string{"zrpcd", "agent", "-encrypt=REDACTED", "--zone", "z"}},
		{[]string{"zrpcd", "agent", "--encrypt-file", "/k", "--encrypt-file=/k"}, []string{"zrpcd", "agent", "--encrypt-file", "/k", "--encrypt-file=/k"}},
		{[]string{"zrpcd", "agent", "--encrypt"}, []string{"zrpcd", "agent", "--encrypt"}},
		{[]string{"zrpcd", "agent", "--", "--encrypt", "x"}, []string{"zrpcd", "agent", "--", "--encrypt", "x"}},
	}
	for _, tt := range tests {
		in := slices.Clone(tt.in)
		if got := redactArgs(in); !slices.Equal(got, tt.want) {
			t.Errorf("redactArgs(%q) = %q, want %q", tt.in, got, tt.want)
		}
		if !slices.Equal(in, tt.in) {
			t.Errorf("redactArgs changed its argument: %q", in)
		}
	}
}

func TestPprofCmdlineRedactsTheEncryptionKey(t *testing.T) {
	key, err := gossip.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	args := os.Args
	os.Args = []string{"zrpcd", "agent", "--name", "n1", "--encrypt", key, "--encrypt=" + key}
	t.Cleanup(func() { os.Args = args })
	n := startNode(t, testConfig(t))
	got := httpGet(t, n, "/debug/pprof/cmdline")
	if strings.Contains(got, key) {
		t.Fatalf("/debug/pprof/cmdline shows the key: %q", got)
	}
	if want := "zrpcd\x00agent\x00--name\x00n1\x00--encrypt\x00REDACTED\x00--encrypt=REDACTED"; got != want {
		t.Fatalf("/debug/pprof/cmdline = %q, want %q", got, want)
	}
}

func TestEncryptKeyFile(t *testing.T) {
	key, err := gossip.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	good := filepath.Join(dir, "gossip.key")
	os.WriteFile(good, []byte(key+"\n"), 0o600)
	bad := filepath.Join(dir, "bad.key")
	os.WriteFile(bad, []byte("not base64\n"), 0o600)

	c := Default()
	c.EncryptKeyFile = good
	want, _ := gossip.ParseKey(key)
	if got, err := c.gossipKey(); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("gossipKey from %s = %x, %v; want %x", good, got, err, want)
	}
	c.EncryptKey = key
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "encrypt_file:") {
		t.Fatalf("Validate with encrypt and encrypt_file: %v, want an error naming encrypt_file", err)
	}

	cfg := testConfig(t)
	cfg.EncryptKeyFile = good
	startNode(t, cfg) // gossip starts with the key from the file

	for _, path := range []string{bad, filepath.Join(dir, "missing.key")} {
		cfg := testConfig(t)
		cfg.EncryptKeyFile = path
		n, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		err = n.Start(context.Background())
		n.Close()
		if err == nil || !strings.Contains(err.Error(), "encrypt_file") || !strings.Contains(err.Error(), path) {
			t.Fatalf("Start with encrypt_file %s: %v, want an error naming encrypt_file and the path", path, err)
		}
	}
}
