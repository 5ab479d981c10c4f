package snapshot

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
)

// StateMagic starts the registry state machine's snapshot stream
// (raftstore writes it; the records that follow are length-delimited
// protobuf messages, a pb.SnapshotHeader first).
const StateMagic = "zrpc-registry-snapshot\n"

// Bounds on one record of the state stream, which the state machine
// writes and reads within (format 1 stored a whole blob in one record).
const (
	MaxStateRecord       = 4 << 20
	MaxLegacyStateRecord = 256 << 20
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
}

// ReadStateHeader reads the magic and header record of a state stream
// from br without consuming them.
func ReadStateHeader(br *bufio.Reader) (*pb.SnapshotHeader, error) {
	b, err := br.Peek(len(StateMagic) + binary.MaxVarintLen64)
	if len(b) < len(StateMagic) || string(b[:len(StateMagic)]) != StateMagic {
		return nil, fmt.Errorf("the state is not a registry snapshot stream (%v)", err)
	}
	size, n := protowire.ConsumeVarint(b[len(StateMagic):])
	if n < 0 || size > MaxStateRecord {
		return nil, errors.New("the state's header record has no valid length")
	}
	b, err = br.Peek(len(StateMagic) + n + int(size))
	if err != nil {
		return nil, fmt.Errorf("read the state's header record: %w", err)
	}
	hdr := &pb.SnapshotHeader{}
	if err := proto.Unmarshal(b[len(StateMagic)+n:], hdr); err != nil {
		return nil, fmt.Errorf("decode the state's header record: %w", err)
	}
	return hdr, nil
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
	werr := walkState(bufio.NewReaderSize(sr, 64<<10), info)
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

// walkState counts the records of a state stream, decoding what it needs
// to count.
func walkState(br *bufio.Reader, info *Info) error {
	hdr, err := ReadStateHeader(br)
	if err != nil {
		return err
	}
	if hdr.Revision != info.Revision {
		return fmt.Errorf("the state is at revision %d, the file's header says %d", hdr.Revision, info.Revision)
	}
	if _, err := br.Discard(len(StateMagic)); err != nil {
		return err
	}
	w := &walker{r: br}
	if err := w.skip(MaxStateRecord); err != nil { // the header, read above
		return err
	}
	info.StateFormat = hdr.Format
	info.Nodes, info.Sessions, info.Instances, info.Requests = hdr.Nodes, hdr.Sessions, hdr.Instances, hdr.Requests
	info.Blobs, info.PendingBlobs, info.ACLPolicies, info.ACLTokens = hdr.Blobs, hdr.PendingBlobs, hdr.AclPolicies, hdr.AclTokens
	if err := w.skipN("node", hdr.Nodes); err != nil {
		return err
	}
	if err := w.skipN("session", hdr.Sessions); err != nil {
		return err
	}
	services := make(map[string]struct{})
	for i := uint64(0); i < hdr.Instances; i++ {
		inst := &pb.Instance{}
		if err := w.read(inst, MaxStateRecord); err != nil {
			return fmt.Errorf("instance %d of %d: %w", i+1, hdr.Instances, err)
		}
		services[inst.Service] = struct{}{}
	}
	info.Services = uint64(len(services))
	if err := w.skipN("request record", hdr.Requests); err != nil {
		return err
	}
	if info.BlobBlocks, err = w.blobs(hdr); err != nil {
		return err
	}
	for _, c := range []struct {
		what string
		n    uint64
	}{{"pending blob", hdr.PendingBlobs}, {"ACL policy", hdr.AclPolicies}, {"ACL token", hdr.AclTokens}} {
		if err := w.skipN(c.what, c.n); err != nil {
			return err
		}
	}
	if _, err := br.Peek(1); err != io.EOF {
		return errors.New("the state has bytes after its last record")
	}
	return nil
}

// walker reads the length-delimited records of a state stream.
type walker struct {
	r   *bufio.Reader
	buf []byte
}

// blobs walks the blob records and returns how many blocks they have.
func (w *walker) blobs(hdr *pb.SnapshotHeader) (uint64, error) {
	var blocks uint64
	for i := uint64(0); i < hdr.Blobs; i++ {
		if hdr.Format == 1 {
			b := &pb.Blob{}
			if err := w.read(b, MaxLegacyStateRecord); err != nil {
				return 0, fmt.Errorf("blob %d of %d: %w", i+1, hdr.Blobs, err)
			}
			blocks += uint64(len(b.Blocks))
			continue
		}
		sb := &pb.SnapshotBlob{}
		if err := w.read(sb, MaxStateRecord); err != nil {
			return 0, fmt.Errorf("blob %d of %d: %w", i+1, hdr.Blobs, err)
		}
		if err := w.skipN(fmt.Sprintf("block of blob %d", i+1), sb.Blocks); err != nil {
			return 0, err
		}
		blocks += sb.Blocks
	}
	return blocks, nil
}

// skipN skips n records of one kind.
func (w *walker) skipN(what string, n uint64) error {
	for i := uint64(0); i < n; i++ {
		if err := w.skip(MaxStateRecord); err != nil {
			return fmt.Errorf("%s %d of %d: %w", what, i+1, n, err)
		}
	}
	return nil
}

// length reads a record's length.
func (w *walker) length(max int) (int, error) {
	size, err := binary.ReadUvarint(w.r)
	if err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return 0, err
	}
	if size > uint64(max) {
		return 0, fmt.Errorf("record of %d bytes is larger than the %d a snapshot record may hold", size, max)
	}
	return int(size), nil
}

func (w *walker) skip(max int) error {
	size, err := w.length(max)
	if err != nil {
		return err
	}
	if n, err := w.r.Discard(size); err != nil {
		return fmt.Errorf("record of %d bytes ends after %d: %w", size, n, io.ErrUnexpectedEOF)
	}
	return nil
}

func (w *walker) read(m proto.Message, max int) error {
	size, err := w.length(max)
	if err != nil {
		return err
	}
	if cap(w.buf) < size {
		w.buf = make([]byte, size)
	}
	b := w.buf[:size]
	if _, err := io.ReadFull(w.r, b); err != nil {
		return io.ErrUnexpectedEOF
	}
	return proto.Unmarshal(b, m)
}
