package snapshot

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"google.golang.org/protobuf/encoding/protodelim"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
)

// The state stream is the registry state machine's own snapshot, the one
// raft stores and a snapshot file carries: StateMagic, then
// length-delimited protobuf records: one pb.SnapshotHeader with the
// counts, then that many Nodes, Sessions, Instances, RequestRecords
// (oldest first), blobs and BlobPendings, in that order, and nothing
// after them. A blob is a SnapshotBlob (its metadata without blocks)
// followed by its BlobBlock records, so a record's size does not grow with
// a blob's: a 64 GiB blob of 1 MiB blocks has 65,536 small block records.
//
// Format 3 adds the ACL state after the pending blobs: that many
// ACLPolicy and then ACLToken records (tokens with their secrets' hashes
// only). It is written only when there is ACL state, so agents of a
// release before ACLs keep reading the snapshots of a cluster that does
// not use them, and refuse (rather than silently drop) one that does.
// Snapshots of format 1 and 2 read with no ACL state.
//
// Format 1, still read, stored each blob as one Blob record with all its
// blocks, which for a large blob exceeded MaxStateRecord; its blob records
// are read within MaxLegacyStateRecord. Snapshots written before blobs
// existed have zero blob counts and read the same.
// raftstore writes and loads it with StateWriter and ReadState, giving
// the records their meaning; Inspect counts it with ReadState.

// StateMagic starts a state stream.
const StateMagic = "zrpc-registry-snapshot\n"

// Formats of the state stream.
const (
	// StateFormatBlobRecords stored a whole blob in one record (read only).
	StateFormatBlobRecords = 1
	// StateFormat is written when there is no ACL state.
	StateFormat = 2
	// StateFormatACL is written when there is ACL state.
	StateFormatACL = 3
)

// Bounds on one record of the state stream, so a corrupt length cannot
// make a reader allocate without limit. The writer refuses a larger
// record, so whatever it writes can be read back. MaxLegacyStateRecord is
// large enough for the biggest blob an agent accepts (64 GiB of 1 MiB
// blocks at 16+16 shards) in one record of format 1.
const (
	MaxStateRecord       = 4 << 20
	MaxLegacyStateRecord = 256 << 20
)

// MaxStateHeader bounds the header record. The registry's holds counts
// and the cluster's identity (with at most 64 earlier ids): a few KiB.
// ReadStateHeader holds it whole in a reader's buffer.
const MaxStateHeader = 64 << 10

// ErrNotState: the stream is not a registry state stream, or of a format
// this build cannot read.
var ErrNotState = errors.New("not a registry snapshot")

// StateWriter writes a state stream's records and keeps the first error.
type StateWriter struct {
	w   *bufio.Writer
	err error
}

// NewStateWriter writes the magic and hdr to w, setting hdr.Format to
// StateFormatACL when hdr counts ACL state and to StateFormat otherwise.
// The caller then writes the records hdr counts, in the stream's order,
// and Close.
func NewStateWriter(w io.Writer, hdr *pb.SnapshotHeader) *StateWriter {
	hdr.Format = StateFormat
	if hdr.AclBootstrapped || hdr.AclPolicies > 0 || hdr.AclTokens > 0 {
		hdr.Format = StateFormatACL
	}
	sw := &StateWriter{w: bufio.NewWriterSize(w, 64<<10)}
	if size := proto.Size(hdr); size > MaxStateHeader {
		sw.err = fmt.Errorf("the SnapshotHeader record has %d bytes, more than the %d a snapshot's header may hold", size, MaxStateHeader)
		return sw
	}
	_, sw.err = sw.w.WriteString(StateMagic)
	sw.Write(hdr)
	return sw
}

// Write writes one record.
func (sw *StateWriter) Write(m proto.Message) {
	if sw.err != nil {
		return
	}
	if size := proto.Size(m); size > MaxStateRecord {
		sw.err = fmt.Errorf("a %s record has %d bytes, more than the %d a snapshot record may hold",
			m.ProtoReflect().Descriptor().Name(), size, MaxStateRecord)
		return
	}
	_, sw.err = protodelim.MarshalTo(sw.w, m)
}

// WriteEncoded writes one record already encoded as a kind message (the
// registry keeps instances encoded and writes those bytes as they are).
func (sw *StateWriter) WriteEncoded(kind string, enc []byte) {
	if sw.err != nil {
		return
	}
	if len(enc) > MaxStateRecord {
		sw.err = fmt.Errorf("a %s record has %d bytes, more than the %d a snapshot record may hold", kind, len(enc), MaxStateRecord)
		return
	}
	var size [binary.MaxVarintLen64]byte
	if _, sw.err = sw.w.Write(size[:binary.PutUvarint(size[:], uint64(len(enc)))]); sw.err == nil {
		_, sw.err = sw.w.Write(enc)
	}
}

// WriteBlob writes a blob: its metadata without blocks, then each block.
func (sw *StateWriter) WriteBlob(b *pb.Blob) {
	sw.Write(&pb.SnapshotBlob{Blob: withoutBlocks(b), Blocks: uint64(len(b.Blocks))})
	for _, blk := range b.Blocks {
		sw.Write(blk)
	}
}

// Close flushes the stream and returns the first error.
func (sw *StateWriter) Close() error {
	if sw.err != nil {
		return sw.err
	}
	return sw.w.Flush()
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

// StateRecords receives the records of a state stream as ReadState reads
// them, each a new message the callee may keep. A nil function skips its
// kind's records without decoding them. An error a function returns
// stops the read and is returned with the record's position.
type StateRecords struct {
	// Header is called first, with the header record.
	Header   func(*pb.SnapshotHeader) error
	Node     func(*pb.Node) error
	Session  func(*pb.Session) error
	Instance func(*pb.Instance) error
	// InstanceBytes, when set, is called instead of Instance with the
	// record's encoding too, valid only during the call.
	InstanceBytes func(inst *pb.Instance, enc []byte) error
	Request       func(*pb.RequestRecord) error
	Blob          func(*pb.Blob) error // with its blocks
	PendingBlob   func(*pb.BlobPending) error
	ACLPolicy     func(*pb.ACLPolicy) error
	ACLToken      func(*pb.ACLToken) error
	// Sized, when set, is called with the length of each record after
	// the header that is to be decoded, before it is read: a reader that
	// bounds what it loads refuses a record before it takes memory.
	Sized func(size int) error
}

// ReadState reads the state stream r to its end, handing each record to
// recs. It checks the framing: the magic, the format, every record's
// length against its bound, the counts the header announces, and that
// nothing follows the last record. A read error of r (such as a snapshot
// file's damaged trailer) is returned as it is.
func ReadState(r io.Reader, recs StateRecords) error {
	br := bufio.NewReaderSize(r, 64<<10)
	magic := make([]byte, len(StateMagic))
	if _, err := io.ReadFull(br, magic); err != nil || string(magic) != StateMagic {
		if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
			return err
		}
		return fmt.Errorf("%w: the stream does not start with %q", ErrNotState, StateMagic)
	}
	rr := &recordReader{r: br}
	hdr := &pb.SnapshotHeader{}
	if err := rr.read(hdr, MaxStateHeader); err != nil {
		return fmt.Errorf("header: %w", err)
	}
	rr.sized = recs.Sized
	if err := checkStateHeader(hdr); err != nil {
		return err
	}
	if recs.Header != nil {
		if err := recs.Header(hdr); err != nil {
			return fmt.Errorf("header: %w", err)
		}
	}
	readRecords(rr, "node", hdr.Nodes, recs.Node)
	readRecords(rr, "session", hdr.Sessions, recs.Session)
	instance := recs.Instance
	if recs.InstanceBytes != nil {
		instance = func(inst *pb.Instance) error { return recs.InstanceBytes(inst, rr.last) }
	}
	readRecords(rr, "instance", hdr.Instances, instance)
	readRecords(rr, "request record", hdr.Requests, recs.Request)
	for i := uint64(0); i < hdr.Blobs && rr.err == nil; i++ {
		if err := rr.blob(hdr.Format, recs.Blob); err != nil {
			rr.err = fmt.Errorf("blob %d of %d: %w", i+1, hdr.Blobs, err)
		}
	}
	readRecords(rr, "pending blob", hdr.PendingBlobs, recs.PendingBlob)
	readRecords(rr, "ACL policy", hdr.AclPolicies, recs.ACLPolicy)
	readRecords(rr, "ACL token", hdr.AclTokens, recs.ACLToken)
	if rr.err != nil {
		return rr.err
	}
	switch _, err := br.Peek(1); {
	case err == nil:
		return errors.New("the state has bytes after its last record")
	case err != io.EOF:
		return err
	}
	return nil
}

// checkStateHeader refuses a format this build cannot read.
func checkStateHeader(hdr *pb.SnapshotHeader) error {
	if hdr.Format < StateFormatBlobRecords || hdr.Format > StateFormatACL {
		return fmt.Errorf("%w: format %d, want %d to %d", ErrNotState, hdr.Format, StateFormatBlobRecords, StateFormatACL)
	}
	if hdr.Format < StateFormatACL && (hdr.AclBootstrapped || hdr.AclPolicies > 0 || hdr.AclTokens > 0) {
		return fmt.Errorf("%w: format %d holds no ACL state, but the header counts some", ErrNotState, hdr.Format)
	}
	return nil
}

// readRecords reads n records of one kind, handing each to fn, or skips
// them when fn is nil. It does nothing once rr.err is set, and sets it on
// failure.
func readRecords[M any, P interface {
	*M
	proto.Message
}](rr *recordReader, what string, n uint64, fn func(P) error) {
	for i := uint64(0); i < n && rr.err == nil; i++ {
		var err error
		if fn == nil {
			err = rr.skip(MaxStateRecord)
		} else {
			m := P(new(M))
			if err = rr.read(m, MaxStateRecord); err == nil {
				err = fn(m)
			}
		}
		if err != nil {
			rr.err = fmt.Errorf("%s %d of %d: %w", what, i+1, n, err)
		}
	}
}

// blob reads one blob in the given format, handing it to fn (or skipping
// it when fn is nil).
func (rr *recordReader) blob(format uint32, fn func(*pb.Blob) error) error {
	if format == StateFormatBlobRecords {
		if fn == nil {
			return rr.skip(MaxLegacyStateRecord)
		}
		b := &pb.Blob{}
		if err := rr.read(b, MaxLegacyStateRecord); err != nil {
			return err
		}
		return fn(b)
	}
	var sb pb.SnapshotBlob
	if err := rr.read(&sb, MaxStateRecord); err != nil {
		return err
	}
	b := sb.Blob
	if b == nil {
		return errors.New("blob record without metadata")
	}
	if len(b.Blocks) > 0 {
		return fmt.Errorf("blob %q has blocks inside its metadata record", b.Name)
	}
	var each func(*pb.BlobBlock) error
	if fn != nil {
		// The count comes from the file: grow as records arrive rather
		// than trusting it for one allocation.
		b.Blocks = make([]*pb.BlobBlock, 0, min(sb.Blocks, 1<<16))
		each = func(blk *pb.BlobBlock) error {
			b.Blocks = append(b.Blocks, blk)
			return nil
		}
	}
	if readRecords(rr, fmt.Sprintf("blob %q block", b.Name), sb.Blocks, each); rr.err != nil || fn == nil {
		return rr.err
	}
	return fn(b)
}

// recordReader reads length-delimited records into one buffer that it
// reuses: a restore decodes a record per instance, and a buffer each
// would double what it allocates. Unmarshal copies what it keeps, so
// nothing decoded refers to the buffer.
type recordReader struct {
	r   *bufio.Reader
	buf []byte
	// last is the encoding of the record read last, in buf.
	last []byte
	err  error // the first error of readRecords
	// sized, when set, is told each record's length before read reads
	// it (StateRecords.Sized).
	sized func(size int) error
}

// length reads a record's length, at most max.
func (rr *recordReader) length(max int) (int, error) {
	size, err := binary.ReadUvarint(rr.r)
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

// read reads the next record, of at most max bytes, into m.
func (rr *recordReader) read(m proto.Message, max int) error {
	size, err := rr.length(max)
	if err != nil {
		return err
	}
	if rr.sized != nil {
		if err := rr.sized(size); err != nil {
			return err
		}
	}
	if cap(rr.buf) < size {
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

// skip passes over the next record, of at most max bytes.
func (rr *recordReader) skip(max int) error {
	size, err := rr.length(max)
	if err != nil {
		return err
	}
	if n, err := rr.r.Discard(size); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return fmt.Errorf("record of %d bytes ends after %d: %w", size, n, err)
	}
	return nil
}

// ReadStateHeader reads the magic and header record of a state stream
// from br without consuming them, and returns how many bytes they take.
// br's buffer must hold them: at least MaxStateHeader bytes and the
// magic and length before it.
func ReadStateHeader(br *bufio.Reader) (*pb.SnapshotHeader, int, error) {
	b, err := br.Peek(len(StateMagic) + binary.MaxVarintLen64)
	if len(b) < len(StateMagic) || string(b[:len(StateMagic)]) != StateMagic {
		return nil, 0, fmt.Errorf("%w: the stream does not start with %q (%v)", ErrNotState, StateMagic, err)
	}
	size, n := protowire.ConsumeVarint(b[len(StateMagic):])
	if n < 0 {
		return nil, 0, errors.New("the state's header record has no valid length")
	}
	if size > MaxStateHeader {
		return nil, 0, fmt.Errorf("the state's header record of %d bytes is larger than the %d a snapshot's header may hold", size, MaxStateHeader)
	}
	total := len(StateMagic) + n + int(size)
	if b, err = br.Peek(total); err != nil {
		return nil, 0, fmt.Errorf("read the state's header record: %w", err)
	}
	hdr := &pb.SnapshotHeader{}
	if err := proto.Unmarshal(b[len(StateMagic)+n:], hdr); err != nil {
		return nil, 0, fmt.Errorf("decode the state's header record: %w", err)
	}
	return hdr, total, checkStateHeader(hdr)
}

// RewriteStateHeader returns the state stream br, of size bytes, with its
// header record changed by edit, and the new stream's size. The records
// after the header are passed through unread.
func RewriteStateHeader(br *bufio.Reader, size uint64, edit func(*pb.SnapshotHeader)) (io.Reader, uint64, error) {
	hdr, n, err := ReadStateHeader(br)
	if err != nil {
		return nil, 0, err
	}
	if _, err := br.Discard(n); err != nil {
		return nil, 0, err
	}
	edit(hdr)
	var prefix bytes.Buffer
	prefix.WriteString(StateMagic)
	if _, err := protodelim.MarshalTo(&prefix, hdr); err != nil {
		return nil, 0, err
	}
	return io.MultiReader(&prefix, br), size - uint64(n) + uint64(prefix.Len()), nil
}
