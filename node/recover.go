package node

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"

	"github.com/zrpcio/zrpc/raftstore"
)

// RecoverReport is what Recover found and did.
type RecoverReport = raftstore.RecoverReport

// Recover is outage recovery for a cluster that has lost a majority of its
// voters for good (raftstore/recover.go): on this agent's data dir, which
// no agent may hold open, it makes the agent the only voter of its
// cluster, keeping its registry, blobs metadata and shards. It returns
// what it found and the Raft address the agent is recorded at. With
// dryRun it changes nothing. log gets Raft's progress.
func Recover(cfg Config, dryRun bool, log *slog.Logger) (RecoverReport, string, error) {
	if err := cfg.Validate(); err != nil {
		return RecoverReport{}, "", fmt.Errorf("invalid agent configuration:\n%w", err)
	}
	addr, err := recoverRaftAddr(cfg)
	if err != nil {
		return RecoverReport{}, "", err
	}
	// openDataDir claims an empty dir for the agent: refuse before it.
	if _, err := os.Stat(filepath.Join(cfg.DataDir, nodeIDFile)); err != nil {
		return RecoverReport{}, "", fmt.Errorf("data dir %s holds no agent's state (%v): nothing to recover; an agent with an empty data dir joins a cluster with --join", cfg.DataDir, err)
	}
	d, err := openDataDir(cfg.DataDir, cfg.Name)
	if err != nil {
		return RecoverReport{}, "", err
	}
	defer d.close()
	rc := cfg.raftConfig()
	rc.Dir = filepath.Join(d.path, raftDirName)
	rc.Logger = log
	rep, err := raftstore.Recover(rc, raftstore.Server{ID: cfg.Name, Address: addr, Suffrage: raftstore.Voter}, dryRun)
	if errors.Is(err, raftstore.ErrNoRaftState) {
		err = fmt.Errorf("%w: nothing to recover; an agent with an empty data dir joins a cluster with --join", err)
	}
	if err != nil || dryRun {
		return rep, addr, err
	}
	// The agent would correct the file at its next start (recordClusterID);
	// until then its peers would see the old id. A cluster whose first
	// leader never wrote its identity has none to record: the agent's
	// first term as leader writes one.
	if rep.ClusterID != "" {
		if err := d.writeClusterID(rep.ClusterID); err != nil {
			return rep, addr, fmt.Errorf("the Raft state is recovered, but the cluster's new id could not be recorded: %w; "+
				"the agent records it when it starts", err)
		}
	}
	// The peers it remembers are the agents given up for lost, whatever
	// the cluster's id: the agent would try to join them at every start,
	// and be refused by any that came back with their state (or, in a
	// cluster that had no id, take them back with it). The removal is
	// synced, or a power loss could bring the file back.
	peers := filepath.Join(d.path, peersFile)
	if err := os.Remove(peers); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return rep, addr, fmt.Errorf("the Raft state is recovered, but %s could not be removed: %w; remove it before starting the agent", peers, err)
	}
	if err := syncRemoval(d.path); err != nil {
		return rep, addr, fmt.Errorf("the Raft state is recovered and %s removed, but the removal could not be made durable: %w; "+
			"run sync before starting the agent, and check that %s is gone", peers, err, peers)
	}
	return rep, addr, nil
}

// syncRemoval makes a removal in dir durable (syncDir). It is a variable
// so that tests can watch it.
var syncRemoval = syncDir

// recoverRaftAddr is the Raft address the agent will listen at and tell
// its peers: the advertise address or the bind address, with the Raft
// port, as raftstore's TCP stream layer has it.
func recoverRaftAddr(cfg Config) (string, error) {
	if cfg.RaftPort == 0 {
		return "", fmt.Errorf("raft_port is 0 (a free port picked at start): give the port the agent listens at, --raft-port, so that its peers can reach it")
	}
	host := cfg.AdvertiseAddr
	if host == "" {
		host = cfg.BindAddr
		if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
			return "", fmt.Errorf("bind %s is every address: give the address its peers reach it at, --advertise", host)
		}
	}
	return net.JoinHostPort(host, strconv.Itoa(cfg.RaftPort)), nil
}
