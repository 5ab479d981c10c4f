// Package wirecodec is the agent's gRPC codec: protobuf, written and read
// as grpc-go's own codec does, with three differences for the blob paths,
// where messages carry up to a few MiB of shard or chunk bytes:
//
//   - message buffers come from internal/bufpool and are not zeroed
//     (grpc-go's default pool clears each one, up to 1 MiB, on every Get);
//   - a message whose bytes field was lent (Lend) is written as its other
//     fields followed by the lent bytes by reference, not copied into the
//     message buffer; the lender hears (its release function) when gRPC has
//     written them. A GetShardResponse's payload always goes by reference:
//     its sender never changes it after the send;
//   - a message received into one that was borrowed for (Borrow) keeps
//     its bytes field pointing into the received buffer instead of a copy,
//     until the receiver frees it; borrowed in pieces (BorrowPieces), the
//     field stays in the HTTP/2 frames it arrived in, not even made
//     contiguous.
//   - a unary reply whose call named a destination (WithDestination, with
//     the ReadInto interceptor) has its bytes field copied from the
//     received buffer straight into it: a peer's shard lands in its place
//     in the block being decoded.
//
// It is not a format: what goes on the wire is the protobuf encoding of
// the message, byte for byte a valid one, and a peer with grpc-go's codec
// reads it. Which messages are lent or borrowed is the callers' choice
// (storage and node/grpcapi); Lend and Borrow cost nothing for messages
// that do not reach this codec (another codec copies as usual).
package wirecodec

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"slices"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/internal/bufpool"
)

// Name is the codec's name, protobuf's: the content-subtype stays "proto".
const Name = "proto"

// Codec is the codec; the zero value is ready. The agent's server uses it
// (grpc.ForceServerCodecV2) and so do its connections to peers
// (grpc.ForceCodecV2).
type Codec struct{}

var _ encoding.CodecV2 = Codec{}

// Name is "proto".
func (Codec) Name() string { return Name }

// pool is bufpool as gRPC's mem.BufferPool.
type pool struct{}

// BufferPool is internal/bufpool as a gRPC buffer pool, for the agent's
// server (experimental.BufferPool) and its peer connections
// (experimental.WithBufferPool): the frames gRPC reads into come from it,
// not zeroed (gRPC's default pool clears every buffer it hands out, and a
// frame is read over all of it).
func BufferPool() mem.BufferPool { return pool{} }

func (pool) Get(n int) *[]byte { return bufpool.Get(n) }
func (pool) Put(b *[]byte)     { bufpool.Put(b) }

// byReference names the bytes field that is always written by reference,
// by message: the payload of a shard read, which the shard server reads
// into a buffer of its own and never touches again.
var byReference = map[protoreflect.FullName]protoreflect.FieldDescriptor{
	fullName(&pb.GetShardResponse{}): field(&pb.GetShardResponse{}, "payload"),
}

func fullName(m proto.Message) protoreflect.FullName { return m.ProtoReflect().Descriptor().FullName() }

// field is the bytes field name of m, or nil when m has none of that name.
func field(m proto.Message, name protoreflect.Name) protoreflect.FieldDescriptor {
	fd := m.ProtoReflect().Descriptor().Fields().ByName(name)
	if fd == nil || fd.Kind() != protoreflect.BytesKind || fd.IsList() {
		return nil
	}
	return fd
}

func messageOf(v any) (proto.Message, error) {
	m, ok := v.(proto.Message)
	if !ok {
		return nil, fmt.Errorf("wirecodec: %T is not a protobuf message", v)
	}
	return m, nil
}

// Marshal writes v: lent or always-by-reference bytes by reference, the
// rest into a pooled buffer.
func (Codec) Marshal(v any) (mem.BufferSlice, error) {
	m, err := messageOf(v)
	if err != nil {
		return nil, err
	}
	if l, ok := loans.LoadAndDelete(m); ok {
		ln := l.(*loan)
		return marshalLent(m, ln.fd, ln.release)
	}
	if fd := byReference[fullName(m)]; fd != nil {
		return marshalLent(m, fd, nil)
	}
	return marshal(m, nil)
}

// marshal writes m into one buffer, pooled when it is large, with room
// for extra bytes after it; the extra bytes are appended to the result.
func marshal(m proto.Message, extra []byte) (mem.BufferSlice, error) {
	size := proto.Size(m)
	// UseCachedSize: the Size call above has just cached it.
	opts := proto.MarshalOptions{UseCachedSize: true}
	n := size + len(extra)
	if mem.IsBelowBufferPoolingThreshold(n) {
		b, err := opts.MarshalAppend(make([]byte, 0, n), m)
		if err != nil {
			return nil, err
		}
		return mem.BufferSlice{mem.SliceBuffer(append(b, extra...))}, nil
	}
	buf := bufpool.Get(n)
	b, err := opts.MarshalAppend((*buf)[:0], m)
	if err != nil || len(b) != size {
		bufpool.Put(buf)
		if err == nil {
			err = fmt.Errorf("wirecodec: %s was %d bytes, then %d: changed while it was sent", fullName(m), size, len(b))
		}
		return nil, err
	}
	*buf = append(b, extra...)
	return mem.BufferSlice{mem.NewBuffer(buf, pool{})}, nil
}

// marshalLent writes m with its bytes field fd by reference: m's other
// fields, then fd's tag and length, into one buffer, followed by fd's
// bytes themselves. release (nil: none) is called once gRPC is done with
// those bytes. Small payloads are copied (and released at once): gRPC
// writes small buffers without telling when it is done.
func marshalLent(m proto.Message, fd protoreflect.FieldDescriptor, release func()) (mem.BufferSlice, error) {
	r := m.ProtoReflect()
	if fd == nil || !r.Has(fd) || mem.IsBelowBufferPoolingThreshold(len(r.Get(fd).Bytes())) {
		data, err := marshal(m, nil)
		if release != nil {
			release()
		}
		return data, err
	}
	payload := r.Get(fd).Bytes()
	r.Clear(fd)
	var head [2 * binary.MaxVarintLen64]byte
	h := protowire.AppendTag(head[:0], fd.Number(), protowire.BytesType)
	h = protowire.AppendVarint(h, uint64(len(payload)))
	data, err := marshal(m, h)
	r.Set(fd, protoreflect.ValueOfBytes(payload))
	if err != nil {
		if release != nil {
			release()
		}
		return nil, err
	}
	if release == nil {
		return append(data, mem.SliceBuffer(payload)), nil
	}
	ret := &loanReturn{b: payload[:len(payload):len(payload)], release: release}
	return append(data, mem.NewBuffer(&ret.b, ret)), nil
}

// loanReturn is the pool of lent bytes: gRPC "puts them back" when it has
// written them, which returns the loan.
type loanReturn struct {
	b       []byte
	release func()
}

func (l *loanReturn) Get(n int) *[]byte { return bufpool.Get(n) } // not called by gRPC for lent bytes
func (l *loanReturn) Put(*[]byte)       { l.release() }

// loan is a bytes field lent for the next Marshal of its message.
type loan struct {
	fd      protoreflect.FieldDescriptor
	release func()
}

var loans sync.Map // proto.Message -> *loan

// Lend has the next Marshal of msg (by this codec) write msg's bytes field
// named field by reference instead of copying it, and call release once
// gRPC has written those bytes, which may be after the Send or Invoke that
// marshals msg has returned. Until release is called the bytes must not
// change.
//
// The caller must call reclaim once that Send or Invoke has returned,
// whether or not it succeeded: when msg was not marshalled by this codec
// (the call failed first, or another codec ran), reclaim calls release
// itself; otherwise it does nothing. release is called exactly once. A
// field that is not a bytes field of msg is copied as usual.
//
// msg must not be lent again, or marshalled by another goroutine, until
// reclaim is called.
func Lend(msg proto.Message, field protoreflect.Name, release func()) (reclaim func()) {
	fd := msg.ProtoReflect().Descriptor().Fields().ByName(field)
	if fd != nil && (fd.Kind() != protoreflect.BytesKind || fd.IsList()) {
		fd = nil
	}
	loans.Store(msg, &loan{fd: fd, release: release})
	return func() {
		if l, ok := loans.LoadAndDelete(msg); ok {
			l.(*loan).release()
		}
	}
}

// borrow is a message that a receiver lets keep its bytes field in the
// received buffer.
type borrow struct {
	fd  protoreflect.FieldDescriptor
	buf mem.Buffer // set by Unmarshal when the field points into it
	// inPieces: the field is left in the received buffers, as pieces;
	// Unmarshal sets pieces and keeps a reference to frames.
	inPieces bool
	pieces   [][]byte
	frames   mem.BufferSlice
	// dst, when it has room, is where the field's bytes are copied
	// instead (ReadInto); buf is then freed at once.
	dst []byte
}

var borrows sync.Map // proto.Message -> *borrow

// Borrow has the next Unmarshal into msg (by this codec) leave msg's bytes
// field named field pointing into the buffer the message arrived in,
// instead of a copy. Call done once the receive (RecvMsg) has returned,
// whether or not it succeeded: it returns the function that frees that
// buffer (nothing to free: a function doing nothing). Until free is called
// the field is valid; after it, it must not be read. free may be called
// once; msg must not be received into again before done.
func Borrow(msg proto.Message, field protoreflect.Name) (done func() (free func())) {
	fd := msg.ProtoReflect().Descriptor().Fields().ByName(field)
	if fd != nil && (fd.Kind() != protoreflect.BytesKind || fd.IsList()) {
		fd = nil
	}
	b := &borrow{fd: fd}
	borrows.Store(msg, b)
	return func() func() {
		borrows.Delete(msg)
		if b.buf == nil {
			return func() {}
		}
		return b.buf.Free
	}
}

// BorrowPieces is Borrow without making the field contiguous: a large
// message arrives in HTTP/2 frames of 16 KiB, and Borrow copies them into
// one buffer first. The next Unmarshal into msg (by this codec) leaves
// msg's bytes field named field unset and its bytes in the frames they
// arrived in. Call done once the receive (RecvMsg) has returned, whether
// or not it succeeded: it returns those bytes, in order, as slices of the
// frames (nil when the message had no such field, or was not read by this
// codec: then the field is set as usual) and the function that frees the
// frames. Until free is called the pieces are valid and must not be
// written; after it, they must not be read. free may be called once; msg
// must not be received into again before done. A field in a oneof is
// set as usual: which field of the oneof a message holds depends on the
// order of its fields on the wire, which the pieces do not keep.
func BorrowPieces(msg proto.Message, field protoreflect.Name) (done func() (pieces [][]byte, free func())) {
	fd := msg.ProtoReflect().Descriptor().Fields().ByName(field)
	if fd != nil && (fd.Kind() != protoreflect.BytesKind || fd.IsList() || fd.ContainingOneof() != nil) {
		fd = nil
	}
	b := &borrow{fd: fd, inPieces: true}
	borrows.Store(msg, b)
	return func() ([][]byte, func()) {
		borrows.Delete(msg)
		if b.frames == nil {
			return nil, func() {}
		}
		return b.pieces, b.frames.Free
	}
}

// Unmarshal reads data into v. The message is made contiguous in a pooled
// buffer when it arrived in several (a large one arrives in HTTP/2 frames
// of 16 KiB); a borrowed field keeps pointing into it. A field borrowed in
// pieces is not made contiguous.
func (Codec) Unmarshal(data mem.BufferSlice, v any) error {
	m, err := messageOf(v)
	if err != nil {
		return err
	}
	b, borrowed := borrows.Load(m)
	if borrowed && b.(*borrow).fd != nil && b.(*borrow).inPieces {
		return unmarshalPieces(data, m, b.(*borrow))
	}
	buf := data.MaterializeToBuffer(pool{})
	if borrowed && b.(*borrow).fd != nil {
		bw := b.(*borrow)
		kept, err := unmarshalBorrowed(buf.ReadOnlyData(), m, bw.fd)
		if kept && err == nil {
			if b := m.ProtoReflect().Get(bw.fd).Bytes(); cap(bw.dst) >= len(b) {
				into := bw.dst[:len(b):len(b)]
				copy(into, b)
				m.ProtoReflect().Set(bw.fd, protoreflect.ValueOfBytes(into))
				buf.Free()
				return nil
			}
			bw.buf = buf
			return nil
		}
		buf.Free()
		return err
	}
	defer buf.Free()
	return proto.Unmarshal(buf.ReadOnlyData(), m)
}

// DecodeWith hands decode the message in data made contiguous in a pooled
// buffer, freed when decode returns: decode must keep nothing of it. For
// codecs that decode some messages their own way (instcodec).
func DecodeWith(data mem.BufferSlice, decode func([]byte) error) error {
	buf := data.MaterializeToBuffer(pool{})
	defer buf.Free()
	return decode(buf.ReadOnlyData())
}

// unmarshalBorrowed reads data into m, its bytes field fd as a slice of
// data, and reports whether m refers to data. The other fields are
// decoded by protobuf, run by run.
func unmarshalBorrowed(data []byte, m proto.Message, fd protoreflect.FieldDescriptor) (kept bool, err error) {
	proto.Reset(m)
	merge := func(b []byte) error {
		if len(b) == 0 {
			return nil
		}
		return proto.UnmarshalOptions{Merge: true}.Unmarshal(b, m)
	}
	// fail leaves m referring to nothing of data, which is freed.
	fail := func(err error) (bool, error) {
		proto.Reset(m)
		return false, err
	}
	start, i := 0, 0
	for i < len(data) {
		num, typ, n := protowire.ConsumeTag(data[i:])
		if n < 0 {
			return fail(fmt.Errorf("wirecodec: %s: %w", fullName(m), protowire.ParseError(n)))
		}
		if num == fd.Number() && typ == protowire.BytesType {
			v, vn := protowire.ConsumeBytes(data[i+n:])
			if vn < 0 {
				return fail(fmt.Errorf("wirecodec: %s: %w", fullName(m), protowire.ParseError(vn)))
			}
			if err := merge(data[start:i]); err != nil {
				return fail(err)
			}
			// Set where it occurs, as protobuf does: a later occurrence
			// replaces it, and so does another field of its oneof.
			m.ProtoReflect().Set(fd, protoreflect.ValueOfBytes(v[:len(v):len(v)]))
			i += n + vn
			start = i
			continue
		}
		vn := protowire.ConsumeFieldValue(num, typ, data[i+n:])
		if vn < 0 {
			return fail(fmt.Errorf("wirecodec: %s: %w", fullName(m), protowire.ParseError(vn)))
		}
		i += n + vn
	}
	if err := merge(data[start:]); err != nil {
		return fail(err)
	}
	return m.ProtoReflect().Has(fd), nil
}

// unmarshalPieces reads data into m except for its bytes field bw.fd,
// whose bytes it leaves in data's buffers, as bw.pieces, keeping a
// reference to them in bw.frames. Fields are walked across the buffers'
// boundaries; only the other fields' bytes (a few, around the payload)
// are copied, to be decoded by protobuf.
func unmarshalPieces(data mem.BufferSlice, m proto.Message, bw *borrow) error {
	proto.Reset(m)
	var (
		rest   []byte   // the other fields, as they were on the wire
		pieces [][]byte // the last occurrence of the field, as in protobuf
		found  bool
	)
	c := frameCursor{frames: data, left: data.Len()}
	bad := func(err error) error { return fmt.Errorf("wirecodec: %s: %w", fullName(m), err) }
	for c.left > 0 {
		// A tag and a length are at most 20 bytes.
		var headBuf [2 * binary.MaxVarintLen64]byte
		head := c.peek(headBuf[:])
		num, typ, n := protowire.ConsumeTag(head)
		if n < 0 {
			return bad(protowire.ParseError(n))
		}
		var size int // the field's bytes after its tag
		switch typ {
		case protowire.BytesType:
			l, ln := protowire.ConsumeVarint(head[n:])
			if ln < 0 {
				return bad(protowire.ParseError(ln))
			}
			if l > uint64(c.left-n-ln) {
				return bad(io.ErrUnexpectedEOF)
			}
			if num == bw.fd.Number() {
				c.skip(n + ln)
				pieces, found = c.take(int(l)), true
				continue
			}
			size = ln + int(l)
		case protowire.VarintType:
			_, size = protowire.ConsumeVarint(head[n:])
			if size < 0 {
				return bad(protowire.ParseError(size))
			}
		case protowire.Fixed32Type:
			size = 4
		case protowire.Fixed64Type:
			size = 8
		default:
			return bad(fmt.Errorf("field %d has wire type %d, which is not read in pieces", num, typ))
		}
		if n+size > c.left {
			return bad(io.ErrUnexpectedEOF)
		}
		rest = c.appendTo(rest, n+size)
	}
	if len(rest) > 0 {
		if err := proto.Unmarshal(rest, m); err != nil {
			return err
		}
	}
	if found {
		data.Ref()
		bw.pieces, bw.frames = pieces, data
	}
	return nil
}

// frameCursor walks the bytes of a message that arrived in several
// buffers.
type frameCursor struct {
	frames mem.BufferSlice
	i, off int // the next byte: frames[i].ReadOnlyData()[off]
	left   int // bytes from there to the end
}

// peek copies the next bytes, as many as fit in dst, without moving.
func (c *frameCursor) peek(dst []byte) []byte {
	n, i, off := 0, c.i, c.off
	for n < len(dst) && i < len(c.frames) {
		n += copy(dst[n:], c.frames[i].ReadOnlyData()[off:])
		i, off = i+1, 0
	}
	return dst[:n]
}

// take returns the next n bytes (at most c.left) as slices of the frames,
// and moves past them.
func (c *frameCursor) take(n int) [][]byte {
	var out [][]byte
	for n > 0 {
		b := c.frames[c.i].ReadOnlyData()[c.off:]
		if len(b) > n {
			b = b[:n]
		}
		if len(b) > 0 {
			out = append(out, b[:len(b):len(b)])
		}
		c.advance(len(b))
		n -= len(b)
	}
	return out
}

// skip moves past the next n bytes (at most c.left).
func (c *frameCursor) skip(n int) {
	for n > 0 {
		k := min(n, len(c.frames[c.i].ReadOnlyData())-c.off)
		c.advance(k)
		n -= k
	}
}

// appendTo appends the next n bytes (at most c.left) to dst and moves past
// them.
func (c *frameCursor) appendTo(dst []byte, n int) []byte {
	for _, b := range c.take(n) {
		dst = append(dst, b...)
	}
	return dst
}

// advance moves k bytes on within the current frame, to the next frame at
// its end.
func (c *frameCursor) advance(k int) {
	c.off += k
	c.left -= k
	for c.i < len(c.frames) && c.off == len(c.frames[c.i].ReadOnlyData()) {
		c.i, c.off = c.i+1, 0
	}
}

// BorrowIn returns a copy of desc in which the requests of its unary
// method named method keep their bytes field named field in the buffer
// they arrived in (Borrow) until the handler has returned; the handler
// must not keep the field, or any slice of it, past its return. Other
// methods, and a desc without that method, are left as they are.
func BorrowIn(desc *grpc.ServiceDesc, method string, field protoreflect.Name) *grpc.ServiceDesc {
	out := *desc
	out.Methods = slices.Clone(desc.Methods)
	for i, m := range out.Methods {
		if m.MethodName == method {
			out.Methods[i].Handler = borrowing(m.Handler, field)
		}
	}
	return &out
}

func borrowing(h grpc.MethodHandler, field protoreflect.Name) grpc.MethodHandler {
	return func(srv any, ctx context.Context, dec func(any) error, ic grpc.UnaryServerInterceptor) (any, error) {
		var frees []func()
		defer func() {
			for _, free := range frees {
				free()
			}
		}()
		borrowDec := func(v any) error {
			m, ok := v.(proto.Message)
			if !ok {
				return dec(v)
			}
			done := Borrow(m, field)
			err := dec(v)
			frees = append(frees, done())
			return err
		}
		return h(srv, ctx, borrowDec, ic)
	}
}

type destinationKey struct{}

type destination struct {
	field protoreflect.Name
	dst   []byte
}

// WithDestination returns a context for a unary call whose reply's bytes
// field named field is to be read straight into dst when it fits (the
// field is then dst resliced; else a buffer of its own): a shard read
// into its place in the block it belongs to. It takes effect on
// connections that use ReadInto and this codec; elsewhere the reply is
// read as usual. dst is written by the call, and belongs to the caller
// again once the call has returned.
func WithDestination(ctx context.Context, field protoreflect.Name, dst []byte) context.Context {
	return context.WithValue(ctx, destinationKey{}, destination{field: field, dst: dst})
}

// ReadInto is the client interceptor that honours WithDestination.
func ReadInto(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	d, ok := ctx.Value(destinationKey{}).(destination)
	m, isMsg := reply.(proto.Message)
	if !ok || !isMsg {
		return invoker(ctx, method, req, reply, cc, opts...)
	}
	fd := m.ProtoReflect().Descriptor().Fields().ByName(d.field)
	if fd == nil || fd.Kind() != protoreflect.BytesKind || fd.IsList() {
		return invoker(ctx, method, req, reply, cc, opts...)
	}
	borrows.Store(m, &borrow{fd: fd, dst: d.dst})
	defer borrows.Delete(m)
	return invoker(ctx, method, req, reply, cc, opts...)
}
