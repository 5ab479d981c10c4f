package node

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// FuzzConfigLoadFile loads arbitrary bytes as the agent's YAML config file
// (what `zrpcd agent --config` does): it never panics, a file it rejects
// leaves the configuration as it was, and Validate never panics on what it
// accepts.
//
//	go test -run '^$' -fuzz FuzzConfigLoadFile ./node/
func FuzzConfigLoadFile(f *testing.F) {
	f.Add([]byte("name: a1\ndata_dir: /var/lib/zrpc\ngrpc_port: 8400\n"))
	f.Add([]byte("join: [10.0.0.1:8402, 10.0.0.2:8402]\nleader_wait: 5s\nvoters: 5\n"))
	f.Add([]byte("name: a1\nno_such_field: 1\n"))
	f.Add([]byte("grpc_port: 8400\nraft_port: eighty\n"))
	f.Add([]byte("blob_max_size: -1\nblob_scrub_rate: 99999999999999999999\n"))
	f.Add([]byte("- a\n- b\n"))
	f.Add([]byte("{"))
	f.Add([]byte(""))
	dir := f.TempDir()
	path := filepath.Join(dir, "zrpcd.yaml")
	f.Fuzz(func(t *testing.T, file []byte) {
		if err := os.WriteFile(path, file, 0o600); err != nil {
			t.Fatal(err)
		}
		cfg := Default()
		cfg.Name = "before"
		before := cfg
		before.Join = append([]string(nil), cfg.Join...)
		if err := cfg.LoadFile(path); err != nil {
			if !reflect.DeepEqual(cfg, before) {
				t.Fatalf("rejected config file (%v) changed the configuration:\nbefore %+v\nafter  %+v", err, before, cfg)
			}
			return
		}
		_ = cfg.Validate()
	})
}

// FuzzConfigLoadEnv sets one ZRPC_* variable to arbitrary text: LoadEnv
// never panics, a value it rejects leaves the configuration as it was, and
// Validate never panics on what it accepts.
//
//	go test -run '^$' -fuzz FuzzConfigLoadEnv ./node/
func FuzzConfigLoadEnv(f *testing.F) {
	f.Add("GRPC_PORT", "8400")
	f.Add("JOIN", "10.0.0.1:8402, ,10.0.0.2:8402")
	f.Add("LEADER_WAIT", "5 seconds")
	f.Add("BOOTSTRAP", "yes")
	f.Add("SNAPSHOT_THRESHOLD", "-1")
	f.Add("BLOB_MAX_SIZE", "99999999999999999999")
	f.Fuzz(func(t *testing.T, key, value string) {
		cfg := Default()
		before := cfg
		before.Join = append([]string(nil), cfg.Join...)
		env := map[string]string{EnvPrefix + strings.ToUpper(key): value}
		err := cfg.LoadEnv(func(k string) (string, bool) { v, ok := env[k]; return v, ok })
		if err != nil {
			if !reflect.DeepEqual(cfg, before) {
				t.Fatalf("rejected %s=%q (%v) changed the configuration", key, value, err)
			}
			if !strings.Contains(err.Error(), EnvPrefix) {
				t.Fatalf("error %q does not name the variable", err)
			}
			return
		}
		_ = cfg.Validate()
	})
}
