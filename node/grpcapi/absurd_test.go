package grpcapi_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	"github.com/zrpcio/zrpc/acl"
	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/node"
	"github.com/zrpcio/zrpc/node/grpcapi"
	"github.com/zrpcio/zrpc/testcluster"
)

// method is one RPC of the agent as the test calls it.
type method struct {
	full                         string // "/zrpc.v1.Registry/Get"
	in, out                      protoreflect.MessageType
	clientStreams, serverStreams bool
}

// agentMethods lists every method of every service of the agent's API
// package (zrpc.v1) from the generated descriptors, so that a method or a
// service added later is in the test at once.
func agentMethods(t *testing.T) []method {
	t.Helper()
	var all []method
	var err error
	protoregistry.GlobalFiles.RangeFilesByPackage("zrpc.v1", func(fd protoreflect.FileDescriptor) bool {
		for i := range fd.Services().Len() {
			sd := fd.Services().Get(i)
			for j := range sd.Methods().Len() {
				md := sd.Methods().Get(j)
				in, err1 := protoregistry.GlobalTypes.FindMessageByName(md.Input().FullName())
				out, err2 := protoregistry.GlobalTypes.FindMessageByName(md.Output().FullName())
				if err = errors.Join(err1, err2); err != nil {
					return false
				}
				all = append(all, method{
					full: "/" + string(sd.FullName()) + "/" + string(md.Name()), in: in, out: out,
					clientStreams: md.IsStreamingClient(), serverStreams: md.IsStreamingServer(),
				})
			}
		}
		return true
	})
	if err != nil {
		t.Fatalf("types of the API's methods: %v", err)
	}
	slices.SortFunc(all, func(a, b method) int { return strings.Compare(a.full, b.full) })
	for _, want := range []string{pb.Registry_Register_FullMethodName, pb.Snapshot_Restore_FullMethodName, pb.KeyringPeer_Use_FullMethodName} {
		if !slices.ContainsFunc(all, func(m method) bool { return m.full == want }) {
			t.Fatalf("the API's descriptors lack %s: are its files linked in?", want)
		}
	}
	return all
}

// absurdCase is one request a stranger sends: a message built from the
// method's request type, or raw bytes that are no message at all.
type absurdCase struct {
	name string
	// build fills the method's empty request; nil sends raw instead.
	build func(m protoreflect.Message)
	raw   []byte
	// times is how often a client stream sends the message (default 1;
	// -1: never).
	times int
	// want, when set, checks the call's error further.
	want func(err error) error
	// anonymous sends the call without a token.
	anonymous bool
	// hold keeps the stream open, and the agent is asked for its Status
	// meanwhile, before the caller gives up.
	hold bool
}

// Hostile strings: path tricks, NUL, control bytes, a 10 KB name.
var hostileStrings = []string{
	"../../../../etc/passwd", "a\x00b", "/", "..", "a/../../b", strings.Repeat("x", 10<<10),
	"\r\n\t", " leading space", "-", "*", "%00", "名前",
}

// filler fills every field of a message, recursively, with one kind of
// absurd value.
type filler struct {
	str    func(i int) string
	bytes  func(i int) []byte
	number func(fd protoreflect.FieldDescriptor) protoreflect.Value
	// count is how many elements lists and maps get at the top level;
	// nested ones get two.
	count int
	// choice picks the member of every oneof (modulo its size).
	choice int
}

const maxFillDepth = 4

func (f filler) fill(m protoreflect.Message, depth int) {
	fields := m.Descriptor().Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		if od := fd.ContainingOneof(); od != nil && !od.IsSynthetic() && od.Fields().Get(f.choice%od.Fields().Len()) != fd {
			continue
		}
		n := 2
		if depth == 0 {
			n = f.count
		}
		switch {
		case fd.IsMap():
			mp := m.Mutable(fd).Map()
			for k := range n {
				key := f.value(fd.MapKey(), k, depth+1)
				mp.Set(protoreflect.MapKey(key), f.element(mp.NewValue, fd.MapValue(), k, depth+1))
			}
		case fd.IsList():
			l := m.Mutable(fd).List()
			if fd.Message() != nil {
				n = min(n, 10_000)
			}
			for k := range n {
				l.Append(f.element(l.NewElement, fd, k, depth+1))
			}
		case fd.Message() != nil:
			if depth < maxFillDepth {
				f.fill(m.Mutable(fd).Message(), depth+1)
			}
		default:
			m.Set(fd, f.value(fd, i, depth))
		}
	}
}

func (f filler) element(newValue func() protoreflect.Value, fd protoreflect.FieldDescriptor, k, depth int) protoreflect.Value {
	if fd.Message() == nil {
		return f.value(fd, k, depth)
	}
	v := newValue()
	if depth < maxFillDepth {
		f.fill(v.Message(), depth)
	}
	return v
}

func (f filler) value(fd protoreflect.FieldDescriptor, k, depth int) protoreflect.Value {
	switch fd.Kind() {
	case protoreflect.StringKind:
		return protoreflect.ValueOfString(f.str(k))
	case protoreflect.BytesKind:
		return protoreflect.ValueOfBytes(f.bytes(k))
	case protoreflect.BoolKind:
		return protoreflect.ValueOfBool(true)
	case protoreflect.EnumKind:
		return protoreflect.ValueOfEnum(protoreflect.EnumNumber(math.MaxInt32))
	}
	return f.number(fd)
}

// numbers returns every integer field's largest value (wrap false) or a
// negative one, as a uint's wrap-around (wrap true).
func numbers(wrap bool) func(fd protoreflect.FieldDescriptor) protoreflect.Value {
	return func(fd protoreflect.FieldDescriptor) protoreflect.Value {
		switch fd.Kind() {
		case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
			return protoreflect.ValueOfInt32(map[bool]int32{false: math.MaxInt32, true: math.MinInt32}[wrap])
		case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
			return protoreflect.ValueOfInt64(map[bool]int64{false: math.MaxInt64, true: math.MinInt64}[wrap])
		case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
			return protoreflect.ValueOfUint32(math.MaxUint32 - map[bool]uint32{false: 0, true: 1}[wrap])
		case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
			return protoreflect.ValueOfUint64(math.MaxUint64 - map[bool]uint64{false: 0, true: 1}[wrap])
		case protoreflect.FloatKind:
			return protoreflect.ValueOfFloat32(float32(math.Inf(1)))
		case protoreflect.DoubleKind:
			return protoreflect.ValueOfFloat64(math.NaN())
		}
		panic(fmt.Sprintf("no absurd number for %v", fd.Kind()))
	}
}

// genericCases are the absurd requests every method gets: the zero
// message, every field at its extreme (per oneof member), hostile
// strings, lists of a million and maps of 100k entries, and bytes that
// are not a message.
func genericCases(in protoreflect.MessageType) []absurdCase {
	oneofMembers := 1
	var countOneofs func(md protoreflect.MessageDescriptor, depth int)
	countOneofs = func(md protoreflect.MessageDescriptor, depth int) {
		for i := range md.Oneofs().Len() {
			oneofMembers = max(oneofMembers, md.Oneofs().Get(i).Fields().Len())
		}
		if depth < 2 {
			for i := range md.Fields().Len() {
				if sub := md.Fields().Get(i).Message(); sub != nil {
					countOneofs(sub, depth+1)
				}
			}
		}
	}
	countOneofs(in.Descriptor(), 0)

	x := func(int) string { return "x" }
	short := func(int) []byte { return []byte{0xff} }
	cases := []absurdCase{{name: "zero message", build: func(protoreflect.Message) {}}}
	for c := range oneofMembers {
		huge := filler{str: x, bytes: short, number: numbers(false), count: 1, choice: c}
		wrapped := filler{str: x, bytes: short, number: numbers(true), count: 1, choice: c}
		hostile := filler{
			str:    func(i int) string { return hostileStrings[i%len(hostileStrings)] },
			bytes:  func(int) []byte { return make([]byte, 1<<20) },
			number: numbers(false), count: 3, choice: c,
		}
		cases = append(cases,
			absurdCase{name: fmt.Sprintf("largest numbers/oneof %d", c), build: func(m protoreflect.Message) { huge.fill(m, 0) }},
			absurdCase{name: fmt.Sprintf("wrapped numbers/oneof %d", c), build: func(m protoreflect.Message) { wrapped.fill(m, 0) }},
			absurdCase{name: fmt.Sprintf("hostile strings/oneof %d", c), build: func(m protoreflect.Message) { hostile.fill(m, 0) }},
		)
	}
	crowd := filler{
		str: func(i int) string { return fmt.Sprintf("k%d", i) }, bytes: short, number: numbers(false), count: 100_000,
	}
	cases = append(cases,
		absurdCase{name: "100k entries in every list and map", build: func(m protoreflect.Message) { crowd.fill(m, 0) }},
		absurdCase{name: "a million entries in every list", build: func(m protoreflect.Message) {
			crowd.count = 1_000_000
			crowd.fill(m, 0)
			for proto.Size(m.Interface()) > grpcapi.MaxRecvMessage-(1<<20) {
				crowd.count /= 2 // up to the message limit
				m.Interface().ProtoReflect().Range(func(fd protoreflect.FieldDescriptor, _ protoreflect.Value) bool {
					m.Clear(fd)
					return true
				})
				crowd.fill(m, 0)
			}
		}},
		absurdCase{name: "bytes that are no message", raw: []byte{0xff, 0xff, 0xff, 0xff, 0x0f, 0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f}},
		absurdCase{name: "a field announcing 4 GiB", raw: []byte{0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f, 'a'}},
		absurdCase{name: "a group that never ends", raw: []byte{0x0b, 0x0b, 0x0b, 0x0b}},
	)
	return cases
}

// streamCases are what a stranger does to a stream besides sending odd
// messages: close it before sending anything, or keep it open and silent.
func streamCases(m method) []absurdCase {
	if !m.clientStreams {
		return nil
	}
	return []absurdCase{
		{name: "ends before its first message", build: func(protoreflect.Message) {}, times: -1},
		{name: "held open without a message", build: func(protoreflect.Message) {}, times: -1, hold: true},
	}
}

// rawFrame is a request that is not a message: the bytes go on the wire
// as they are.
type rawFrame []byte

// rawCodec sends rawFrames as they are and everything else as protobuf.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) {
	if r, ok := v.(rawFrame); ok {
		return r, nil
	}
	return proto.Marshal(v.(proto.Message))
}

func (rawCodec) Unmarshal(data []byte, v any) error { return proto.Unmarshal(data, v.(proto.Message)) }
func (rawCodec) Name() string                       { return "proto" }

var _ encoding.Codec = rawCodec{}

// outcome is what one call got: its status and how many answers a stream
// delivered before it ended.
type outcome struct {
	err      error
	received int
}

// call sends c to m over conn and reads every answer until the call
// ends; a server stream that keeps going is cut at the deadline.
func call(ctx context.Context, conn *grpc.ClientConn, m method, c absurdCase, meanwhile func()) outcome {
	var req any
	if c.build != nil {
		msg := m.in.New()
		c.build(msg)
		req = msg.Interface()
	} else {
		req = rawFrame(c.raw)
	}
	codec := grpc.ForceCodec(rawCodec{})
	if !m.clientStreams && !m.serverStreams {
		return outcome{err: conn.Invoke(ctx, m.full, req, m.out.New().Interface(), codec)}
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cs, err := conn.NewStream(ctx, &grpc.StreamDesc{ClientStreams: m.clientStreams, ServerStreams: m.serverStreams}, m.full, codec)
	if err != nil {
		return outcome{err: err}
	}
	times := max(c.times, 1)
	if c.times < 0 {
		times = 0
	}
	for range times {
		if err := cs.SendMsg(req); err != nil {
			break // the server ended the call: RecvMsg tells how
		}
	}
	if c.hold {
		meanwhile()
		cancel()
		if err := cs.RecvMsg(m.out.New().Interface()); status.Code(err) != codes.Canceled {
			return outcome{err: fmt.Errorf("a stream held open ended with %w before the caller gave up", err)}
		}
		return outcome{}
	}
	if err := cs.CloseSend(); err != nil {
		return outcome{err: err}
	}
	var o outcome
	for {
		if err := cs.RecvMsg(m.out.New().Interface()); err != nil {
			if errors.Is(err, io.EOF) {
				err = nil
			}
			o.err = err
			return o
		}
		o.received++
		if o.received >= 1000 {
			return o // streaming on: alive
		}
	}
}

// cleanCodes are the answers to a bad request that tell its sender what
// was wrong; Unknown and Internal (a recovered panic) are not among them.
var cleanCodes = []codes.Code{
	codes.OK, codes.InvalidArgument, codes.FailedPrecondition, codes.NotFound, codes.ResourceExhausted,
	codes.Unauthenticated, codes.PermissionDenied, codes.OutOfRange, codes.AlreadyExists,
}

// stranger is the test's view of one agent: its connections (an operator's
// with the management token, an agent's with the cluster's proof, an
// anonymous one) and what it stores.
type stranger struct {
	c              *testcluster.Cluster
	token          string
	operator, peer *grpc.ClientConn
	anonymous      *grpc.ClientConn
}

func (s *stranger) ctx(ctx context.Context) context.Context {
	return metadata.AppendToOutgoingContext(ctx, acl.AuthorizationKey, "Bearer "+s.token)
}

// state is what the agent stores that a refused call must leave alone:
// its registry revision, every instance, every blob, ACL policies and
// tokens.
func (s *stranger) state(t *testing.T) (uint64, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(s.ctx(context.Background()), 20*time.Second)
	defer cancel()
	var b strings.Builder
	reg := pb.NewRegistryClient(s.operator)
	list, err := reg.List(ctx, &pb.ListRequest{})
	if err != nil {
		t.Fatalf("list services: %v", err)
	}
	for _, svc := range list.Services {
		got, err := reg.Get(ctx, &pb.GetRequest{Service: svc.Name})
		if err != nil {
			t.Fatalf("get %s: %v", svc.Name, err)
		}
		for _, in := range got.Instances {
			in.HealthSince = 0
			fmt.Fprintf(&b, "instance %v\n", in)
		}
	}
	blobs, err := pb.NewBlobsClient(s.operator).List(ctx, &pb.BlobListRequest{})
	if err != nil {
		t.Fatalf("list blobs: %v", err)
	}
	for _, bl := range blobs.Blobs {
		fmt.Fprintf(&b, "blob %v\n", bl)
	}
	aclc := pb.NewACLClient(s.operator)
	policies, err1 := aclc.PolicyList(ctx, &pb.ACLPolicyListRequest{})
	tokens, err2 := aclc.TokenList(ctx, &pb.ACLTokenListRequest{})
	if err := errors.Join(err1, err2); err != nil {
		t.Fatalf("list ACL policies and tokens: %v", err)
	}
	fmt.Fprintf(&b, "policies %v\ntokens %v\n", policies.Policies, tokens.Tokens)
	return s.c.Node(0).Store().FSM().Revision(), b.String()
}

// alive fails t unless the agent answers a Status call.
func (s *stranger) alive(t *testing.T, after string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(s.ctx(context.Background()), 20*time.Second)
	defer cancel()
	if _, err := pb.NewStatusClient(s.operator).Status(ctx, &pb.StatusRequest{}); err != nil {
		t.Fatalf("after %s the agent does not answer Status: %v", after, err)
	}
}

func newStranger(t *testing.T) *stranger {
	c := testcluster.New(t, 1, testcluster.WithConfig(func(cfg *node.Config) { cfg.ACL = true }))
	dial := func(opts ...grpc.DialOption) *grpc.ClientConn {
		conn, err := grpc.NewClient(c.GRPCAddr(0), append(opts, grpc.WithTransportCredentials(insecure.NewCredentials()))...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return conn
	}
	s := &stranger{c: c, anonymous: dial(), peer: c.AgentConn(0, 0)}
	s.operator = dial(grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64 << 20)))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	boot, err := pb.NewACLClient(s.anonymous).Bootstrap(ctx, &pb.ACLBootstrapRequest{})
	if err != nil {
		t.Fatalf("ACL bootstrap: %v", err)
	}
	s.token = boot.Secret
	// Something stored for refused calls to leave alone: an instance and
	// a blob.
	ctx = s.ctx(ctx)
	if _, err := pb.NewRegistryClient(s.operator).Register(ctx, &pb.RegisterRequest{Instance: &pb.Instance{
		Service: "user.rpc", Id: "u1", Address: "127.0.0.1:9000", Metadata: map[string]string{"k": "v"},
	}}); err != nil {
		t.Fatalf("register: %v", err)
	}
	put, err := pb.NewBlobsClient(s.operator).Put(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, req := range []*pb.BlobPutRequest{
		{Msg: &pb.BlobPutRequest_Header{Header: &pb.BlobPutHeader{Name: "models/a.bin", Size: 4}}},
		{Msg: &pb.BlobPutRequest_Chunk{Chunk: []byte("kept")}},
	} {
		if err := put.Send(req); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := put.CloseAndRecv(); err != nil {
		t.Fatalf("put a blob: %v", err)
	}
	return s
}

// TestEveryRPCAnswersAbsurdRequestsCleanly sends every method of the
// agent's API absurd requests (the zero message, every field at its
// extreme, hostile names, huge lists and maps, bytes that are no message,
// streams ended early) and checks that each gets a clean status code, that
// the agent still answers, and that a refused call changed nothing stored.
func TestEveryRPCAnswersAbsurdRequestsCleanly(t *testing.T) {
	if testing.Short() {
		t.Skip("starts an agent and sends it thousands of requests")
	}
	s := newStranger(t)
	methods := agentMethods(t)
	for _, m := range methods {
		specific, ok := specificCases[m.full]
		if !ok {
			t.Errorf("%s has no absurd cases in specificCases: add what a stranger could send it", m.full)
			continue
		}
		cases := slices.Concat(genericCases(m.in), streamCases(m), specific.cases)
		conn := s.operator
		if grpcapi.PeerOnly(m.full) {
			conn = s.peer
		}
		conn0 := conn
		t.Run(strings.TrimPrefix(m.full, "/zrpc.v1."), func(t *testing.T) {
			if specific.skipGeneric {
				cases = specific.cases
			}
			for _, c := range cases {
				rev, before := s.state(t)
				ctx, cancel := context.WithTimeout(s.ctx(context.Background()), 15*time.Second)
				conn := conn0
				if c.anonymous {
					ctx, conn = metadata.NewOutgoingContext(ctx, nil), s.anonymous
				}
				if m.serverStreams && specific.maySilentlyWait {
					ctx, cancel = context.WithTimeout(ctx, time.Second)
				}
				o := call(ctx, conn, m, c, func() { s.alive(t, "a stream held open") })
				cancel()
				code := status.Code(o.err)
				if m.serverStreams && code == codes.DeadlineExceeded && (o.received > 0 || specific.maySilentlyWait) {
					code = codes.OK // a stream still serving (or waiting, as asked) when the test stopped reading
				}
				if !slices.Contains(cleanCodes, code) {
					t.Errorf("%s: %v, want a clean refusal (%v) or an answer", c.name, o.err, cleanCodes[1:])
				}
				if c.want != nil {
					if err := c.want(o.err); err != nil {
						t.Errorf("%s: %v", c.name, err)
					}
				}
				s.alive(t, m.full+" "+c.name)
				if code == codes.OK {
					continue
				}
				if revAfter, after := s.state(t); after != before {
					t.Errorf("%s was refused (%v) but changed what the agent stores:\nbefore:\n%s\nafter:\n%s", c.name, o.err, before, after)
				} else if code == codes.InvalidArgument && revAfter != rev {
					t.Errorf("%s was refused (%v) but the registry moved from revision %d to %d", c.name, o.err, rev, revAfter)
				}
			}
		})
	}
	// A peer-only method is closed to a caller without the cluster's proof.
	for _, m := range methods {
		if !grpcapi.PeerOnly(m.full) {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		o := call(ctx, s.anonymous, m, absurdCase{name: "zero", build: func(protoreflect.Message) {}}, nil)
		cancel()
		if status.Code(o.err) != codes.PermissionDenied {
			t.Errorf("%s from a stranger: %v, want PermissionDenied", m.full, o.err)
		}
	}
}
