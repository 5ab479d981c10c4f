package node

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/zrpcio/zrpc/gossip"
	"github.com/zrpcio/zrpc/internal/pki/pkitest"
	"github.com/zrpcio/zrpc/internal/testlog"
	"github.com/zrpcio/zrpc/internal/tlsconf"
	"github.com/zrpcio/zrpc/raftstore"
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
			if n := startNode(t, cfg); !n.TLSEnabled() {
				t.Fatal("an agent started with TLS files says TLS is off (SIGHUP would not reload them)")
			}
		})
	}
	if n := startNode(t, testConfig(t)); n.TLSEnabled() {
		t.Fatal("an agent without TLS says TLS is on")
	}
}

// TestCertificateExpiry: an agent that signs its certificate from the
// cluster token signs a new one, and uses it, once a third of its
// lifetime is left; one whose certificate comes from files warns of it in
// its last 30 days, once a day, saying what to do; both show the expiry in
// Status and /metrics.
func TestCertificateExpiry(t *testing.T) {
	key, err := gossip.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	t.Run("cluster token", func(t *testing.T) {
		cfg := testConfig(t)
		cfg.ClusterToken = strings.Repeat("k", 40)
		var logs testlog.Buffer
		n := startNode(t, cfg, WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
		expires, serial := n.tls.NotAfter(), n.tls.SerialNumber()
		if got := (apiStatus{n}).TLSExpires(); !got.Equal(expires) || expires.IsZero() {
			t.Fatalf("Status says the certificate expires at %v, the agent's expires at %v", got, expires)
		}
		n.checkCertificate(expires.Add(-200*24*time.Hour), time.Time{})
		if n.tls.SerialNumber().Cmp(serial) != 0 {
			t.Fatal("renewed with more than a third of the lifetime left")
		}
		n.checkCertificate(expires.Add(-100*24*time.Hour), time.Time{})
		if n.tls.SerialNumber().Cmp(serial) == 0 || n.tls.NotAfter().Before(expires) {
			t.Fatalf("not renewed with a third of the lifetime left: serial %v, expires %v (was %v)", n.tls.SerialNumber(), n.tls.NotAfter(), expires)
		}
		if !strings.Contains(logs.String(), "renewed this agent's certificate from the cluster token") {
			t.Errorf("the renewal is not logged:\n%s", logs.String())
		}
		resp, err := http.Get("http://" + n.HTTPAddr() + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		want := fmt.Sprintf("\nzrpc_tls_cert_expiry_timestamp_seconds %s\n", strconv.FormatFloat(float64(n.tls.NotAfter().Unix()), 'g', -1, 64))
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %q", strings.TrimSpace(want))
		}
	})
	t.Run("files", func(t *testing.T) {
		kit := pkitest.New(t)
		cfg := testConfig(t)
		f := kit.Agent(cfg.Name)
		cfg.TLSCA, cfg.TLSCert, cfg.TLSKey, cfg.EncryptKey = f.CA, f.Cert, f.Key, key
		var logs testlog.Buffer
		n := startNode(t, cfg, WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
		expires := n.tls.NotAfter()
		const warning = "this agent's TLS certificate expires soon"
		if last := n.checkCertificate(expires.Add(-40*24*time.Hour), time.Time{}); !last.IsZero() || strings.Contains(logs.String(), warning) {
			t.Fatalf("warned 40 days before the expiry")
		}
		now := expires.Add(-20 * 24 * time.Hour)
		last := n.checkCertificate(now, time.Time{})
		if !last.Equal(now) || strings.Count(logs.String(), warning) != 1 {
			t.Fatalf("20 days before the expiry: last warned %v, log:\n%s", last, logs.String())
		}
		for _, want := range []string{f.Cert, "zrpcctl tls cert create --agent", "SIGHUP"} {
			if !strings.Contains(logs.String(), want) {
				t.Errorf("the warning does not say %q:\n%s", want, logs.String())
			}
		}
		if again := n.checkCertificate(now.Add(time.Hour), last); !again.Equal(last) || strings.Count(logs.String(), warning) != 1 {
			t.Fatal("warned again an hour later")
		}
		if again := n.checkCertificate(now.Add(25*time.Hour), last); !again.Equal(now.Add(25*time.Hour)) || strings.Count(logs.String(), warning) != 2 {
			t.Fatal("not warned again a day later")
		}
	})
}

// TestTLSRaftHandshakeHasADeadline: a caller of the Raft port that opens a
// connection and never completes the TLS handshake is dropped after the
// handshake timeout, instead of holding the transport's reader forever;
// an agent that does handshake gets through.
func TestTLSRaftHandshakeHasADeadline(t *testing.T) {
	kit := pkitest.New(t)
	certs, err := tlsconf.Load(tlsconf.Files(kit.Agent("n1")))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	layer := &tlsRaftLayer{
		inner:            raftstore.NewTCPStreamLayer(ln, ln.Addr()),
		server:           certs.ServerConfig(tlsconf.RequireAgent()),
		client:           certs.ClientConfig(tlsconf.AgentServerName, tlsconf.RequireAgent()),
		handshakeTimeout: 200 * time.Millisecond,
	}
	t.Cleanup(func() { layer.Close() })

	silent, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	conn, err := layer.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	read := make(chan error, 1)
	go func() {
		_, err := conn.Read(make([]byte, 1))
		read <- err
	}()
	select {
	case err := <-read:
		if err == nil {
			t.Fatal("read of a connection that never handshook returned data")
		}
	case <-time.After(10 * time.Second):
		conn.Close()
		t.Fatal("read of a connection that never handshakes still blocks after 10s")
	}

	// Raft reads an accepted connection at once: the handshake runs there.
	got := make(chan error, 1)
	go func() {
		c, err := layer.Accept()
		if err != nil {
			got <- err
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		_, err = c.Read(make([]byte, 1))
		got <- err
	}()
	dialed, err := layer.Dial(raft.ServerAddress(ln.Addr().String()), 10*time.Second)
	if err != nil {
		t.Fatalf("dial as an agent: %v", err)
	}
	defer dialed.Close()
	if _, err := dialed.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if err := <-got; err != nil {
		t.Fatalf("read from an agent: %v", err)
	}
}
