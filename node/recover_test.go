package node

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/zrpcio/zrpc/internal/testlog"
	"github.com/zrpcio/zrpc/raftstore"
)

// Recovery removes the peers file, whose agents are given up for lost,
// and syncs the data dir once it is gone: a power loss right after must
// not bring the file back, or the agent would try to join those agents
// at every start and be refused. A failed sync is reported, naming the
// file.
func TestRecoverRemovesThePeersFileDurably(t *testing.T) {
	cfg := testConfig(t)
	n := startNode(t, cfg)
	// Recovery gives a new id to a cluster that has one.
	waitFor(t, 10*time.Second, "the cluster has an id", func() bool { return n.Store().FSM().ClusterID() != "" })
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	cfg.RaftPort = 7946 // the address recover records; nothing listens
	peers := filepath.Join(cfg.DataDir, peersFile)
	sync := syncRemoval
	t.Cleanup(func() { syncRemoval = sync })

	var synced []string
	var syncErr error
	syncRemoval = func(dir string) error {
		if _, err := os.Stat(peers); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s was synced while %s is still there (%v)", dir, peers, err)
		}
		synced = append(synced, dir)
		if syncErr != nil {
			return syncErr
		}
		return sync(dir)
	}
	recoverWithPeers := func() error {
		t.Helper()
		if err := os.WriteFile(peers, []byte(`["127.0.0.1:1"]`), 0o600); err != nil {
			t.Fatal(err)
		}
		_, _, err := Recover(cfg, false, testlog.New(t, cfg.Name))
		return err
	}

	if err := recoverWithPeers(); err != nil {
		t.Fatalf("Recover: %v", err)
	}
	if _, err := os.Stat(peers); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("%s is still there after recovery (%v)", peers, err)
	}
	if want := []string{cfg.DataDir}; !slices.Equal(synced, want) {
		t.Fatalf("recovery synced %v, want %v", synced, want)
	}

	syncErr = errors.New("input/output error")
	err := recoverWithPeers()
	if err == nil || !strings.Contains(err.Error(), peers) || !strings.Contains(err.Error(), "input/output error") {
		t.Fatalf("Recover with a failing sync = %v, want an error naming %s and the sync's failure", err, peers)
	}
}

// A cluster whose first leader never wrote its identity (its majority
// lost right after it formed, or agents of a build from before cluster
// ids) is recovered all the same, and its peers file goes too: its
// agents are given up for lost whatever the cluster's id. It gets an id,
// recorded as any recovered cluster's is: should those agents come back,
// elect among themselves and write an identity of their own, they are of
// another cluster.
func TestRecoverOfAClusterWithoutAnIdentityRemovesThePeersFile(t *testing.T) {
	cfg := testConfig(t)
	d, err := openDataDir(cfg.DataDir, cfg.Name)
	if err != nil {
		t.Fatal(err)
	}
	d.close()
	// Raft state with no ClusterInit entry: a store bootstrapped on its
	// own, without the agent's leader functions.
	rc := cfg.raftConfig()
	rc.Dir = filepath.Join(cfg.DataDir, raftDirName)
	if err := os.Mkdir(rc.Dir, 0o700); err != nil {
		t.Fatal(err)
	}
	rc.BindAddr = "127.0.0.1:0"
	rc.Bootstrap = true
	rc.Logger = testlog.New(t, cfg.Name)
	s := raftstore.New(rc)
	if err := s.Open(); err != nil {
		t.Fatalf("open the Raft store: %v", err)
	}
	waitFor(t, 10*time.Second, "the store leads", s.IsLeader)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	peers := filepath.Join(cfg.DataDir, peersFile)
	if err := os.WriteFile(peers, []byte(`["127.0.0.1:1"]`), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg.RaftPort = 7946 // the address recover records; nothing listens
	rep, _, err := Recover(cfg, false, testlog.New(t, cfg.Name))
	if err != nil {
		t.Fatalf("Recover: %v", err)
	}
	if rep.ClusterID == "" || rep.PreviousClusterID != "" {
		t.Fatalf("recovery of a cluster without an identity: id %q (was %q), want a new id and none before", rep.ClusterID, rep.PreviousClusterID)
	}
	if _, err := os.Stat(peers); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("%s is still there after recovery (%v): the agent would rejoin the agents given up for lost at every start", peers, err)
	}
	if b, err := os.ReadFile(filepath.Join(cfg.DataDir, clusterIDFile)); err != nil || strings.TrimSpace(string(b)) != rep.ClusterID {
		t.Fatalf("recorded cluster id after recovery = %q (%v), want the new id %q", b, err, rep.ClusterID)
	}
}
