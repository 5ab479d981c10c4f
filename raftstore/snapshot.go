package raftstore

import (
	"bytes"
	"errors"
	"fmt"
	"io"

	"github.com/hashicorp/raft"

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
	requests  []*pb.RequestRecord
	// requestClock is the request log's clock (RequestRecord times age
	// against it); requestLast the time of the last command applied.
	requestClock, requestLast int64
	blobs                     []*pb.Blob
	pending                   []*pb.BlobPending
	cluster                   *pb.ClusterInit

	aclBootstrapped bool
	aclPolicies     []*pb.ACLPolicy
	aclTokens       []*pb.ACLToken
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
	for _, r := range s.requests {
		sw.Write(r)
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

// readSnapshot reads a state stream and checks what its records mean.
func readSnapshot(r io.Reader) (*fsmSnapshot, error) {
	s := &fsmSnapshot{}
	var hdr *pb.SnapshotHeader
	// The state machine keys nodes, sessions, pending blobs and policies
	// by name or id: a record without one, or repeating one, is not of a
	// state it could hold.
	nodes, sessions, pending := make(map[string]bool), make(map[string]bool), make(map[string]bool)
	policies := make(map[string]bool)
	accessors, hashes := make(map[string]bool), make(map[string]bool)
	blobNames, blobIDs := make(map[string]bool), make(map[string]bool)
	err := snapshot.ReadState(r, snapshot.StateRecords{
		Header: func(h *pb.SnapshotHeader) error {
			hdr = h
			s.revision, s.cluster, s.requestClock, s.requestLast, s.aclBootstrapped = h.Revision, h.Cluster, h.RequestClock, h.RequestLastTime, h.AclBootstrapped
			// Counts come from the file: they size nothing past a bound,
			// and the slices grow as records arrive.
			s.nodes = make([]*pb.Node, 0, min(h.Nodes, 1<<16))
			s.sessions = make([]*pb.Session, 0, min(h.Sessions, 1<<20))
			s.instances = make([]instanceRecord, 0, min(h.Instances, 1<<20))
			s.requests = make([]*pb.RequestRecord, 0, min(h.Requests, maxRequestIDs))
			if s.cluster == nil {
				return nil
			}
			return checkClusterInit(s.cluster)
		},
		Node: appendTo(&s.nodes, func(n *pb.Node) error {
			return checkKey(nodes, "node name", n.Name)
		}),
		Session: appendTo(&s.sessions, func(ss *pb.Session) error {
			return checkKey(sessions, "session id", ss.Id)
		}),
		InstanceBytes: func(inst *pb.Instance, enc []byte) error {
			if err := checkSnapshotInstance(inst, sessions, hdr.Revision); err != nil {
				return err
			}
			s.instances = append(s.instances, instanceRecord{inst.Service, inst.Id, storedFrom(nil, inst, bytes.Clone(enc))})
			return nil
		},
		Request: appendTo(&s.requests, func(r *pb.RequestRecord) error {
			// The request log never remembers a request without an id.
			if r.Id == "" {
				return errors.New("the request record has no id")
			}
			return nil
		}),
		Blob: appendTo(&s.blobs, func(b *pb.Blob) error {
			if b.Name == "" || b.Id == "" {
				return errors.New("the blob has no name or id")
			}
			// The state machine finds a blob by either: one shared would
			// leave the other unreachable by it (and its shards
			// unreferenced) once the first is deleted.
			if blobNames[b.Name] || blobIDs[b.Id] {
				return fmt.Errorf("blob %q (id %s): its name or id is repeated", b.Name, b.Id)
			}
			blobNames[b.Name], blobIDs[b.Id] = true, true
			return checkBlobShape(b)
		}),
		PendingBlob: appendTo(&s.pending, func(p *pb.BlobPending) error {
			if err := checkKey(pending, "pending blob id", p.Id); err != nil {
				return err
			}
			if p.Node == "" {
				return fmt.Errorf("pending blob %s has no node", p.Id)
			}
			return nil
		}),
		ACLPolicy: appendTo(&s.aclPolicies, func(p *pb.ACLPolicy) error {
			return checkKey(policies, "policy name", p.Name)
		}),
		ACLToken: appendTo(&s.aclTokens, func(t *pb.ACLToken) error {
			if err := checkToken("token", t); err != nil {
				return err
			}
			if accessors[t.AccessorId] || hashes[string(t.SecretHash)] {
				return errors.New("accessor id or secret repeated")
			}
			accessors[t.AccessorId], hashes[string(t.SecretHash)] = true, true
			return nil
		}),
	})
	if err != nil {
		return nil, err
	}
	return s, nil
}

// appendTo returns a function that appends each record it is given to
// *list once check, if any, accepts it.
func appendTo[M any](list *[]M, check ...func(M) error) func(M) error {
	return func(m M) error {
		for _, c := range check {
			if err := c(m); err != nil {
				return err
			}
		}
		*list = append(*list, m)
		return nil
	}
}

// checkKey refuses a record whose key (what names it, such as "session
// id") is empty or in seen, and adds key to seen.
func checkKey(seen map[string]bool, what, key string) error {
	if key == "" {
		return fmt.Errorf("the %s is empty", what)
	}
	if seen[key] {
		return fmt.Errorf("the %s %q is repeated", what, key)
	}
	seen[key] = true
	return nil
}

// checkSnapshotInstance checks an instance of a snapshot at revision rev
// whose sessions so far are sessions.
func checkSnapshotInstance(inst *pb.Instance, sessions map[string]bool, rev uint64) error {
	if inst.Service == "" || inst.Id == "" {
		return errors.New("the instance has no service or id")
	}
	// An instance never outlives its session (the state machine removes
	// them together).
	if inst.Session != "" && !sessions[inst.Session] {
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
