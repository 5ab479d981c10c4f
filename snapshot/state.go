package snapshot

import (
	"fmt"
	"io"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
)

// Info is what Inspect reports of a file.
type Info struct {
	Header
	// FileSize is the file's length in bytes; SHA256 its hash in hex.
	FileSize uint64
	SHA256   string
	// StateFormat is the format of the state machine's stream.
	StateFormat uint32
	Nodes       uint64
	Sessions    uint64
	Services    uint64
	Instances   uint64
	Requests    uint64
	Blobs       uint64
	// BlobBlocks counts the blocks of every blob.
	BlobBlocks   uint64
	PendingBlobs uint64
	ACLPolicies  uint64
	ACLTokens    uint64
	// ClusterID is the id of the cluster the state was saved from; ""
	// before the cluster recorded one.
	ClusterID string
}

// Inspect reads the whole file r: it checks the header and the SHA-256
// trailer, walks every record of the state stream and counts what the
// state holds. A file Inspect accepts has its announced structure; whether
// the state machine accepts every value in it is for raftstore to say.
func Inspect(r io.Reader) (*Info, error) {
	sr, err := NewReader(r)
	if err != nil {
		return nil, err
	}
	info := &Info{Header: sr.Header, FileSize: uint64(HeaderSize) + sr.Header.Size + TrailerSize}
	werr := countState(sr, info)
	// Read to the trailer whatever the walk left: a damaged file is
	// reported as damaged, not as a state it cannot decode.
	if _, err := io.Copy(io.Discard, sr); err != nil {
		return nil, err
	}
	if werr != nil {
		return nil, fmt.Errorf("snapshot state: %w", werr)
	}
	info.SHA256 = fmt.Sprintf("%x", sr.Sum())
	return info, nil
}

// countState counts the records of a state stream, decoding what it
// needs to count.
func countState(r io.Reader, info *Info) error {
	services := make(map[string]struct{})
	err := ReadState(r, StateRecords{
		Header: func(hdr *pb.SnapshotHeader) error {
			if hdr.Revision != info.Revision {
				return fmt.Errorf("the state is at revision %d, the file's header says %d", hdr.Revision, info.Revision)
			}
			info.StateFormat = hdr.Format
			info.Nodes, info.Sessions, info.Instances, info.Requests = hdr.Nodes, hdr.Sessions, hdr.Instances, hdr.Requests
			info.Blobs, info.PendingBlobs, info.ACLPolicies, info.ACLTokens = hdr.Blobs, hdr.PendingBlobs, hdr.AclPolicies, hdr.AclTokens
			info.ClusterID = hdr.Cluster.GetClusterId()
			return nil
		},
		Instance: func(inst *pb.Instance) error {
			services[inst.Service] = struct{}{}
			return nil
		},
		Blob: func(b *pb.Blob) error {
			info.BlobBlocks += uint64(len(b.Blocks))
			return nil
		},
	})
	info.Services = uint64(len(services))
	return err
}
