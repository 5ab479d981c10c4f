package gen

import (
	"os"
	"path/filepath"
	"regexp"
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
	path := filepath.Join(t.TempDir(), "echo.yaml")
	if err := os.WriteFile(path, []byte(uncommentKeys(etc)), 0o600); err != nil {
		t.Fatal(err)
	}
	var cfg rpc.ServerConfig
	if err := rpc.LoadConfig(path, &cfg); err != nil {
		t.Fatalf("load etc/echo.yaml with its keys uncommented: %v", err)
	}
	if want := (rpc.TLSConfig{CA: "ca.pem", Cert: "echo.rpc.pem", Key: "echo.rpc-key.pem"}); cfg.TLS != want {
		t.Errorf("TLS %+v, want %+v", cfg.TLS, want)
	}
	if !strings.Contains(files["echoclient/echo.go"], "rpc.DialConfig(ctx, c, ") {
		t.Error("DialConfig does not pass its ClientConfig (TLS included) to rpc.DialConfig")
	}
}

// commentedKey matches a commented-out YAML key or list item of an etc
// file ("# TLS:", "#   CA: ca.pem", "#   - 127.0.0.1:8400"), not prose.
var commentedKey = regexp.MustCompile(`^#( +[A-Za-z]+:| {2,}- |[A-Z][A-Za-z]*:)`)

// uncommentKeys returns etc with every commented-out key uncommented.
func uncommentKeys(etc string) string {
	var b strings.Builder
	for line := range strings.Lines(etc) {
		if commentedKey.MatchString(line) {
			line = strings.TrimPrefix(strings.TrimPrefix(line, "#"), " ")
		}
		b.WriteString(line)
	}
	return b.String()
}
