package gen

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/zrpcio/zrpc/rpc"
)

// TestGeneratedServiceOffersTLS: the service's etc/<name>.yaml shows the
// TLS keys commented out, and once uncommented they load into
// rpc.ServerConfig; the generated client's DialConfig passes them on.
func TestGeneratedServiceOffersTLS(t *testing.T) {
	plan := generate(t, "testdata/run/echo.proto", filepath.Join(t.TempDir(), "echo"))
	files := map[string]string{}
	for _, f := range plan.Files {
		files[f.Path] = string(f.Content)
	}
	etc := files["etc/echo.yaml"]
	if !strings.Contains(etc, "\n# TLS:\n#   CA: ca.pem\n#   Cert: echo.rpc.pem\n#   Key: echo.rpc-key.pem\n") {
		t.Fatalf("etc/echo.yaml shows no commented TLS keys:\n%s", etc)
	}
	var lines []string
	tls := false
	for line := range strings.Lines(etc) {
		tls = tls || line == "# TLS:\n"
		if tls {
			line = strings.TrimPrefix(line, "# ")
			line = strings.TrimPrefix(line, "#")
		}
		lines = append(lines, line)
	}
	path := filepath.Join(t.TempDir(), "echo.yaml")
	if err := os.WriteFile(path, []byte(strings.Join(lines, "")), 0o600); err != nil {
		t.Fatal(err)
	}
	var cfg rpc.ServerConfig
	if err := rpc.LoadConfig(path, &cfg); err != nil {
		t.Fatalf("load etc/echo.yaml with TLS uncommented: %v", err)
	}
	if want := (rpc.TLSConfig{CA: "ca.pem", Cert: "echo.rpc.pem", Key: "echo.rpc-key.pem"}); cfg.TLS != want {
		t.Errorf("TLS %+v, want %+v", cfg.TLS, want)
	}
	if !strings.Contains(files["echoclient/echo.go"], "rpc.WithTLS(c.TLS)") {
		t.Error("DialConfig does not pass ClientConfig.TLS to Dial")
	}
}
