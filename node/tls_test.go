package node

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/zrpcio/zrpc/gossip"
	"github.com/zrpcio/zrpc/internal/pki/pkitest"
	"github.com/zrpcio/zrpc/internal/testlog"
)

// An agent with TLS refuses to start with plaintext gossip, saying why
// and what to do; a key from encrypt, encrypt_file or a keyring file in
// the data dir lets it start.
func TestTLSRequiresEncryptedGossip(t *testing.T) {
	kit := pkitest.New(t)
	key, err := gossip.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	tlsConfig := func(t *testing.T) Config {
		cfg := testConfig(t)
		f := kit.Agent(cfg.Name)
		cfg.TLSCA, cfg.TLSCert, cfg.TLSKey = f.CA, f.Cert, f.Key
		return cfg
	}

	cfg := tlsConfig(t)
	n, err := New(cfg, WithLogger(testlog.New(t, cfg.Name)))
	if err != nil {
		t.Fatal(err)
	}
	err = n.Start(context.Background())
	n.Close()
	if err == nil {
		t.Fatal("an agent with TLS and plaintext gossip started")
	}
	for _, want := range []string{"gossip would be plaintext", "members' addresses", "leave notices", "zrpcd keygen", "--encrypt-file"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Start error lacks %q: %v", want, err)
		}
	}
	if _, err := os.Stat(filepath.Join(cfg.DataDir, raftDirName)); err == nil {
		t.Error("the refused agent started Raft")
	}

	for _, tc := range []struct {
		name string
		set  func(t *testing.T, c *Config)
	}{
		{"encrypt", func(_ *testing.T, c *Config) { c.EncryptKey = key }},
		{"encrypt_file", func(t *testing.T, c *Config) {
			c.EncryptKeyFile = filepath.Join(t.TempDir(), "gossip.key")
			if err := os.WriteFile(c.EncryptKeyFile, []byte(key+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
		}},
		{"keyring file", func(t *testing.T, c *Config) {
			// An agent that ran with a key keeps its keyring in the data dir.
			first := *c
			first.EncryptKey = key
			n := startNode(t, first)
			if err := n.Close(); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tlsConfig(t)
			tc.set(t, &cfg)
			startNode(t, cfg)
		})
	}
}
