package node

import (
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// dataDir is an agent's data directory, held under an exclusive lock for as
// long as the agent runs. Layout:
//
//	LOCK          flock'd; holds the owner's pid
//	node-id       the agent name the directory belongs to
//	cluster-id    the id of the cluster the agent belongs to
//	raft/         wal/ (the Raft log and stable store: raft-wal segments
//	              and wal-meta.db), snapshots/; raft.db is the log of
//	              agents from before raft-wal, migrated to wal/ at start
//	              and kept as raft.db.migrated until the next snapshot
//	peers.json    gossip addresses of the last known peers
//	gossip-keyring the gossip encryption keys (package gossip keeps it)
//	shards/       blob shard files
type dataDir struct {
	path string
	lock *os.File
	// clusterID is what cluster-id held when the directory was opened
	// ("" if there was none); it is not changed afterwards.
	clusterID string
}

const (
	lockFile      = "LOCK"
	nodeIDFile    = "node-id"
	clusterIDFile = "cluster-id"
	raftDirName   = "raft"
	raftDBFile    = "raft.db" // the Raft log before raft-wal
	raftWALDir    = "wal"
	shardsDirName = "shards"
	// tmpSuffix names the temporary file writeFileSync renames.
	tmpSuffix = ".tmp"
)

// openDataDir creates or opens dir for the agent called name. It refuses a
// directory another agent holds, one that belongs to another name, a
// non-empty directory that zrpc did not create, and one that shows the
// agent belonged to a cluster but has lost its Raft state, and writes
// nothing in them.
func openDataDir(dir, name string) (*dataDir, error) {
	if err := ensureDataDir(dir); err != nil {
		return nil, err
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("read data dir: %w", err)
	}
	hasID, foreign := false, false
	for _, e := range entries {
		switch e.Name() {
		case nodeIDFile:
			hasID = true
		case lockFile, nodeIDFile + tmpSuffix:
			// Left by a first start that stopped before it recorded its
			// name (a full disk, a crash): the directory is still new.
		default:
			foreign = true
		}
	}
	if !hasID && foreign {
		return nil, fmt.Errorf("data dir %s is not empty and was not created by zrpcd (no %s file); choose an empty or new --data-dir", dir, nodeIDFile)
	}
	d := &dataDir{path: dir}
	if err := d.acquire(); err != nil {
		return nil, err
	}
	claimed, err := d.checkOwner(name)
	if err != nil {
		d.close()
		return nil, err
	}
	if err := d.readClusterID(); err != nil {
		d.close()
		return nil, err
	}
	if err := d.checkRaftState(name, !claimed); err != nil {
		d.close()
		return nil, err
	}
	return d, nil
}

func (d *dataDir) readClusterID() error {
	p := filepath.Join(d.path, clusterIDFile)
	b, err := os.ReadFile(p)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return nil
	case err != nil:
		return fmt.Errorf("read %s: %w", p, err)
	}
	id := strings.TrimSpace(string(b))
	if id != "" && !isClusterID(id) {
		return fmt.Errorf("%s holds %.80q, not a cluster id (%d hex digits): the file is damaged. "+
			"If %s holds this agent's Raft log, remove %s and start the agent again: it records its cluster's id again once it has applied its log",
			p, id, 2*clusterIDBytes, filepath.Join(d.path, raftDirName), p)
	}
	d.clusterID = id
	return nil
}

// clusterIDBytes is the length of a cluster id (raftstore.NewClusterInit:
// 16 random bytes, written as 32 hex digits).
const clusterIDBytes = 16

// isClusterID reports whether id is written as a cluster id is.
func isClusterID(id string) bool {
	b, err := hex.DecodeString(id)
	return err == nil && len(b) == clusterIDBytes
}

// writeClusterID records the cluster the agent belongs to (fsync'd, through
// a temporary file and a rename).
func (d *dataDir) writeClusterID(id string) error {
	return writeFileSync(filepath.Join(d.path, clusterIDFile), []byte(id+"\n"))
}

// checkRaftState refuses a directory whose Raft log is gone while the rest
// of it shows that the agent belonged to a cluster: a node id from an
// earlier start (which created the log right after writing it), a cluster
// id, peers it gossiped with, shards it held or Raft snapshots. Starting
// would let the agent bootstrap a cluster of its own (or vote again in
// terms it already voted in) and then collect its shards as orphans. Raft
// state cannot be rebuilt locally; the agent has to rejoin as a new member.
// The log is raft/wal/, or raft/raft.db of an agent from before raft-wal
// (which raftstore migrates).
func (d *dataDir) checkRaftState(name string, startedBefore bool) error {
	for _, log := range []string{raftWALDir, raftDBFile} {
		p := filepath.Join(d.path, raftDirName, log)
		if _, err := os.Stat(p); err == nil {
			return nil
		} else if !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("stat %s: %w", p, err)
		}
	}
	var evidence []string
	if startedBefore {
		evidence = append(evidence, nodeIDFile)
	}
	if d.clusterID != "" {
		evidence = append(evidence, clusterIDFile)
	}
	if _, err := os.Stat(filepath.Join(d.path, peersFile)); err == nil {
		evidence = append(evidence, peersFile)
	}
	if n := countFiles(filepath.Join(d.path, shardsDirName)); n > 0 {
		evidence = append(evidence, fmt.Sprintf("%d files under %s/", n, shardsDirName))
	}
	if n := countFiles(filepath.Join(d.path, raftDirName, "snapshots")); n > 0 {
		evidence = append(evidence, "Raft snapshots")
	}
	if len(evidence) == 0 {
		return nil
	}
	return d.lostRaftLog(name, "is missing", evidence)
}

// lostRaftLog is the error of an agent that belonged to a cluster and has
// lost its Raft log (how says what happened to it): it says how to rejoin.
func (d *dataDir) lostRaftLog(name, how string, evidence []string) error {
	cluster := "a cluster"
	if d.clusterID != "" {
		cluster = "cluster " + d.clusterID
	}
	return fmt.Errorf("data dir %s shows agent %q belonged to %s (%s) but its Raft log (%s, or %s before raft-wal) %s; "+
		"it will not start a cluster of its own and has changed nothing. "+
		"To rejoin as a new member: run `zrpcctl raft remove-peer %s` against a running agent of the cluster, "+
		"move %s aside (repair rebuilds its shards elsewhere), and start this agent with an empty --data-dir and `zrpcd agent join ADDR`",
		d.path, name, cluster, strings.Join(evidence, ", "), filepath.Join(d.path, raftDirName, raftWALDir),
		filepath.Join(d.path, raftDirName, raftDBFile), how, name, d.path)
}

// countFiles counts the regular files under dir (0 if it does not exist).
func countFiles(dir string) int {
	n := 0
	filepath.WalkDir(dir, func(_ string, e os.DirEntry, err error) error {
		if err == nil && e.Type().IsRegular() {
			n++
		}
		return nil
	})
	return n
}

func (d *dataDir) acquire() error {
	p := filepath.Join(d.path, lockFile)
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("lock data dir %s: %w; the agent's user must be able to write the data dir (check its owner and mode), or choose another --data-dir", d.path, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		owner, _ := os.ReadFile(p)
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return fmt.Errorf("data dir %s is in use by another zrpcd (pid %s); stop it or choose another --data-dir",
				d.path, strings.TrimSpace(string(owner)))
		}
		return fmt.Errorf("lock data dir %s: %w", d.path, err)
	}
	if err := f.Truncate(0); err == nil {
		f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	d.lock = f
	return nil
}

// checkOwner makes sure the directory belongs to name, claiming it if new;
// claimed reports whether it did.
func (d *dataDir) checkOwner(name string) (claimed bool, err error) {
	p := filepath.Join(d.path, nodeIDFile)
	b, err := os.ReadFile(p)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return true, writeFileSync(p, []byte(name+"\n"))
	case err != nil:
		return false, fmt.Errorf("read %s: %w", p, err)
	}
	owner := strings.TrimSpace(string(b))
	if !nameRE.MatchString(owner) {
		return false, fmt.Errorf("%s holds %.80q, not an agent name: the file is damaged. "+
			"If this data dir is agent %s's, write its name into the file (echo %s > %s) and start it again; otherwise choose another --data-dir",
			p, owner, name, name, p)
	}
	if owner != name {
		return false, fmt.Errorf("data dir %s belongs to agent %q, not %q; start with --name %s or choose another --data-dir",
			d.path, owner, name, owner)
	}
	return false, nil
}

func (d *dataDir) close() error {
	if d.lock == nil {
		return nil
	}
	err := d.lock.Close() // closing releases the flock
	d.lock = nil
	return err
}

// writeFileSync writes a new file through a temp name, fsyncs and renames,
// so a crash never leaves a half-written file under the real name.
func writeFileSync(path string, data []byte) error {
	tmp := path + tmpSuffix
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("sync %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("rename %s: %w", path, err)
	}
	return syncDir(filepath.Dir(path))
}

// syncDir makes a rename in dir durable.
func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open %s: %w", dir, err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}

// ensureDataDir creates the data dir if need be; its error says what the
// path is instead, and what to do.
func ensureDataDir(dir string) error {
	err := os.MkdirAll(dir, 0o700)
	if err == nil {
		return nil
	}
	if target, lerr := os.Readlink(dir); lerr == nil {
		return fmt.Errorf("data dir %s is a symbolic link to %s, which is no directory (%v); point the link at a directory or choose another --data-dir",
			dir, target, err)
	}
	if fi, serr := os.Stat(dir); serr == nil && !fi.IsDir() {
		return fmt.Errorf("data dir %s is a file, not a directory; choose another --data-dir", dir)
	}
	return fmt.Errorf("create data dir %s: %w; create it for the user the agent runs as, or choose another --data-dir", dir, err)
}

func ensureDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	return nil
}

// empty removes everything in the data dir but its LOCK file, which the
// agent holds (not the directory itself): another agent must not lock the
// directory while it is being emptied. Only for a directory this agent's
// failed first start created or found empty (Node.Start): all it holds is
// that start's.
func (d *dataDir) empty() error {
	entries, err := os.ReadDir(d.path)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if e.Name() != lockFile {
			err = errors.Join(err, os.RemoveAll(filepath.Join(d.path, e.Name())))
		}
	}
	return err
}
