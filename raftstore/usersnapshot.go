package raftstore

import (
	"bufio"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/hashicorp/raft"

	"github.com/zrpcio/zrpc/api/apierr"
	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/snapshot"
)

// Operator snapshots (`zrpcctl snapshot save|restore`, scheduled
// snapshots) are snapshot files (package snapshot) around the state
// machine's own snapshot stream, the one raft stores and restores.
//
// A restore goes through raft's user restore: the leader writes the state
// as a new Raft snapshot at an index past its log, restores its FSM from
// it, and followers install it as they would any snapshot. Before that the
// state stream is rebased: its revision becomes that index, so the
// registry's revision stays its Raft index and moves forward (a watcher at
// the cluster's revision before the restore, which may be past the file's,
// resynchronises from a snapshot instead of waiting for revisions it has
// seen), and it keeps the cluster's own identity (id and secret), so that
// a restore into another cluster does not make its agents strangers to
// each other.

// restoreIndexGap is how far past the leader's last log index the restored
// state's index is placed. raft puts a user restore at max(its last index,
// the given index)+1; the gap leaves room for the entries appended between
// reading the last index and raft running the restore, so that the index
// raft picks is the one the state was rebased to.
const restoreIndexGap = 1024

// maxRestoreIndex bounds the Raft index and revision of a file to
// restore: the state is placed past them, and the cluster's log goes on
// from there. No log comes near it; a file that names more is refused
// rather than have the index wrap around.
const maxRestoreIndex = 1 << 62

// defaultRestoreTimeout bounds raft's restore when ctx has no deadline.
const defaultRestoreTimeout = 5 * time.Minute

// ErrNothingToSave: the agent has neither applied anything nor taken a
// snapshot yet.
var ErrNothingToSave = fmt.Errorf("%w: the agent has no state to save yet", apierr.ErrFailedPrecondition)

// WriteSnapshot takes a Raft snapshot of this agent's replica (or, when
// nothing was applied since the last one, uses that one) and writes it to
// w as a snapshot file. It works on any agent; a caller wanting the
// leader's state runs it there.
func (s *Store) WriteSnapshot(ctx context.Context, w io.Writer) (snapshot.Header, error) {
	meta, rc, err := s.openRaftSnapshot()
	if err != nil {
		return snapshot.Header{}, err
	}
	defer rc.Close()
	// The file leaves out the cluster's secret, with which agents prove
	// to each other that they belong: a restore keeps the restoring
	// cluster's own identity, so a backup needs none, and one that
	// leaked would let its holder act as an agent.
	var rev uint64
	state, size, err := snapshot.RewriteStateHeader(bufio.NewReaderSize(rc, 256<<10), uint64(meta.Size), func(h *pb.SnapshotHeader) {
		rev = h.Revision
		if c := h.Cluster; c != nil {
			h.Cluster = &pb.ClusterInit{ClusterId: c.ClusterId, RecoveredFrom: c.RecoveredFrom}
		}
	})
	if err != nil {
		return snapshot.Header{}, fmt.Errorf("read raft snapshot %s: %w", meta.ID, err)
	}
	hdr := snapshot.Header{Index: meta.Index, Term: meta.Term, Revision: rev, Created: time.Now().UTC(), Size: size}
	sw, err := snapshot.NewWriter(w, hdr)
	if err != nil {
		return hdr, err
	}
	if _, err := io.Copy(sw, ctxReader{ctx, state}); err != nil {
		return hdr, fmt.Errorf("copy raft snapshot %s: %w", meta.ID, err)
	}
	if err := sw.Close(); err != nil {
		return hdr, err
	}
	return sw.Header(), nil
}

// openRaftSnapshot has raft take a snapshot and opens it, or opens the
// latest one when there is nothing new to take.
func (s *Store) openRaftSnapshot() (*raft.SnapshotMeta, io.ReadCloser, error) {
	f := s.raft.Snapshot()
	err := f.Error()
	if err == nil {
		return f.Open()
	}
	if !errors.Is(err, raft.ErrNothingNewToSnapshot) {
		return nil, nil, fmt.Errorf("take raft snapshot: %w", RaftError(err))
	}
	list, err := s.snaps.List()
	if err != nil {
		return nil, nil, fmt.Errorf("list raft snapshots: %w", err)
	}
	if len(list) == 0 {
		return nil, nil, ErrNothingToSave
	}
	meta, rc, err := s.snaps.Open(list[0].ID)
	if err != nil {
		return nil, nil, fmt.Errorf("open raft snapshot %s: %w", list[0].ID, err)
	}
	return meta, rc, nil
}

// ctxReader ends a copy when ctx ends.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (r ctxReader) Read(p []byte) (int, error) {
	if err := r.ctx.Err(); err != nil {
		return 0, err
	}
	return r.r.Read(p)
}

// CheckSnapshotFile reads the snapshot file f once, checking its header
// and SHA-256 while it loads its state into a scratch state machine (the
// checks a restore makes). It returns the file's header; a file that
// fails either is refused with InvalidArgument saying why, a damaged file
// as damaged rather than as a state that does not load.
func CheckSnapshotFile(f io.ReadSeeker) (snapshot.Header, error) {
	return CheckSnapshotFileWithin(f, RestoreLimits{})
}

// CheckSnapshotFileWithin is CheckSnapshotFile of a file to be restored,
// whose state must also fit limits: the registry's quotas, a heap budget
// and, where ACLs are on, bootstrapped ACLs (ErrQuotaExceeded,
// ErrRestoreTooLarge, ErrRestoreWithoutACL).
func CheckSnapshotFileWithin(f io.ReadSeeker, limits RestoreLimits) (snapshot.Header, error) {
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return snapshot.Header{}, err
	}
	sr, err := snapshot.NewReader(f)
	if err != nil {
		return snapshot.Header{}, fmt.Errorf("%w: %w", apierr.ErrInvalidArgument, err)
	}
	if h := sr.Header; h.Index > maxRestoreIndex || h.Revision > maxRestoreIndex {
		return h, fmt.Errorf("%w: the snapshot's header names Raft index %d and revision %d, past the %d a restore accepts: the file was not written by zrpc as it is",
			apierr.ErrInvalidArgument, h.Index, h.Revision, uint64(maxRestoreIndex))
	}
	// The file's cluster identity is never restored (the restoring
	// cluster keeps its own), and files leave its secret out: the load
	// goes without it.
	br := bufio.NewReaderSize(sr, 256<<10)
	state, _, lerr := snapshot.RewriteStateHeader(br, sr.Header.Size, func(h *pb.SnapshotHeader) { h.Cluster = nil })
	scratch := NewFSM(1)
	if lerr == nil {
		lerr = scratch.RestoreWithin(io.NopCloser(state), limits)
	}
	if errors.Is(lerr, ErrQuotaExceeded) || errors.Is(lerr, ErrRestoreTooLarge) || errors.Is(lerr, ErrRestoreWithoutACL) {
		// A well-formed file the cluster cannot take: not read further.
		return sr.Header, fmt.Errorf("the snapshot does not fit this cluster: %w; nothing was changed", lerr)
	}
	if _, err := io.Copy(io.Discard, br); err != nil { // to the trailer, whatever the load left
		return sr.Header, fmt.Errorf("%w: %w", apierr.ErrInvalidArgument, err)
	}
	if lerr != nil {
		return sr.Header, fmt.Errorf("%w: the snapshot's state does not load: %w", apierr.ErrInvalidArgument, lerr)
	}
	// A restore places the state past the header's revision; a state
	// further on has instances past the revision it is given, which the
	// state machine refuses once raft has started the restore.
	if rev := scratch.Revision(); rev != sr.Header.Revision {
		return sr.Header, fmt.Errorf("%w: the snapshot's state is at revision %d and its file header says %d: the file was not written by zrpc as it is; save a new snapshot",
			apierr.ErrInvalidArgument, rev, sr.Header.Revision)
	}
	return sr.Header, nil
}

// RestoreSnapshot replaces the cluster's state with the snapshot file f
// through Raft and returns the revision the restored state has. It runs on the
// leader; it checks f (CheckSnapshotFileWithin Config.RestoreLimits)
// before anything changes.
func (s *Store) RestoreSnapshot(ctx context.Context, f io.ReadSeeker) (uint64, error) {
	var limits RestoreLimits
	if s.cfg.RestoreLimits != nil {
		limits = s.cfg.RestoreLimits()
	}
	hdr, err := CheckSnapshotFileWithin(f, limits)
	if err != nil {
		return 0, err
	}
	if s.raft.State() != raft.Leader {
		return 0, ErrNotLeader
	}
	cluster := s.fsm.cluster.get()
	if cluster == nil {
		// Files carry no secret: the restored state takes this cluster's
		// identity, which its first leader is still recording.
		return 0, apierr.NotApplied(fmt.Errorf("%w: the cluster has no identity yet (its first leader is recording it); retry in a moment", ErrNoLeader))
	}
	if _, err := f.Seek(int64(snapshot.HeaderSize), io.SeekStart); err != nil {
		return 0, err
	}
	// Past both the cluster's log and the file's own revisions: the
	// state's instances carry revisions up to the file's.
	index := max(s.raft.LastIndex(), hdr.Index, hdr.Revision) + restoreIndexGap
	state, size, err := rebaseState(bufio.NewReaderSize(io.LimitReader(f, int64(hdr.Size)), 256<<10), hdr.Size, index+1, cluster)
	if err != nil {
		return 0, err
	}
	timeout := defaultRestoreTimeout
	if d, ok := ctx.Deadline(); ok {
		timeout = time.Until(d)
	}
	// raft takes no context, and to raft a timeout of zero or less is
	// none: a caller gone while the file was checked (a large file takes
	// a while) must not have it restored after being told it failed.
	if err := ctx.Err(); err != nil || timeout <= 0 {
		return 0, apierr.NotApplied(fmt.Errorf("restore snapshot: %w", cmp.Or(err, context.DeadlineExceeded)))
	}
	meta := &raft.SnapshotMeta{Version: raft.SnapshotVersionMax, Index: index, Term: hdr.Term, Size: int64(size)}
	if err := s.raft.Restore(meta, state, timeout); err != nil {
		return 0, fmt.Errorf("restore through raft: %w", RaftError(err))
	}
	// The state is at index+1 (the rebased header's revision); writes may
	// have followed it already.
	rev := index + 1
	s.log.Info("restored a snapshot through raft", "file_index", hdr.Index, "file_revision", hdr.Revision, "revision", rev)
	return rev, nil
}

// rebaseState returns the state stream br (of size bytes) with its header
// record's revision set to rev and, when cluster is not nil, its cluster
// identity replaced by cluster; and the new stream's size.
func rebaseState(br *bufio.Reader, size, rev uint64, cluster *pb.ClusterInit) (io.Reader, uint64, error) {
	state, n, err := snapshot.RewriteStateHeader(br, size, func(hdr *pb.SnapshotHeader) {
		hdr.Revision = rev
		if cluster != nil {
			hdr.Cluster = cluster
		}
	})
	if err != nil {
		return nil, 0, fmt.Errorf("%w: %w", apierr.ErrInvalidArgument, err)
	}
	return state, n, nil
}
