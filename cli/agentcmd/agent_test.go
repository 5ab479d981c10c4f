package agentcmd

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"

	"github.com/zrpcio/zrpc/node"
)

// layerValue is the value a layer sets for s: step 1 (file), 2 (env) or 3
// (flag). Each step's value differs from the one before it and the first
// differs from the default, so the result shows which layer won.
func layerValue(t *testing.T, s node.Setting, def string, step int) string {
	t.Helper()
	switch s.Type {
	case "string":
		return fmt.Sprintf("v%d-%s", step, s.Key)
	case "bool":
		d, _ := strconv.ParseBool(def)
		return strconv.FormatBool(d != (step%2 == 1))
	case "int", "int64", "uint64":
		n, err := strconv.ParseInt(def, 10, 64)
		if err != nil {
			t.Fatalf("%s: default %q: %v", s.Key, def, err)
		}
		return strconv.FormatInt(n+int64(step), 10)
	case "duration":
		d, err := time.ParseDuration(def)
		if err != nil {
			t.Fatalf("%s: default %q: %v", s.Key, def, err)
		}
		return (d + time.Duration(step)*time.Second).String()
	case "strings":
		return fmt.Sprintf("10.0.0.%d:8402,10.0.1.%d:8402", step, step)
	}
	t.Fatalf("setting %s has type %s, which this test does not know", s.Key, s.Type)
	return ""
}

// yamlLine writes value of s as a YAML mapping entry.
func yamlLine(s node.Setting, value string) string {
	switch s.Type {
	case "string", "duration":
		return fmt.Sprintf("%s: %q\n", s.Key, value)
	case "strings":
		return fmt.Sprintf("%s: [%s]\n", s.Key, value)
	}
	return fmt.Sprintf("%s: %s\n", s.Key, value)
}

func TestEveryAgentSettingReachesConfigByFlagEnvAndFile(t *testing.T) {
	settings := node.Settings()
	if len(settings) < 30 {
		t.Fatalf("node.Settings() has %d settings; the test would check too little", len(settings))
	}
	def := node.Default()
	for _, s := range settings {
		t.Run(s.Key, func(t *testing.T) {
			if s.Help == "" {
				t.Errorf("setting %s has no help text", s.Key)
			}
			want := make([]string, 4)
			want[0] = def.Get(s.Key)
			for step := 1; step <= 3; step++ {
				want[step] = layerValue(t, s, want[0], step)
			}
			file := filepath.Join(t.TempDir(), "agent.yaml")
			if err := os.WriteFile(file, []byte(yamlLine(s, want[1])), 0o600); err != nil {
				t.Fatal(err)
			}
			env := func(k string) (string, bool) {
				if k == s.Env {
					return want[2], true
				}
				return "", false
			}
			noEnv := func(string) (string, bool) { return "", false }
			cases := []struct {
				layers string
				file   string
				env    func(string) (string, bool)
				args   []string
				want   string
			}{
				{"default", "", noEnv, nil, want[0]},
				{"file", file, noEnv, nil, want[1]},
				{"env over file", file, env, nil, want[2]},
				{"flag over env and file", file, env, []string{"--" + s.Flag + "=" + want[3]}, want[3]},
				{"flag alone", "", noEnv, []string{"--" + s.Flag + "=" + want[3]}, want[3]},
			}
			for _, tc := range cases {
				cmd := newAgentCommand()
				if err := cmd.Flags().Parse(tc.args); err != nil {
					t.Fatalf("%s: parse %v: %v", tc.layers, tc.args, err)
				}
				cfg := node.Default()
				if err := layerAgentConfig(&cfg, cmd.Flags(), tc.file, tc.env); err != nil {
					t.Fatalf("%s: %v", tc.layers, err)
				}
				if got := cfg.Get(s.Key); got != tc.want {
					t.Errorf("%s: %s = %q, want %q", tc.layers, s.Key, got, tc.want)
				}
				// No other setting moved.
				for _, o := range settings {
					if o.Key != s.Key && cfg.Get(o.Key) != def.Get(o.Key) {
						t.Errorf("%s: setting %s changed %s to %q", tc.layers, s.Key, o.Key, cfg.Get(o.Key))
					}
				}
			}
		})
	}
}

func TestAgentFlagsMatchConfigFields(t *testing.T) {
	// The five blob flags were once declared but never copied into the
	// config; check the typed fields, not only Get.
	cmd := newAgentCommand()
	args := []string{"--blob-block-size=65536", "--blob-max-size=1048576", "--shard-max-bytes=999",
		"--blob-repair-delay=7s", "--blob-scrub-rate=12345", "--join=10.0.0.1:8402", "--join=10.0.0.2:8402", "--bootstrap=false"}
	if err := cmd.Flags().Parse(args); err != nil {
		t.Fatal(err)
	}
	cfg := node.Default()
	if err := layerAgentConfig(&cfg, cmd.Flags(), "", func(string) (string, bool) { return "", false }); err != nil {
		t.Fatal(err)
	}
	want := node.Default()
	want.BlobBlockSize, want.BlobMaxSize, want.ShardMaxBytes = 65536, 1048576, 999
	want.BlobRepairDelay, want.BlobScrubRate = 7*time.Second, 12345
	want.Join = []string{"10.0.0.1:8402", "10.0.0.2:8402"}
	want.Bootstrap = false
	if !reflect.DeepEqual(cfg, want) {
		t.Fatalf("config from flags %v:\n got %+v\nwant %+v", args, cfg, want)
	}
	if err := newAgentCommand().Flags().Parse([]string{"--voters=three"}); err == nil || !strings.Contains(err.Error(), "voters") {
		t.Fatalf("--voters=three: %v, want an error naming the flag", err)
	}
}

func TestAgentHelpListsEverySetting(t *testing.T) {
	for _, args := range [][]string{{"agent", "--help"}, {"agent", "join", "--help"}, {"agent", "recover", "--help"}} {
		root := NewCommand()
		var out bytes.Buffer
		root.SetOut(&out)
		root.SetErr(&out)
		root.SetArgs(args)
		if err := root.Execute(); err != nil {
			t.Fatalf("zrpcd %v: %v", args, err)
		}
		help := out.String()
		for _, s := range node.Settings() {
			if !strings.Contains(help, "--"+s.Flag+" ") || !strings.Contains(help, s.Help) {
				t.Errorf("zrpcd %v does not list --%s with %q", args, s.Flag, s.Help)
			}
		}
	}
}

func TestAgentWarnsAboutAKeyOnTheCommandLine(t *testing.T) {
	cmd := newAgentCommand()
	if err := cmd.Flags().Parse([]string{"--encrypt=k", "--encrypt-file=/etc/zrpc/gossip.key", "--name=n1"}); err != nil {
		t.Fatal(err)
	}
	var w bytes.Buffer
	warnSecretFlags(cmd.Flags(), &w)
	if got := w.String(); strings.Count(got, "warning:") != 1 || !strings.Contains(got, "--encrypt on the command line") ||
		!strings.Contains(got, "--encrypt-file") || !strings.Contains(got, "ZRPC_ENCRYPT") || strings.Contains(got, "=k") {
		t.Fatalf("warning = %q, want one warning about --encrypt naming --encrypt-file and ZRPC_ENCRYPT", got)
	}
	cmd = newAgentCommand()
	if err := cmd.Flags().Parse([]string{"--encrypt-file=/etc/zrpc/gossip.key"}); err != nil {
		t.Fatal(err)
	}
	w.Reset()
	warnSecretFlags(cmd.Flags(), &w)
	if w.Len() != 0 {
		t.Fatalf("warning without --encrypt: %q", w.String())
	}
}

// TestAgentRecoverRefusesWhatItCannotRecover: recover on a data dir with
// no Raft state, or without a fixed Raft port, says what is wrong and
// writes nothing.
func TestAgentRecoverRefusesWhatItCannotRecover(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--name", "n1", "--data-dir", dir}, "nothing to recover"},
		{[]string{"--name", "n1", "--data-dir", dir, "--dry-run"}, "nothing to recover"},
		{[]string{"--name", "n1", "--data-dir", dir, "--raft-port", "0"}, "raft_port is 0"},
	} {
		root := NewCommand()
		var out bytes.Buffer
		root.SetOut(&out)
		root.SetErr(&out)
		root.SetArgs(append([]string{"agent", "recover"}, c.args...))
		err := root.Execute()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("zrpcd agent recover %v: %v, want an error saying %q", c.args, err, c.want)
		}
		if strings.Contains(out.String(), "only voter") && !strings.Contains(out.String(), "Usage") {
			t.Errorf("zrpcd agent recover %v printed a recovery: %s", c.args, out.String())
		}
	}
	if _, err := os.Stat(dir); err == nil {
		t.Error("recover created the data dir it refused")
	}
}

// runZrpcd runs zrpcd with args and returns its error and what it printed.
func runZrpcd(args ...string) (string, error) {
	root := NewCommand()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(args)
	err := root.Execute()
	return out.String(), err
}

func TestZrpcdCommandsDocumented(t *testing.T) {
	var walk func(*cobra.Command)
	walk = func(c *cobra.Command) {
		if c.Short == "" || c.Long == "" || c.Example == "" {
			t.Errorf("%q lacks Short, Long or Example", c.CommandPath())
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(NewCommand())
}

// TestZrpcdUsageErrorsSayWhatToDo: a bad flag or a missing argument names
// what was wrong and where to look, though zrpcd prints no usage.
func TestZrpcdUsageErrorsSayWhatToDo(t *testing.T) {
	tests := []struct {
		args  []string
		wants []string
	}{
		{[]string{"agent", "--no-such-flag"}, []string{"unknown flag: --no-such-flag", "`zrpcd agent --help` lists the flags"}},
		{[]string{"agent", "join", "--grpc-port", "port"}, []string{`"--grpc-port"`, "`zrpcd agent join --help` lists the flags"}},
		{[]string{"agent", "join", "--name", "n2"}, []string{"gossip address", "at least one agent", "`zrpcd agent join --help`"}},
		{[]string{"agnet"}, []string{`unknown command "agnet" for "zrpcd"`}},
		{[]string{"agent", "jion"}, []string{`unknown command "jion" for "zrpcd agent"`}},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			_, err := runZrpcd(tt.args...)
			if err == nil {
				t.Fatal("zrpcd succeeded, want an error")
			}
			for _, want := range tt.wants {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not contain %q", err, want)
				}
			}
		})
	}
}

// TestAgentJoinAddressWithoutPortTakesTheGossipPort: `zrpcd agent join
// HOST` joins HOST on the agent's gossip_port, as --join HOST does, so
// agents that all run with --gossip-port 9402 join each other by name
// alone; a port given is kept.
func TestAgentJoinAddressWithoutPortTakesTheGossipPort(t *testing.T) {
	cmd := newAgentJoinCommand()
	if err := cmd.Flags().Parse([]string{"--gossip-port=9402", "--name=n2", "--data-dir=" + t.TempDir()}); err != nil {
		t.Fatal(err)
	}
	noEnv := func(string) (string, bool) { return "", false }
	cfg, cleanup, err := resolveJoinConfig(cmd.Flags(), "", []string{"10.0.0.1", "zrpc.example.com", "10.0.0.3:8402"}, noEnv)
	if err != nil {
		t.Fatal(err)
	}
	defer cleanup()
	for _, a := range cfg.Join {
		if a == "10.0.0.1:8402" || a == "zrpc.example.com:8402" {
			t.Errorf("join address %s: port 8402 added, want the agent's gossip_port (9402)", a)
		}
	}
	if want := []string{"10.0.0.1", "zrpc.example.com", "10.0.0.3:8402"}; !reflect.DeepEqual(cfg.Join, want) {
		t.Errorf("join = %v, want %v (gossip gives an address without a port the gossip_port)", cfg.Join, want)
	}
	if _, _, err := resolveJoinConfig(cmd.Flags(), "", []string{"not a host"}, noEnv); err == nil || !strings.Contains(err.Error(), "join") {
		t.Errorf("agent join \"not a host\": %v, want an error naming join", err)
	}
}
