package snapshot

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"
	"time"
)

// File layout, all integers big-endian:
//
//	magic     8 bytes  "ZRPCSNAP"
//	format    uint16   FormatVersion
//	index     uint64   Raft index of the state
//	term      uint64   Raft term of that index
//	revision  uint64   registry revision of the state
//	created   int64    Unix nanoseconds when the file was made
//	size      uint64   bytes of the state stream
//	state     size bytes: the state machine's snapshot stream
//	sha256    32 bytes over everything before it
const (
	// FormatVersion is the file format this package writes and reads.
	FormatVersion = 1
	// HeaderSize is the length of the header in bytes.
	HeaderSize = len(magic) + 2 + 5*8
	// TrailerSize is the length of the SHA-256 trailer.
	TrailerSize = sha256.Size
	// maxStateSize bounds the state a header may announce (1 TiB): a
	// damaged size field is refused rather than read towards.
	maxStateSize = 1 << 40
)

const magic = "ZRPCSNAP"

// Errors of a file that cannot be trusted. Each is wrapped with what was
// found, so the message says what is wrong with the file.
var (
	// ErrNotSnapshot: the file does not start with the snapshot magic.
	ErrNotSnapshot = errors.New("not a zrpc snapshot file")
	// ErrFormat: the file's format version is one this build cannot read.
	ErrFormat = errors.New("unsupported snapshot format")
	// ErrTruncated: the file ends before its header, state or trailer.
	ErrTruncated = errors.New("snapshot file is truncated")
	// ErrChecksum: the SHA-256 trailer does not match the file's bytes,
	// or bytes follow the trailer.
	ErrChecksum = errors.New("snapshot file is corrupt")
)

// Header describes the state a file holds.
type Header struct {
	Format   uint16
	Index    uint64
	Term     uint64
	Revision uint64
	Created  time.Time
	// Size is the length of the state stream in bytes.
	Size uint64
}

func (h *Header) marshal() []byte {
	b := make([]byte, 0, HeaderSize)
	b = append(b, magic...)
	b = binary.BigEndian.AppendUint16(b, h.Format)
	b = binary.BigEndian.AppendUint64(b, h.Index)
	b = binary.BigEndian.AppendUint64(b, h.Term)
	b = binary.BigEndian.AppendUint64(b, h.Revision)
	b = binary.BigEndian.AppendUint64(b, uint64(h.Created.UnixNano()))
	b = binary.BigEndian.AppendUint64(b, h.Size)
	return b
}

// parseHeader decodes a header of HeaderSize bytes.
func parseHeader(b []byte) (Header, error) {
	if !bytes.Equal(b[:len(magic)], []byte(magic)) {
		return Header{}, fmt.Errorf("%w: the file starts with %q, not %q", ErrNotSnapshot, printable(b[:len(magic)]), magic)
	}
	b = b[len(magic):]
	h := Header{Format: binary.BigEndian.Uint16(b)}
	if h.Format != FormatVersion {
		return Header{}, fmt.Errorf("%w: the file has format %d and this zrpc reads format %d; use the zrpc release that wrote it", ErrFormat, h.Format, FormatVersion)
	}
	b = b[2:]
	h.Index = binary.BigEndian.Uint64(b)
	h.Term = binary.BigEndian.Uint64(b[8:])
	h.Revision = binary.BigEndian.Uint64(b[16:])
	h.Created = time.Unix(0, int64(binary.BigEndian.Uint64(b[24:]))).UTC()
	h.Size = binary.BigEndian.Uint64(b[32:])
	return h, nil
}

// printable quotes at most the bytes given, replacing what is not ASCII
// text, for an error message.
func printable(b []byte) string {
	out := make([]byte, len(b))
	for i, c := range b {
		if c < 0x20 || c > 0x7e {
			c = '.'
		}
		out[i] = c
	}
	return string(out)
}

// Writer writes a snapshot file: the header at once, the state as it is
// written, and the trailer on Close.
type Writer struct {
	w       io.Writer
	h       hash.Hash
	hdr     Header
	written uint64
	err     error
}

// NewWriter writes hdr (its Format set to FormatVersion) to w and returns
// the Writer that takes exactly hdr.Size bytes of state.
func NewWriter(w io.Writer, hdr Header) (*Writer, error) {
	hdr.Format = FormatVersion
	sw := &Writer{w: w, h: sha256.New(), hdr: hdr}
	b := hdr.marshal()
	sw.h.Write(b)
	if _, err := w.Write(b); err != nil {
		return nil, fmt.Errorf("write snapshot header: %w", err)
	}
	return sw, nil
}

// Write writes state bytes; more than the header's Size is an error.
func (w *Writer) Write(p []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	if uint64(len(p)) > w.hdr.Size-w.written {
		w.err = fmt.Errorf("snapshot state is longer than the %d bytes its header announces", w.hdr.Size)
		return 0, w.err
	}
	n, err := w.w.Write(p)
	w.h.Write(p[:n])
	w.written += uint64(n)
	if err != nil {
		w.err = err
	}
	return n, err
}

// Close writes the trailer once the state has its announced size; it does
// not close the underlying writer.
func (w *Writer) Close() error {
	if w.err != nil {
		return w.err
	}
	if w.written != w.hdr.Size {
		return fmt.Errorf("snapshot state has %d bytes, its header announces %d", w.written, w.hdr.Size)
	}
	if _, err := w.w.Write(w.h.Sum(nil)); err != nil {
		return fmt.Errorf("write snapshot trailer: %w", err)
	}
	w.err = errors.New("snapshot writer is closed")
	return nil
}

// Reader reads a snapshot file: Header is read by NewReader; Read returns
// the state. At the end of the state Read checks the trailer and returns
// ErrChecksum or ErrTruncated instead of io.EOF when the file is not what
// was written, so a consumer that reads to the end never takes a damaged
// state for a good one. Bytes read before that are not yet verified.
type Reader struct {
	Header Header
	src    io.Reader
	state  io.LimitedReader
	h      hash.Hash
	sum    []byte
	err    error
}

// NewReader reads and checks the header of the file r.
func NewReader(r io.Reader) (*Reader, error) {
	b := make([]byte, HeaderSize)
	if n, err := io.ReadFull(r, b); err != nil {
		if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, fmt.Errorf("read snapshot header: %w", err)
		}
		if m := min(n, len(magic)); !bytes.Equal(b[:m], []byte(magic[:m])) {
			return nil, fmt.Errorf("%w: the file starts with %q, not %q", ErrNotSnapshot, printable(b[:m]), magic)
		}
		return nil, fmt.Errorf("%w: %d bytes, shorter than the %d-byte header", ErrTruncated, n, HeaderSize)
	}
	hdr, err := parseHeader(b)
	if err != nil {
		return nil, err
	}
	if hdr.Size > maxStateSize {
		return nil, fmt.Errorf("%w: the header announces %d bytes of state, more than the %d a snapshot may hold", ErrChecksum, hdr.Size, uint64(maxStateSize))
	}
	sr := &Reader{Header: hdr, src: r, h: sha256.New()}
	sr.h.Write(b)
	sr.state = io.LimitedReader{R: r, N: int64(hdr.Size)}
	return sr, nil
}

// Read reads the state; see Reader.
func (r *Reader) Read(p []byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	if r.state.N == 0 {
		r.err = r.checkTrailer()
		return 0, r.err
	}
	n, err := r.state.Read(p)
	r.h.Write(p[:n])
	switch {
	case err == io.EOF:
		r.err = fmt.Errorf("%w: the state ends after %d of the %d bytes the header announces",
			ErrTruncated, r.Header.Size-uint64(r.state.N), r.Header.Size)
	case err != nil:
		r.err = fmt.Errorf("read snapshot state: %w", err)
	}
	return n, r.err
}

// checkTrailer reads and compares the trailer; io.EOF means it matched.
func (r *Reader) checkTrailer() error {
	want := make([]byte, TrailerSize)
	if n, err := io.ReadFull(r.src, want); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return fmt.Errorf("%w: %d of the %d bytes of its SHA-256 trailer are missing", ErrTruncated, TrailerSize-n, TrailerSize)
		}
		return fmt.Errorf("read snapshot trailer: %w", err)
	}
	got := r.h.Sum(nil)
	if !bytes.Equal(got, want) {
		return fmt.Errorf("%w: its SHA-256 is %x, its trailer says %x", ErrChecksum, got, want)
	}
	var extra [1]byte
	if n, _ := io.ReadFull(r.src, extra[:]); n > 0 {
		return fmt.Errorf("%w: bytes follow its SHA-256 trailer", ErrChecksum)
	}
	r.sum = got
	return io.EOF
}

// Sum is the file's SHA-256 once Read has returned io.EOF, else nil.
func (r *Reader) Sum() []byte { return r.sum }

// Verify reads the whole file r and checks its header and trailer,
// returning its header and SHA-256.
func Verify(r io.Reader) (Header, []byte, error) {
	sr, err := NewReader(r)
	if err != nil {
		return Header{}, nil, err
	}
	if _, err := io.Copy(io.Discard, sr); err != nil {
		return sr.Header, nil, err
	}
	return sr.Header, sr.Sum(), nil
}

// Header is the header the writer wrote.
func (w *Writer) Header() Header { return w.hdr }
