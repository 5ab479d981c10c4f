package raftstore

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/encoding/protodelim"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/snapshot"
)

// Snapshot file layout: a magic line, then length-delimited protobuf
// messages: one SnapshotHeader with the counts, then that many Nodes,
// Sessions, Instances, RequestRecords (oldest first), blobs and
// BlobPendings, in that order. A blob is a SnapshotBlob (its metadata
// without blocks) followed by its BlobBlock records, so a record's size
// does not grow with a blob's: a 64 GiB blob of 1 MiB blocks has 65,536
// small block records.
//
// Format 3 adds the ACL state after the pending blobs: that many
// ACLPolicy and then ACLToken records (tokens with their secrets' hashes
// only). It is written only when there is ACL state, so agents of a
// release before ACLs keep reading the snapshots of a cluster that does
// not use them, and refuse (rather than silently drop) one that does.
// Snapshots of format 1 and 2 restore with no ACL state.
//
// Format 1, still read, stored each blob as one Blob record with all its
// blocks, which for a large blob exceeded the bound readers put on a
// record; its blob records are read with a larger bound. Snapshots written
// before blobs existed have zero blob counts and read the same.
const (
	snapshotMagic  = snapshot.StateMagic
	snapshotFormat = 2
	// snapshotFormatACL is the format of a snapshot holding ACL state.
	snapshotFormatACL = 3
	// maxSnapshotRecord bounds one record so a corrupt length cannot make
	// Restore allocate without limit. The writer refuses to write a larger
	// one, so whatever it writes can be read back.
	maxSnapshotRecord = snapshot.MaxStateRecord
	// maxLegacyBlobRecord bounds a whole-blob record of format 1: large
	// enough for the biggest blob an agent accepts (64 GiB of 1 MiB blocks
	// at 16+16 shards).
	maxLegacyBlobRecord = snapshot.MaxLegacyStateRecord
)

var errSnapshotFormat = errors.New("not a registry snapshot")

type fsmSnapshot struct {
	revision  uint64
	instances []instanceRecord
	sessions  []*pb.Session
	nodes     []*pb.Node
	requests  []*pb.RequestRecord
	// requestClock is the request log's clock (RequestRecord times age
	// against it).
	requestClock int64
	blobs        []*pb.Blob
	pending      []*pb.BlobPending
	cluster      *pb.ClusterInit

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
	bw := bufio.NewWriterSize(w, 64<<10)
	if _, err := bw.WriteString(snapshotMagic); err != nil {
		return err
	}
	hdr := &pb.SnapshotHeader{
		Format:       snapshotFormat,
		Revision:     s.revision,
		Nodes:        uint64(len(s.nodes)),
		Sessions:     uint64(len(s.sessions)),
		Instances:    uint64(len(s.instances)),
		Requests:     uint64(len(s.requests)),
		Blobs:        uint64(len(s.blobs)),
		PendingBlobs: uint64(len(s.pending)),
		Cluster:      s.cluster,
		RequestClock: s.requestClock,
	}
	if s.hasACL() {
		hdr.Format = snapshotFormatACL
		hdr.AclBootstrapped = s.aclBootstrapped
		hdr.AclPolicies = uint64(len(s.aclPolicies))
		hdr.AclTokens = uint64(len(s.aclTokens))
	}
	rw := recordWriter{w: bw}
	rw.write(hdr)
	for _, n := range s.nodes {
		rw.write(n)
	}
	for _, ss := range s.sessions {
		rw.write(ss)
	}
	for _, r := range s.instances {
		rw.writeEncoded("Instance", r.stored.enc)
	}
	for _, r := range s.requests {
		rw.write(r)
	}
	for _, b := range s.blobs {
		rw.write(&pb.SnapshotBlob{Blob: withoutBlocks(b), Blocks: uint64(len(b.Blocks))})
		for _, blk := range b.Blocks {
			rw.write(blk)
		}
	}
	for _, p := range s.pending {
		rw.write(p)
	}
	for _, p := range s.aclPolicies {
		rw.write(p)
	}
	for _, t := range s.aclTokens {
		rw.write(t)
	}
	if rw.err != nil {
		return rw.err
	}
	return bw.Flush()
}

// recordWriter writes length-delimited records and keeps the first error.
type recordWriter struct {
	w   io.Writer
	n   int // records written
	err error
}

func (rw *recordWriter) write(m proto.Message) {
	if rw.err != nil {
		return
	}
	if size := proto.Size(m); size > maxSnapshotRecord {
		rw.err = fmt.Errorf("record %d (%s) has %d bytes, more than the %d a snapshot record may hold",
			rw.n+1, m.ProtoReflect().Descriptor().Name(), size, maxSnapshotRecord)
		return
	}
	if _, err := protodelim.MarshalTo(rw.w, m); err != nil {
		rw.err = err
		return
	}
	rw.n++
}

// withoutBlocks returns a copy of b's fields except its blocks, sharing
// their values (stored blobs are immutable).
func withoutBlocks(b *pb.Blob) *pb.Blob {
	if len(b.Blocks) == 0 {
		return b
	}
	out := &pb.Blob{}
	dst := out.ProtoReflect()
	blocks := dst.Descriptor().Fields().ByName("blocks")
	b.ProtoReflect().Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if fd != blocks {
			dst.Set(fd, v)
		}
		return true
	})
	return out
}

// Release is a no-op: the snapshot holds only immutable pointers.
func (s *fsmSnapshot) Release() {}

func readSnapshot(r io.Reader) (*fsmSnapshot, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	magic := make([]byte, len(snapshotMagic))
	if _, err := io.ReadFull(br, magic); err != nil || string(magic) != snapshotMagic {
		return nil, errSnapshotFormat
	}
	rr := &recordReader{r: br, max: maxSnapshotRecord}
	var hdr pb.SnapshotHeader
	if err := rr.read(&hdr); err != nil {
		return nil, fmt.Errorf("read header: %w", err)
	}
	if hdr.Format < 1 || hdr.Format > snapshotFormatACL {
		return nil, fmt.Errorf("%w: format %d, want 1 to %d", errSnapshotFormat, hdr.Format, snapshotFormatACL)
	}
	if hdr.Format < snapshotFormatACL && (hdr.AclBootstrapped || hdr.AclPolicies > 0 || hdr.AclTokens > 0) {
		return nil, fmt.Errorf("%w: format %d holds no ACL state, but the header counts some", errSnapshotFormat, hdr.Format)
	}
	s := &fsmSnapshot{revision: hdr.Revision, cluster: hdr.Cluster, requestClock: hdr.RequestClock}
	if s.cluster != nil {
		if err := checkClusterInit(s.cluster); err != nil {
			return nil, fmt.Errorf("read header: %w", err)
		}
	}
	// Counts come from the file: they size nothing past a bound, and the
	// slices grow as records arrive.
	s.nodes = make([]*pb.Node, 0, min(hdr.Nodes, 1<<16))
	s.sessions = make([]*pb.Session, 0, min(hdr.Sessions, 1<<20))
	s.instances = make([]instanceRecord, 0, min(hdr.Instances, 1<<20))
	s.requests = make([]*pb.RequestRecord, 0, min(hdr.Requests, maxRequestIDs))
	for i := uint64(0); i < hdr.Nodes; i++ {
		n := &pb.Node{}
		if err := rr.read(n); err != nil {
			return nil, fmt.Errorf("read node %d of %d: %w", i+1, hdr.Nodes, err)
		}
		s.nodes = append(s.nodes, n)
	}
	sessions := make(map[string]bool, min(hdr.Sessions, 1<<16))
	for i := uint64(0); i < hdr.Sessions; i++ {
		ss := &pb.Session{}
		if err := rr.read(ss); err != nil {
			return nil, fmt.Errorf("read session %d of %d: %w", i+1, hdr.Sessions, err)
		}
		s.sessions = append(s.sessions, ss)
		sessions[ss.Id] = true
	}
	for i := uint64(0); i < hdr.Instances; i++ {
		inst := &pb.Instance{}
		if err := rr.read(inst); err != nil {
			return nil, fmt.Errorf("read instance %d of %d: %w", i+1, hdr.Instances, err)
		}
		if inst.Service == "" || inst.Id == "" {
			return nil, fmt.Errorf("instance %d of %d has no service or id", i+1, hdr.Instances)
		}
		// An instance never outlives its session (the state machine removes
		// them together).
		if inst.Session != "" && !sessions[inst.Session] {
			return nil, fmt.Errorf("instance %s/%s is bound to session %q, which the snapshot does not have",
				inst.Service, inst.Id, inst.Session)
		}
		// Every instance was written at a revision the snapshot covers.
		if inst.CreateRevision == 0 || inst.CreateRevision > inst.ModRevision || inst.ModRevision > hdr.Revision {
			return nil, fmt.Errorf("instance %s/%s: create_revision %d and mod_revision %d do not fit a snapshot at revision %d",
				inst.Service, inst.Id, inst.CreateRevision, inst.ModRevision, hdr.Revision)
		}
		s.instances = append(s.instances, instanceRecord{inst.Service, inst.Id, storedFrom(nil, inst, bytes.Clone(rr.last))})
	}
	for i := uint64(0); i < hdr.Requests; i++ {
		r := &pb.RequestRecord{}
		if err := rr.read(r); err != nil {
			return nil, fmt.Errorf("read request record %d of %d: %w", i+1, hdr.Requests, err)
		}
		s.requests = append(s.requests, r)
	}
	for i := uint64(0); i < hdr.Blobs; i++ {
		read := readBlob
		if hdr.Format == 1 {
			read = readLegacyBlob
		}
		b, err := read(rr)
		if err != nil {
			return nil, fmt.Errorf("read blob %d of %d: %w", i+1, hdr.Blobs, err)
		}
		if b.Name == "" || b.Id == "" {
			return nil, fmt.Errorf("blob %d of %d has no name or id", i+1, hdr.Blobs)
		}
		if err := checkBlobShape(b); err != nil {
			return nil, fmt.Errorf("blob %d of %d: %w", i+1, hdr.Blobs, err)
		}
		s.blobs = append(s.blobs, b)
	}
	for i := uint64(0); i < hdr.PendingBlobs; i++ {
		p := &pb.BlobPending{}
		if err := rr.read(p); err != nil {
			return nil, fmt.Errorf("read pending blob %d of %d: %w", i+1, hdr.PendingBlobs, err)
		}
		s.pending = append(s.pending, p)
	}
	if err := s.readACL(rr, &hdr); err != nil {
		return nil, err
	}
	return s, nil
}

// readACL reads the ACL records of a snapshot of format 3.
func (s *fsmSnapshot) readACL(rr *recordReader, hdr *pb.SnapshotHeader) error {
	s.aclBootstrapped = hdr.AclBootstrapped
	policies := make(map[string]bool, min(hdr.AclPolicies, 1<<16))
	for i := uint64(0); i < hdr.AclPolicies; i++ {
		p := &pb.ACLPolicy{}
		if err := rr.read(p); err != nil {
			return fmt.Errorf("read ACL policy %d of %d: %w", i+1, hdr.AclPolicies, err)
		}
		if p.Name == "" || policies[p.Name] {
			return fmt.Errorf("ACL policy %d of %d: name %q is empty or repeated", i+1, hdr.AclPolicies, p.Name)
		}
		policies[p.Name] = true
		s.aclPolicies = append(s.aclPolicies, p)
	}
	accessors := make(map[string]bool, min(hdr.AclTokens, 1<<16))
	hashes := make(map[string]bool, min(hdr.AclTokens, 1<<16))
	for i := uint64(0); i < hdr.AclTokens; i++ {
		t := &pb.ACLToken{}
		if err := rr.read(t); err != nil {
			return fmt.Errorf("read ACL token %d of %d: %w", i+1, hdr.AclTokens, err)
		}
		if err := checkToken("token", t); err != nil {
			return fmt.Errorf("ACL token %d of %d: %w", i+1, hdr.AclTokens, err)
		}
		if accessors[t.AccessorId] || hashes[string(t.SecretHash)] {
			return fmt.Errorf("ACL token %d of %d: accessor id or secret repeated", i+1, hdr.AclTokens)
		}
		accessors[t.AccessorId], hashes[string(t.SecretHash)] = true, true
		s.aclTokens = append(s.aclTokens, t)
	}
	return nil
}

// readBlob reads a blob of format 2: a SnapshotBlob and its blocks.
func readBlob(rr *recordReader) (*pb.Blob, error) {
	var sb pb.SnapshotBlob
	if err := rr.read(&sb); err != nil {
		return nil, err
	}
	b := sb.Blob
	if b == nil {
		return nil, errors.New("blob record without metadata")
	}
	if len(b.Blocks) > 0 {
		return nil, fmt.Errorf("blob %q has blocks inside its metadata record", b.Name)
	}
	// The count comes from the file: grow as records arrive rather than
	// trusting it for one allocation.
	b.Blocks = make([]*pb.BlobBlock, 0, min(sb.Blocks, 1<<16))
	for j := uint64(0); j < sb.Blocks; j++ {
		blk := &pb.BlobBlock{}
		if err := rr.read(blk); err != nil {
			return nil, fmt.Errorf("blob %q block %d of %d: %w", b.Name, j, sb.Blocks, err)
		}
		b.Blocks = append(b.Blocks, blk)
	}
	return b, nil
}

// readLegacyBlob reads a blob of format 1: one record with all its blocks.
func readLegacyBlob(rr *recordReader) (*pb.Blob, error) {
	b := &pb.Blob{}
	if err := rr.readMax(b, maxLegacyBlobRecord); err != nil {
		return nil, err
	}
	return b, nil
}

// recordReader reads length-delimited records into one buffer that it
// reuses: a restore decodes a record per instance, and a buffer each
// would double what it allocates. Unmarshal copies what it keeps, so
// nothing decoded refers to the buffer.
type recordReader struct {
	r   *bufio.Reader
	max int // bytes a record may hold
	buf []byte
	// last is the encoding of the record read last, in buf.
	last []byte
}

func (rr *recordReader) read(m proto.Message) error { return rr.readMax(m, rr.max) }

// readMax reads the next record into m; io.EOF means there was none.
func (rr *recordReader) readMax(m proto.Message, max int) error {
	size, err := binary.ReadUvarint(rr.r)
	if err != nil {
		return err
	}
	if size > uint64(max) {
		return fmt.Errorf("record of %d bytes is larger than the %d a snapshot record may hold", size, max)
	}
	if uint64(cap(rr.buf)) < size {
		rr.buf = make([]byte, size)
	}
	b := rr.buf[:size]
	if _, err := io.ReadFull(rr.r, b); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return err
	}
	rr.last = b
	return proto.Unmarshal(b, m)
}
