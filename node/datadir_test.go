package node

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/zrpcio/zrpc/raftstore"
)

func TestDataDirIsLocked(t *testing.T) {
	cfg := testConfig(t)
	startNode(t, cfg)
	second, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	err = second.Start(context.Background())
	if err == nil || !strings.Contains(err.Error(), "in use by another zrpcd") {
		t.Fatalf("second agent on the same data dir: %v, want 'in use by another zrpcd'", err)
	}
	second.Close()
}

func TestForeignDataDirIsRefusedAndUntouched(t *testing.T) {
	foreign := func(t *testing.T, dir string) {
		os.WriteFile(filepath.Join(dir, "important.txt"), []byte("not ours"), 0o600)
	}
	otherOwner := func(t *testing.T, dir string) {
		os.WriteFile(filepath.Join(dir, nodeIDFile), []byte("someone-else\n"), 0o600)
	}
	corruptLog := func(t *testing.T, dir string) {
		os.WriteFile(filepath.Join(dir, nodeIDFile), []byte("n1\n"), 0o600)
		os.MkdirAll(filepath.Join(dir, "raft"), 0o700)
		os.WriteFile(filepath.Join(dir, "raft", "raft.db"), bytes.Repeat([]byte("garbage!"), 4096), 0o600)
	}
	cases := []struct {
		name  string
		setup func(*testing.T, string)
		want  string
	}{
		{"unknown files", foreign, "not created by zrpcd"},
		{"another agent's dir", otherOwner, `belongs to agent "someone-else"`},
		{"corrupt raft log", corruptLog, "raft.db"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(t)
			tc.setup(t, cfg.DataDir)
			before := snapshotDir(t, cfg.DataDir)
			n, err := New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			err = n.Start(context.Background())
			n.Close()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Start: %v, want error containing %q", err, tc.want)
			}
			after := snapshotDir(t, cfg.DataDir)
			for name, content := range before {
				if after[name] != content {
					t.Errorf("%s was changed", name)
				}
			}
		})
	}
}

// snapshotDir reads every regular file under dir except the lock file.
func snapshotDir(t *testing.T, dir string) map[string]string {
	out := map[string]string{}
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || d.Name() == lockFile {
			return nil
		}
		b, _ := os.ReadFile(p)
		out[p] = string(b)
		return nil
	})
	return out
}

func TestConfigValidateReportsEveryError(t *testing.T) {
	c := Default()
	c.Name = ""
	c.BindAddr = "not-an-ip"
	c.GRPCPort = 70000
	c.RaftPort = 8400
	c.GossipPort = 8400
	c.LogLevel = "loud"
	c.RaftLeaderLease = 2 * time.Second
	c.LeaderWait = 0
	err := c.Validate()
	if err == nil {
		t.Fatal("Validate accepted a bad config")
	}
	for _, field := range []string{"name", "bind", "grpc_port", "gossip_port", "log_level", "raft_leader_lease_timeout", "leader_wait"} {
		if !strings.Contains(err.Error(), field+":") {
			t.Errorf("Validate error does not name %s:\n%v", field, err)
		}
	}
	if _, err := New(c); err == nil {
		t.Fatal("New accepted a bad config")
	}
	if err := (func() *Config { d := Default(); return &d })().Validate(); err != nil {
		t.Fatalf("Default() is invalid: %v", err)
	}
}

func TestConfigFileAndEnv(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "agent.yaml")
	os.WriteFile(path, []byte("name: n7\ngrpc_port: 9400\nstale_read_bound: 3s\n"), 0o600)
	c := Default()
	if err := c.LoadFile(path); err != nil {
		t.Fatal(err)
	}
	if c.Name != "n7" || c.GRPCPort != 9400 || c.StaleReadBound != 3*time.Second {
		t.Fatalf("LoadFile: %+v", c)
	}
	env := map[string]string{"ZRPC_GRPC_PORT": "9500", "ZRPC_ZONE": "z1", "ZRPC_LEADER_WAIT": "2s"}
	if err := c.LoadEnv(func(k string) (string, bool) { v, ok := env[k]; return v, ok }); err != nil {
		t.Fatal(err)
	}
	if c.GRPCPort != 9500 || c.Zone != "z1" || c.LeaderWait != 2*time.Second {
		t.Fatalf("LoadEnv: %+v", c)
	}
	bad := map[string]string{"ZRPC_GRPC_PORT": "many", "ZRPC_LEADER_WAIT": "soon"}
	err := c.LoadEnv(func(k string) (string, bool) { v, ok := bad[k]; return v, ok })
	if err == nil || !strings.Contains(err.Error(), "ZRPC_GRPC_PORT") || !strings.Contains(err.Error(), "ZRPC_LEADER_WAIT") {
		t.Fatalf("LoadEnv with bad values: %v", err)
	}
	os.WriteFile(path, []byte("nmae: typo\n"), 0o600)
	if err := c.LoadFile(path); err == nil || !strings.Contains(err.Error(), "nmae") {
		t.Fatalf("LoadFile with unknown key: %v", err)
	}
}

func TestConfigRefusesLeaderWaitBeyondTheDedupWindow(t *testing.T) {
	c := Default()
	c.LeaderWait = raftstore.DedupWindow
	err := c.Validate()
	if err == nil || !strings.Contains(err.Error(), "leader_wait:") {
		t.Fatalf("Validate with leader_wait %s = %v, want an error naming leader_wait", c.LeaderWait, err)
	}
	c.LeaderWait = 30 * time.Second
	if err := c.Validate(); err != nil {
		t.Fatalf("leader_wait 30s: %v", err)
	}
}

func TestConfigLoadThatFailsChangesNothing(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "agent.yaml")
	os.WriteFile(path, []byte("name: n7\njoin: [127.0.0.1:8402]\nno_such_setting: 1\n"), 0o600)
	c := Default()
	want := Default()
	if err := c.LoadFile(path); err == nil {
		t.Fatal("LoadFile accepted an unknown key")
	}
	if c.Name != want.Name || len(c.Join) != 0 {
		t.Fatalf("a rejected file changed the config: name %q, join %v", c.Name, c.Join)
	}
	env := map[string]string{"ZRPC_NAME": "n8", "ZRPC_GRPC_PORT": "not-a-port"}
	if err := c.LoadEnv(func(k string) (string, bool) { v, ok := env[k]; return v, ok }); err == nil {
		t.Fatal("LoadEnv accepted a bad port")
	}
	if c.Name != want.Name || c.GRPCPort != want.GRPCPort {
		t.Fatalf("rejected environment changed the config: name %q, grpc_port %d", c.Name, c.GRPCPort)
	}
	empty := filepath.Join(dir, "empty.yaml")
	os.WriteFile(empty, nil, 0o600)
	if err := c.LoadFile(empty); err != nil {
		t.Fatalf("an empty file: %v", err)
	}
}

// TestDataDirCountsEitherRaftLogFormat: raft/wal/ (raft-wal) and
// raft/raft.db (an agent from before raft-wal, migrated at start) each
// count as the Raft log of a cluster member's data dir; with neither, the
// log is lost and the data dir is refused.
func TestDataDirCountsEitherRaftLogFormat(t *testing.T) {
	cases := []struct {
		name string
		log  func(raftDir string) error
		ok   bool
	}{
		{"raft-wal", func(d string) error { return os.MkdirAll(filepath.Join(d, raftWALDir), 0o700) }, true},
		{"raft.db", func(d string) error { return os.WriteFile(filepath.Join(d, raftDBFile), []byte("log"), 0o600) }, true},
		{"neither", func(string) error { return nil }, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			os.WriteFile(filepath.Join(dir, nodeIDFile), []byte("n1\n"), 0o600)
			os.WriteFile(filepath.Join(dir, clusterIDFile), []byte("0123456789abcdef0123456789abcdef\n"), 0o600)
			raftDir := filepath.Join(dir, raftDirName)
			if err := os.MkdirAll(raftDir, 0o700); err != nil {
				t.Fatal(err)
			}
			if err := tc.log(raftDir); err != nil {
				t.Fatal(err)
			}
			d, err := openDataDir(dir, "n1")
			if d != nil {
				d.close()
			}
			switch {
			case tc.ok && err != nil:
				t.Fatalf("openDataDir: %v", err)
			case !tc.ok && (err == nil || !strings.Contains(err.Error(), "its Raft log")):
				t.Fatalf("openDataDir = %v, want the lost Raft log refusal", err)
			}
		})
	}
}

// TestDataDirOfAFirstStartThatStoppedEarlyIsNew: a first start that stopped
// after it locked an empty data dir and before it recorded its name (a
// full disk, a crash) leaves the lock file, perhaps the temporary file of
// the name; the next start takes the directory as new instead of refusing
// it as another program's.
func TestDataDirOfAFirstStartThatStoppedEarlyIsNew(t *testing.T) {
	for _, left := range [][]string{{lockFile}, {lockFile, nodeIDFile + tmpSuffix}} {
		t.Run(strings.Join(left, "+"), func(t *testing.T) {
			cfg := testConfig(t)
			for _, f := range left {
				if err := os.WriteFile(filepath.Join(cfg.DataDir, f), []byte("1234\n"), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			startNode(t, cfg)
			b, err := os.ReadFile(filepath.Join(cfg.DataDir, nodeIDFile))
			if err != nil || strings.TrimSpace(string(b)) != cfg.Name {
				t.Fatalf("node-id after the start: %q (%v), want %s", b, err, cfg.Name)
			}
		})
	}
}

// TestDamagedIdentityFilesAreRefusedSayingHowToMend: a node-id or
// cluster-id file that holds no name or id is refused, naming the file,
// with the data dir left as it was; doing what the error says lets the
// agent start again, with its cluster's id recorded again.
func TestDamagedIdentityFilesAreRefusedSayingHowToMend(t *testing.T) {
	cases := []struct {
		name, file, damage string
		mend               func(path, name string) error
	}{
		{"empty node-id", nodeIDFile, "", func(p, name string) error { return os.WriteFile(p, []byte(name+"\n"), 0o600) }},
		{"garbage node-id", nodeIDFile, "\x00\x17\xff", func(p, name string) error { return os.WriteFile(p, []byte(name+"\n"), 0o600) }},
		{"garbage cluster-id", clusterIDFile, "not-a-cluster-id\x00", func(p, _ string) error { return os.Remove(p) }},
		{"overlong cluster-id", clusterIDFile, strings.Repeat("ab", 100), func(p, _ string) error { return os.Remove(p) }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(t)
			n := startNode(t, cfg)
			waitFor(t, 10*time.Second, "the cluster id recorded", func() bool {
				_, err := os.Stat(filepath.Join(cfg.DataDir, clusterIDFile))
				return err == nil
			})
			id := n.Store().FSM().ClusterID()
			n.Close()
			p := filepath.Join(cfg.DataDir, tc.file)
			if err := os.WriteFile(p, []byte(tc.damage), 0o600); err != nil {
				t.Fatal(err)
			}
			before := snapshotDir(t, cfg.DataDir)
			err := startErr(t, cfg)
			if err == nil || !strings.Contains(err.Error(), p) || !strings.Contains(err.Error(), "damaged") {
				t.Fatalf("Start with a damaged %s: %v, want an error naming %s as damaged", tc.file, err, p)
			}
			after := snapshotDir(t, cfg.DataDir)
			for name, content := range before {
				if after[name] != content {
					t.Errorf("%s was changed or removed", name)
				}
			}
			if err := tc.mend(p, cfg.Name); err != nil {
				t.Fatal(err)
			}
			again := startNode(t, cfg)
			waitFor(t, 10*time.Second, "the mended agent to know its cluster's id", func() bool { return again.clusterID() == id })
			waitFor(t, 10*time.Second, "the cluster id recorded again", func() bool {
				b, err := os.ReadFile(filepath.Join(cfg.DataDir, clusterIDFile))
				return err == nil && strings.TrimSpace(string(b)) == id
			})
		})
	}
}

// TestDataDirThatCannotBeUsedSaysWhatItIs: a --data-dir that is a file, a
// symbolic link to nothing or to a file, or whose LOCK cannot be opened,
// is refused with an error that says what the path is and to choose
// another --data-dir, and nothing is written there.
func TestDataDirThatCannotBeUsedSaysWhatItIs(t *testing.T) {
	base := t.TempDir()
	file := filepath.Join(base, "file")
	if err := os.WriteFile(file, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	dangling := filepath.Join(base, "dangling")
	if err := os.Symlink(filepath.Join(base, "missing"), dangling); err != nil {
		t.Fatal(err)
	}
	toFile := filepath.Join(base, "to-file")
	if err := os.Symlink(file, toFile); err != nil {
		t.Fatal(err)
	}
	lockIsDir := filepath.Join(base, "lock-is-dir")
	if err := os.MkdirAll(filepath.Join(lockIsDir, lockFile), 0o700); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ dir, want string }{
		{file, "is a file, not a directory"},
		{dangling, "is a symbolic link to " + filepath.Join(base, "missing")},
		{toFile, "is a symbolic link to " + file},
		{lockIsDir, "lock data dir " + lockIsDir},
	} {
		d, err := openDataDir(tc.dir, "n1")
		if err == nil {
			d.close()
			t.Errorf("openDataDir(%s) succeeded", tc.dir)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "--data-dir") {
			t.Errorf("openDataDir(%s) = %v, want an error saying %q and naming --data-dir", tc.dir, err, tc.want)
		}
	}
	if _, err := os.Stat(filepath.Join(base, "missing")); !os.IsNotExist(err) {
		t.Errorf("the target of a dangling data dir link was created: %v", err)
	}
}
