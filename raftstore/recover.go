package raftstore

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/hashicorp/raft"
)

// Outage recovery. A cluster that has lost a majority of its voters for
// good (their machines or disks are gone) has no leader and can elect
// none: every write, every membership change, `raft remove-peer` and the
// reap of the dead agents need one. Recover is the way out, as Consul's
// peers.json and etcd's --force-new-cluster are: run on the stopped agent
// whose log goes furthest, it rewrites that agent's Raft state into a
// cluster whose only voter is the agent itself, keeping everything its
// replica holds (hashicorp/raft's RecoverCluster: the log is replayed into
// a snapshot that carries the new configuration, then the log is
// compacted). Started again, the agent leads at once; new agents, or the
// old ones with empty data dirs, join it. Entries that were in its log but
// not yet committed when the others were lost become committed: nothing
// else can be known once a majority is gone.
//
// Recovery also gives the cluster a new id (and agent secret). The agents
// that were given up for lost may come back with their data dirs after
// all: they may have gone on electing and writing among themselves, in
// the same terms the recovered agent now uses, so their logs can hold
// entries with the index and term of the recovered log's and other
// contents, which Raft would take as equal and keep. With the old id they
// are refused by gossip and by the Raft hello, and say why; emptied, they
// join as new agents.

// RecoverReport says what Recover found and, unless it was a dry run, did.
type RecoverReport struct {
	// Previous is the Raft configuration before.
	Previous []Server
	// LastIndex and LastTerm end the agent's log (or its last snapshot).
	LastIndex, LastTerm uint64
	// Revision, Instances and Blobs describe the registry the agent kept,
	// after its whole log was replayed (not filled in by a dry run).
	Revision  uint64
	Instances int
	Blobs     int
	// ClusterID is the cluster's new id and PreviousClusterID the one it
	// had: agents that kept Raft state from before recovery hold the
	// previous one and are refused (not filled in by a dry run; the
	// previous one empty for a cluster whose first leader never wrote its
	// identity, which gets one).
	ClusterID, PreviousClusterID string
}

// ErrNoRaftState is returned by Recover for a data dir without Raft state.
var ErrNoRaftState = errors.New("no Raft state to recover")

// Recover rewrites the Raft state in cfg.Dir so that self is the cluster's
// only voter (see above). With dryRun it changes nothing in cfg.Dir, and
// reports; it reads a copy of the Raft state (recover_dryrun.go), so it
// needs room for one in $TMPDIR. The store must not be open: the caller
// holds the data dir's lock.
func Recover(cfg Config, self Server, dryRun bool) (RecoverReport, error) {
	var rep RecoverReport
	cfg.fill()
	if cfg.NodeID == "" || self.ID != cfg.NodeID || self.Address == "" {
		return rep, fmt.Errorf("%w: recover needs this agent's name and Raft address (got %q at %q)", ErrInvalidArgument, self.ID, self.Address)
	}
	if _, err := os.Stat(filepath.Join(cfg.Dir, legacyLogFile)); err == nil {
		return rep, fmt.Errorf("%w: %s holds a Raft log from before raft-wal; start the agent once (it migrates the log at start), stop it, then recover",
			ErrInvalidArgument, filepath.Join(cfg.Dir, legacyLogFile))
	}
	walDir := filepath.Join(cfg.Dir, walDirName)
	if _, err := os.Stat(walDir); errors.Is(err, fs.ErrNotExist) {
		return rep, fmt.Errorf("%w in %s (no %s): this agent never joined a cluster, or lost its log", ErrNoRaftState, cfg.Dir, walDirName)
	}
	if !dryRun {
		return recoverIn(cfg, self, false)
	}
	// Opening the log and the snapshot store writes: a dry run opens a
	// copy (recover_dryrun.go).
	tmp, err := copyRaftState(cfg.Dir)
	if err != nil {
		return rep, err
	}
	defer os.RemoveAll(tmp)
	at := cfg.Dir
	cfg.Dir = tmp
	if rep, err = recoverIn(cfg, self, true); err != nil {
		return rep, &movedErr{err: err, copy: tmp, at: at}
	}
	return rep, nil
}

// recoverIn is Recover on the Raft state in cfg.Dir once it is known to
// be there.
func recoverIn(cfg Config, self Server, dryRun bool) (RecoverReport, error) {
	var rep RecoverReport
	logs, err := openLog(logOptions{Dir: filepath.Join(cfg.Dir, walDirName), Member: cfg.NodeID, Logger: cfg.Logger})
	if err != nil {
		return rep, err
	}
	defer logs.Close()
	snaps, err := raft.NewFileSnapshotStoreWithLogger(cfg.Dir, cfg.RetainSnapshots, NewHCLog(cfg.Logger, "snapshot"))
	if err != nil {
		return rep, fmt.Errorf("open snapshot store in %s: %w", cfg.Dir, err)
	}
	has, err := raft.HasExistingState(logs, logs, snaps)
	if err != nil {
		return rep, fmt.Errorf("read raft state in %s: %w", cfg.Dir, err)
	}
	if !has {
		return rep, fmt.Errorf("%w in %s", ErrNoRaftState, cfg.Dir)
	}
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.NodeID)
	rc.Logger = NewHCLog(cfg.Logger, "raft")
	_, trans := raft.NewInmemTransport(raft.ServerAddress(self.Address))
	defer trans.Close()

	previous, err := raft.GetConfiguration(rc, newFSM(0, 0), logs, logs, snaps, trans)
	if err != nil {
		return rep, fmt.Errorf("read the Raft configuration in %s: %w", cfg.Dir, err)
	}
	rep.Previous = serversOf(previous)
	if rep.LastIndex, rep.LastTerm, err = lastEntry(logs, snaps); err != nil {
		return rep, err
	}
	if dryRun {
		return rep, nil
	}
	fsm := &recoveringFSM{FSM: newFSM(0, 0)}
	sole := raft.Configuration{Servers: []raft.Server{{Suffrage: raft.Voter, ID: raft.ServerID(self.ID), Address: raft.ServerAddress(self.Address)}}}
	if err := raft.RecoverCluster(rc, fsm, logs, logs, snaps, trans, sole); err != nil {
		return rep, fmt.Errorf("recover the Raft state in %s: %w", cfg.Dir, err)
	}
	if fsm.err != nil {
		return rep, fmt.Errorf("recover the Raft state in %s: %w", cfg.Dir, fsm.err)
	}
	// A commit index a leader told this agent before (votegate.go) is one
	// of the history recovery gives up: kept, it would refuse the votes of
	// the recovered cluster's candidates until its log grew past it.
	if err := keepCommitted(logs, committedEntry{}); err != nil {
		return rep, fmt.Errorf("recovered the Raft state in %s, but could not clear the commit index kept for the vote gate (run the recovery again): %w", cfg.Dir, err)
	}
	rep.Revision, rep.Instances, rep.Blobs = fsm.Revision(), fsm.InstanceCount(), fsm.BlobCount()
	rep.PreviousClusterID, rep.ClusterID = fsm.previous, fsm.ClusterID()
	return rep, nil
}

// recoveringFSM is the state machine RecoverCluster replays the log into:
// once it has, and before the snapshot that carries the new configuration
// is taken, the cluster gets a new identity (FSM.renewIdentity).
type recoveringFSM struct {
	*FSM
	renewed  bool
	previous string
	err      error
}

func (r *recoveringFSM) Snapshot() (raft.FSMSnapshot, error) {
	if !r.renewed {
		r.renewed = true
		if r.previous, _, r.err = r.FSM.renewIdentity(); r.err != nil {
			return nil, r.err
		}
	}
	return r.FSM.Snapshot()
}

// lastEntry returns the index and term of the last entry in the log, or of
// the newest snapshot when the log is empty.
func lastEntry(logs raft.LogStore, snaps raft.SnapshotStore) (index, term uint64, err error) {
	if index, err = logs.LastIndex(); err != nil {
		return 0, 0, fmt.Errorf("read the Raft log: %w", err)
	}
	if index > 0 {
		var l raft.Log
		if err := logs.GetLog(index, &l); err != nil {
			return 0, 0, fmt.Errorf("read Raft log entry %d: %w", index, err)
		}
		return l.Index, l.Term, nil
	}
	metas, err := snaps.List()
	if err != nil || len(metas) == 0 {
		return 0, 0, err
	}
	return metas[0].Index, metas[0].Term, nil
}
