package node

import (
	"os"
	"strings"
	"testing"
)

// TestConfigurationReferenceIsUpToDate: docs/configuration.md is what
// ConfigReference renders from the settings' declaration. ZRPC_UPDATE_DOCS=1
// (make docs) rewrites it.
func TestConfigurationReferenceIsUpToDate(t *testing.T) {
	const path = "../docs/configuration.md"
	want := ConfigReference()
	if os.Getenv("ZRPC_UPDATE_DOCS") == "1" {
		if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (make docs writes it)", err)
	}
	if string(got) != want {
		t.Fatalf("%s is out of date with node.Config's settings: run make docs", path)
	}
	for _, s := range Settings() {
		if !strings.Contains(want, "`--"+s.Flag+"`") || !strings.Contains(want, "`"+s.Env+"`") {
			t.Errorf("the reference lacks %s (--%s, %s)", s.Key, s.Flag, s.Env)
		}
	}
}
