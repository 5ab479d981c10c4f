package raftstore

import (
	"bufio"
	"errors"
	"fmt"
	"io"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/encoding/protodelim"
	"google.golang.org/protobuf/proto"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
)

// Snapshot file layout: a magic line, then length-delimited protobuf
// messages: one SnapshotHeader with the counts, then that many Nodes,
// Sessions, Instances, RequestRecords (oldest first), Blobs and
// BlobPendings, in that order. Snapshots written before blobs existed have
// zero blob counts and read the same.
const (
	snapshotMagic  = "zrpc-registry-snapshot\n"
	snapshotFormat = 1
	// maxSnapshotRecord bounds one record so a corrupt length cannot make
	// Restore allocate without limit.
	maxSnapshotRecord = 4 << 20
)

var errSnapshotFormat = errors.New("not a registry snapshot")

type fsmSnapshot struct {
	revision  uint64
	instances []*pb.Instance
	sessions  []*pb.Session
	nodes     []*pb.Node
	requests  []*pb.RequestRecord
	blobs     []*pb.Blob
	pending   []*pb.BlobPending
	cluster   *pb.ClusterInit
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
	}
	msgs := []proto.Message{hdr}
	for _, n := range s.nodes {
		msgs = append(msgs, n)
	}
	for _, ss := range s.sessions {
		msgs = append(msgs, ss)
	}
	for _, inst := range s.instances {
		msgs = append(msgs, inst)
	}
	for _, r := range s.requests {
		msgs = append(msgs, r)
	}
	for _, b := range s.blobs {
		msgs = append(msgs, b)
	}
	for _, p := range s.pending {
		msgs = append(msgs, p)
	}
	for _, m := range msgs {
		if _, err := protodelim.MarshalTo(bw, m); err != nil {
			return err
		}
	}
	return bw.Flush()
}

// Release is a no-op: the snapshot holds only immutable pointers.
func (s *fsmSnapshot) Release() {}

func readSnapshot(r io.Reader) (*fsmSnapshot, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	magic := make([]byte, len(snapshotMagic))
	if _, err := io.ReadFull(br, magic); err != nil || string(magic) != snapshotMagic {
		return nil, errSnapshotFormat
	}
	opts := protodelim.UnmarshalOptions{MaxSize: maxSnapshotRecord}
	var hdr pb.SnapshotHeader
	if err := opts.UnmarshalFrom(br, &hdr); err != nil {
		return nil, fmt.Errorf("read header: %w", err)
	}
	if hdr.Format != snapshotFormat {
		return nil, fmt.Errorf("%w: format %d, want %d", errSnapshotFormat, hdr.Format, snapshotFormat)
	}
	s := &fsmSnapshot{revision: hdr.Revision, cluster: hdr.Cluster}
	if s.cluster != nil {
		if err := checkClusterInit(s.cluster); err != nil {
			return nil, fmt.Errorf("read header: %w", err)
		}
	}
	for i := uint64(0); i < hdr.Nodes; i++ {
		n := &pb.Node{}
		if err := opts.UnmarshalFrom(br, n); err != nil {
			return nil, fmt.Errorf("read node %d of %d: %w", i+1, hdr.Nodes, err)
		}
		s.nodes = append(s.nodes, n)
	}
	for i := uint64(0); i < hdr.Sessions; i++ {
		ss := &pb.Session{}
		if err := opts.UnmarshalFrom(br, ss); err != nil {
			return nil, fmt.Errorf("read session %d of %d: %w", i+1, hdr.Sessions, err)
		}
		s.sessions = append(s.sessions, ss)
	}
	for i := uint64(0); i < hdr.Instances; i++ {
		inst := &pb.Instance{}
		if err := opts.UnmarshalFrom(br, inst); err != nil {
			return nil, fmt.Errorf("read instance %d of %d: %w", i+1, hdr.Instances, err)
		}
		if inst.Service == "" || inst.Id == "" {
			return nil, fmt.Errorf("instance %d of %d has no service or id", i+1, hdr.Instances)
		}
		s.instances = append(s.instances, inst)
	}
	for i := uint64(0); i < hdr.Requests; i++ {
		r := &pb.RequestRecord{}
		if err := opts.UnmarshalFrom(br, r); err != nil {
			return nil, fmt.Errorf("read request record %d of %d: %w", i+1, hdr.Requests, err)
		}
		s.requests = append(s.requests, r)
	}
	for i := uint64(0); i < hdr.Blobs; i++ {
		b := &pb.Blob{}
		if err := opts.UnmarshalFrom(br, b); err != nil {
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
		if err := opts.UnmarshalFrom(br, p); err != nil {
			return nil, fmt.Errorf("read pending blob %d of %d: %w", i+1, hdr.PendingBlobs, err)
		}
		s.pending = append(s.pending, p)
	}
	return s, nil
}
