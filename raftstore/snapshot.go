package raftstore

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/hashicorp/raft"

	"github.com/zrpcio/zrpc/api/apierr"
	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/snapshot"
)

// The snapshot stream's layout, formats and bounds are package
// snapshot's (stream.go); this file gives its records their meaning.

type fsmSnapshot struct {
	revision  uint64
	instances []instanceRecord
	sessions  []*pb.Session
	nodes     []*pb.Node
	requests  []rememberedResult
	// requestClock is the request log's clock (RequestRecord times age
	// against it); requestLast the time of the last command applied.
	requestClock, requestLast int64
	blobs                     []*pb.Blob
	pending                   []*pb.BlobPending
	cluster                   *pb.ClusterInit

	aclBootstrapped bool
	aclPolicies     []*pb.ACLPolicy
	aclTokens       []*pb.ACLToken

	// hash is the apply hash at revision, when hashKnown (applyhash.go).
	hash      uint64
	hashKnown bool
}

// hasACL reports whether the snapshot holds ACL state.
func (s *fsmSnapshot) hasACL() bool {
	return s.aclBootstrapped || len(s.aclPolicies) > 0 || len(s.aclTokens) > 0
}

// Persist writes the snapshot to sink; raft calls it off the FSM goroutine.
func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	if err := s.write(sink); err != nil {
		sink.Cancel()
		return fmt.Errorf("persist registry snapshot: %w", err)
	}
	return sink.Close()
}

func (s *fsmSnapshot) write(w io.Writer) error {
	// Sorted, the file is the same on every replica at a revision, and
	// Restore finds each service's instances together.
	sortRecords(s.instances)
	hdr := &pb.SnapshotHeader{
		Revision:        s.revision,
		Nodes:           uint64(len(s.nodes)),
		Sessions:        uint64(len(s.sessions)),
		Instances:       uint64(len(s.instances)),
		Requests:        uint64(len(s.requests)),
		Blobs:           uint64(len(s.blobs)),
		PendingBlobs:    uint64(len(s.pending)),
		Cluster:         s.cluster,
		RequestClock:    s.requestClock,
		RequestLastTime: s.requestLast,
		ApplyHash:       s.hash,
		ApplyHashKnown:  s.hashKnown,
	}
	if s.hasACL() {
		hdr.AclBootstrapped = s.aclBootstrapped
		hdr.AclPolicies = uint64(len(s.aclPolicies))
		hdr.AclTokens = uint64(len(s.aclTokens))
	}
	sw := snapshot.NewStateWriter(w, hdr)
	for _, n := range s.nodes {
		sw.Write(n)
	}
	for _, ss := range s.sessions {
		sw.Write(ss)
	}
	for _, r := range s.instances {
		sw.WriteEncoded("Instance", r.stored.enc)
	}
	var rec pb.RequestRecord // Write encodes it at once: one serves them all
	for _, r := range s.requests {
		r.record(&rec)
		sw.Write(&rec)
	}
	for _, b := range s.blobs {
		sw.WriteBlob(b)
	}
	for _, p := range s.pending {
		sw.Write(p)
	}
	for _, p := range s.aclPolicies {
		sw.Write(p)
	}
	for _, t := range s.aclTokens {
		sw.Write(t)
	}
	return sw.Close()
}

// Release is a no-op: the snapshot holds only immutable pointers.
func (s *fsmSnapshot) Release() {}

// loadSnapshot reads a state stream into next, an empty state machine
// apart from the replica (so that a snapshot refused or broken halfway
// leaves the replica as it was), checking what its records mean, and
// returns the cluster identity it holds. Records go straight into next's
// maps, which are also what finds a repeated key: a restore holds the
// state it loads and little else. Of the request records only those the
// request log keeps are held (the newest maxRequestIDs), however many the
// stream has.
func loadSnapshot(r io.Reader, next *FSM, limits RestoreLimits) (*pb.ClusterInit, error) {
	var cluster *pb.ClusterInit
	var rev uint64
	var heap int64 // restoreHeap of the records read
	a := &next.acl
	err := snapshot.ReadState(r, snapshot.StateRecords{
		Sized: func(size int) error {
			if heap += restoreHeap(size); limits.HeapBytes > 0 && heap > limits.HeapBytes {
				return fmt.Errorf("%w: its state takes more than the %d bytes of heap this agent lets a restore load; restore a smaller snapshot, or raise the agent's restore heap limit",
					ErrRestoreTooLarge, limits.HeapBytes)
			}
			return nil
		},
		Header: func(h *pb.SnapshotHeader) error {
			if limits.ACL && !h.AclBootstrapped {
				return ErrRestoreWithoutACL
			}
			rev, cluster = h.Revision, h.Cluster
			next.revision, next.acl.bootstrapped = h.Revision, h.AclBootstrapped
			next.applied.Store(h.Revision)
			next.requests.clock, next.requests.last = h.RequestClock, h.RequestLastTime
			next.hash.start(h.Revision, h.ApplyHash, h.ApplyHashKnown)
			if cluster == nil {
				return nil
			}
			return checkClusterInit(cluster)
		},
		// The state machine keys nodes, sessions, pending blobs and
		// policies by name or id: a record without one, or repeating one,
		// is not of a state it could hold.
		Node: func(n *pb.Node) error {
			return putKeyed(next.nodes, "node name", n.Name, n)
		},
		Session: func(ss *pb.Session) error {
			return putKeyed(next.sessions, "session id", ss.Id, ss)
		},
		InstanceBytes: func(inst *pb.Instance, enc []byte) error {
			if err := checkSnapshotInstance(inst, next.sessions, rev); err != nil {
				return err
			}
			service := next.shared.string(inst.Service)
			next.store(service, inst.Id, storedFrom(next.shared, inst, bytes.Clone(enc)))
			return checkRestoreQuota(next, limits.Quota, service, inst)
		},
		Request: func(rec *pb.RequestRecord) error {
			// The request log never remembers a request without an id.
			if rec.Id == "" {
				return errors.New("the request record has no id")
			}
			// Records come oldest first: past the log's bound the oldest
			// are forgotten as the newer arrive, as they were when the log
			// was written.
			next.requests.putAt(rec.Id, Duplicate{Revision: rec.Revision, Err: requestErr(rec)}, rec.Time)
			return nil
		},
		Blob: func(b *pb.Blob) error {
			if b.Name == "" || b.Id == "" {
				return errors.New("the blob has no name or id")
			}
			// The state machine finds a blob by either: one shared would
			// leave the other unreachable by it (and its shards
			// unreferenced) once the first is deleted.
			if next.blobs.byName[b.Name] != nil || next.blobs.byID[b.Id] != nil {
				return fmt.Errorf("blob %q (id %s): its name or id is repeated", b.Name, b.Id)
			}
			if err := checkBlobShape(b); err != nil {
				return err
			}
			next.blobs.put(b)
			return nil
		},
		PendingBlob: func(p *pb.BlobPending) error {
			if p.Id != "" && p.Node == "" {
				return fmt.Errorf("pending blob %s has no node", p.Id)
			}
			return putKeyed(next.blobs.pending, "pending blob id", p.Id, p)
		},
		ACLPolicy: func(p *pb.ACLPolicy) error {
			return putKeyed(a.policies, "policy name", p.Name, p)
		},
		ACLToken: func(t *pb.ACLToken) error {
			if err := checkToken("token", t); err != nil {
				return err
			}
			if a.tokens[t.AccessorId] != nil || a.byHash[string(t.SecretHash)] != nil {
				return errors.New("accessor id or secret repeated")
			}
			a.putToken(t)
			return nil
		},
	})
	return cluster, err
}

// ErrRestoreWithoutACL: a snapshot restored through the API on an agent
// with ACLs on holds no bootstrapped ACL state (RestoreLimits.ACL).
var ErrRestoreWithoutACL = fmt.Errorf("%w: the snapshot was saved before ACLs were bootstrapped: restored here, where ACLs are on, it would leave no token, "+
	"and the first caller of `zrpcctl acl bootstrap` would hold the cluster; bootstrap ACLs on the cluster it came from and save it again, or restore it where ACLs are off",
	apierr.ErrFailedPrecondition)

// ErrRestoreTooLarge: a snapshot restored through the API holds more
// state than the agent's restore limit (RestoreLimits.HeapBytes).
var ErrRestoreTooLarge = fmt.Errorf("%w: the snapshot is larger than a restore may load", apierr.ErrTooLarge)

// restoreHeap estimates the heap a record of size encoded bytes takes
// once the state machine holds it: its message or encoding, the strings
// decoded from it and its entries in the state's maps. It is calibrated
// on the records a restore holds most of (TestRestoreHeapEstimate): many
// short ones cost up to about ten times their size, almost all of it a
// fixed cost per record.
func restoreHeap(size int) int64 { return 256 + 3*int64(size) }

// checkRestoreQuota holds the instance inst of service, just loaded into
// next, to the registry's limits q (nil: none), as a registration is held
// to them.
func checkRestoreQuota(next *FSM, q *pb.Quota, service string, inst *pb.Instance) error {
	if q == nil {
		return nil
	}
	if limit := q.MaxInstanceMetadataBytes; limit > 0 {
		if n := MetadataBytes(inst); n > int(limit) {
			return quotaErr("max_instance_metadata_bytes", "instance %s/%s of the snapshot carries %d bytes of version, tags and metadata, the limit is %d",
				inst.Service, inst.Id, n, limit)
		}
	}
	if limit := q.MaxInstancesPerService; limit > 0 && len(next.services[service]) > int(limit) {
		return quotaErr("max_instances_per_service", "the snapshot holds more than %d instances of service %s", limit, service)
	}
	if limit := q.MaxInstancesPerSession; limit > 0 && inst.Session != "" && next.quota.bySession[inst.Session] > int(limit) {
		return quotaErr("max_instances_per_session", "the snapshot holds more than %d instances of session %s", limit, inst.Session)
	}
	if limit := q.MaxRegistryBytes; limit > 0 && next.quota.registryBytes(len(next.services)) > int64(limit) {
		return quotaErr("max_registry_bytes", "the snapshot's instances (%d so far, of %d services) take more than the %d bytes the registry may hold, counted as registrations are",
			next.quota.instances, len(next.services), limit)
	}
	return nil
}

// putKeyed stores m in seen under key, refusing a record whose key (what
// names it, such as "session id") is empty or already in seen.
func putKeyed[M any](seen map[string]M, what, key string, m M) error {
	if key == "" {
		return fmt.Errorf("the %s is empty", what)
	}
	if _, ok := seen[key]; ok {
		return fmt.Errorf("the %s %q is repeated", what, key)
	}
	seen[key] = m
	return nil
}

// checkSnapshotInstance checks an instance of a snapshot at revision rev
// whose sessions so far are sessions.
func checkSnapshotInstance(inst *pb.Instance, sessions map[string]*pb.Session, rev uint64) error {
	if inst.Service == "" || inst.Id == "" {
		return errors.New("the instance has no service or id")
	}
	// An instance never outlives its session (the state machine removes
	// them together).
	if inst.Session != "" && sessions[inst.Session] == nil {
		return fmt.Errorf("instance %s/%s is bound to session %q, which the snapshot does not have",
			inst.Service, inst.Id, inst.Session)
	}
	// Every instance was written at a revision the snapshot covers.
	if inst.CreateRevision == 0 || inst.CreateRevision > inst.ModRevision || inst.ModRevision > rev {
		return fmt.Errorf("instance %s/%s: create_revision %d and mod_revision %d do not fit a snapshot at revision %d",
			inst.Service, inst.Id, inst.CreateRevision, inst.ModRevision, rev)
	}
	return nil
}

// Restore replaces the state with a snapshot. The snapshot is loaded
// apart and replaces the state only once all of it is loaded and checked:
// a snapshot refused, or whose stream breaks halfway, leaves the state as
// it was. Watchers are told to resynchronise. Raft calls it with its
// leader's state, which is the cluster's whatever its size: it applies
// no RestoreLimits.
func (f *FSM) Restore(rc io.ReadCloser) error { return f.RestoreWithin(rc, RestoreLimits{}) }

// RestoreLimits bound what a snapshot brought to the cluster from outside
// (a restore through the API) may hold.
type RestoreLimits struct {
	// HeapBytes, when not 0, bounds the heap the loaded state may take,
	// as restoreHeap estimates it from its records' sizes: a larger
	// snapshot is refused once the records read pass it, before the
	// state changes and before the rest is loaded.
	HeapBytes int64
	// Quota, when not nil, holds the snapshot's instances to the
	// registry's limits, together as registrations are held to them.
	Quota *pb.Quota
	// ACL: the agent enforces ACLs, and a state whose ACLs were never
	// bootstrapped is refused (ErrRestoreWithoutACL): restored, it would
	// hold no token, and the first caller of ACL.Bootstrap would take the
	// cluster.
	ACL bool
}

// RestoreWithin is Restore of a snapshot held to limits.
func (f *FSM) RestoreWithin(rc io.ReadCloser, limits RestoreLimits) error {
	defer rc.Close()
	next := &FSM{requests: newRequestLog(time.Duration(f.requests.window), f.requests.max)}
	next.reset()
	cluster, err := loadSnapshot(rc, next, limits)
	if err != nil {
		return fmt.Errorf("restore registry snapshot: %w", err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.revision = next.revision
	f.applied.Store(f.revision)
	f.cluster.set(cluster)
	f.services, f.sessions, f.nodes, f.checked, f.peaks, f.shared = next.services, next.sessions, next.nodes, next.checked, next.peaks, next.shared
	f.blobs, f.quota, f.requests = next.blobs, next.quota, next.requests
	for i := range f.health.n {
		f.health.n[i].Store(next.health.n[i].Load())
	}
	f.acl.adopt(&next.acl)
	f.hash = next.hash
	f.events.compactTo(f.revision)
	return nil
}
