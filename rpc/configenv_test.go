package rpc

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestLoadConfigTakesEnvironmentVariables(t *testing.T) {
	t.Setenv("ZRPC_TEST_TARGET", "direct:///127.0.0.1:9000")
	t.Setenv("ZRPC_TEST_TOKEN", "s3cr$t")
	path := filepath.Join(t.TempDir(), "c.yaml")
	t.Setenv("ZRPC_TEST_PORT", "8080")
	text := "# Commented: ${ZRPC_TEST_UNSET_IN_COMMENT}\nTarget: ${ZRPC_TEST_TARGET}\nToken: ${ZRPC_TEST_TOKEN}\n" +
		"Name: cost-$5-$${literal}\nPort: ${ZRPC_TEST_PORT}\nQuoted: \"${ZRPC_TEST_PORT}\"\n"
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	var c struct {
		Target string `yaml:"Target"`
		Token  string `yaml:"Token"`
		Name   string `yaml:"Name"`
		Port   int    `yaml:"Port"`
		Quoted string `yaml:"Quoted"`
	}
	if err := LoadConfig(path, &c); err != nil {
		t.Fatal(err)
	}
	if c.Target != "direct:///127.0.0.1:9000" || c.Token != "s3cr$t" || c.Name != "cost-$5-${literal}" ||
		c.Port != 8080 || c.Quoted != "8080" {
		t.Fatalf("loaded %+v", c)
	}
}

func TestLoadConfigRefusesUnsetOrMalformedVariables(t *testing.T) {
	os.Unsetenv("ZRPC_TEST_UNSET")
	for _, c := range []struct{ text, want string }{
		{"A: 1\nToken: ${ZRPC_TEST_UNSET}\n", "line 2: environment variable ZRPC_TEST_UNSET is not set"},
		{"Token: ${}\n", "line 1: ${}: not an environment variable name"},
		{"Token: ${1X}\n", "not an environment variable name"},
		{"Token: ${A-B}\n", "not an environment variable name"},
		{"Token: ${OPEN\n", "line 1: \"${\" without a closing \"}\""},
	} {
		path := filepath.Join(t.TempDir(), "c.yaml")
		if err := os.WriteFile(path, []byte(c.text), 0o600); err != nil {
			t.Fatal(err)
		}
		var v map[string]any
		err := LoadConfig(path, &v)
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), path) {
			t.Errorf("LoadConfig of %q: %v, want an error naming the file and %q", c.text, err, c.want)
		}
	}
}

// A server without Agents registers through the agents $ZRPC_ADDR lists,
// comma-separated as rpc.Dial and zrpcctl read it: the whole list was
// taken as one address, and Start failed ("too many colons").
func TestServerReadsEveryAgentZRPCADDRLists(t *testing.T) {
	t.Setenv("ZRPC_ADDR", " 10.0.0.1:8400, 10.0.0.2:8400,,")
	if got, want := (ServerConfig{}).agents(), []string{"10.0.0.1:8400", "10.0.0.2:8400"}; !slices.Equal(got, want) {
		t.Fatalf("agents from $ZRPC_ADDR = %q, want %q", got, want)
	}
	if got := (ServerConfig{Agents: []string{"a:1"}}).agents(); !slices.Equal(got, []string{"a:1"}) {
		t.Fatalf("Agents set: agents = %q, want them over $ZRPC_ADDR", got)
	}
	t.Setenv("ZRPC_ADDR", " , ")
	if got := (ServerConfig{}).agents(); !slices.Equal(got, []string{"127.0.0.1:8400"}) {
		t.Fatalf("$ZRPC_ADDR listing none: agents = %q, want the default", got)
	}
}
