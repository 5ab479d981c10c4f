package instcodec

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
)

// instanceWithMetadata is an instance with a random choice of fields set,
// some of its strings empty, and up to six metadata entries with keys that
// share prefixes (so that their order is by bytes, not by length).
func instanceWithMetadata(r *rand.Rand) *pb.Instance {
	str := func() string {
		return []string{"", "a", "ab", "b", "é", "zone-a", string(make([]byte, 130))}[r.IntN(7)]
	}
	inst := &pb.Instance{Id: fmt.Sprint("i", r.IntN(1000)), Service: "svc.rpc"}
	if r.IntN(2) == 0 {
		inst.Address, inst.Weight, inst.Zone, inst.Version = "127.0.0.1:9000", uint32(r.IntN(300)), str(), str()
	}
	for range r.IntN(3) {
		inst.Tags = append(inst.Tags, str())
	}
	if n := r.IntN(7); n > 0 {
		inst.Metadata = make(map[string]string, n)
		for range n {
			inst.Metadata[str()+str()] = str()
		}
	}
	inst.Health = pb.Health(r.IntN(3))
	if r.IntN(2) == 0 {
		inst.Check = &pb.Check{Ttl: durationpb.New(30e9), Grpc: r.IntN(2) == 0, GrpcAddress: str()}
	}
	inst.Session, inst.Node, inst.HealthOutput = str(), "z1", str()
	if r.IntN(4) == 0 {
		inst.CreateRevision, inst.ModRevision, inst.HealthSince = 7, 9, 1<<40
	}
	return inst
}

func TestEncodeCommandIsTheDeterministicEncoding(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	cmds := []*pb.Command{
		{Kind: &pb.Command_Deregister{Deregister: &pb.InstanceRef{Service: "a", Id: "b"}}, RequestId: "x", Time: 5},
		register(&pb.Instance{Id: "a", Service: "b"}),
	}
	for i := range 4000 {
		inst := instanceWithMetadata(r)
		if i%2 == 1 {
			inst = randomInstance(r)
		}
		cmd := register(inst)
		if r.IntN(2) == 0 {
			cmd.RequestId, cmd.Time = "z1-0123456789abcdef", 1<<60+int64(r.IntN(1000))
		}
		if r.IntN(2) == 0 {
			cmd.Quota = &pb.Quota{MaxInstancesPerService: 10000, MaxRegistryBytes: 512 << 20}
		}
		cmds = append(cmds, cmd)
	}
	for _, cmd := range cmds {
		want, err := proto.MarshalOptions{Deterministic: true}.Marshal(cmd)
		if err != nil {
			t.Fatal(err)
		}
		before := proto.Clone(cmd)
		got, err := EncodeCommand(cmd)
		if err != nil {
			t.Fatalf("EncodeCommand(%v): %v", cmd, err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("EncodeCommand(%v)\n = %x\nwant %x", cmd, got, want)
		}
		if !proto.Equal(cmd, before) {
			t.Fatalf("EncodeCommand changed its command: %v, was %v", cmd, before)
		}
	}
}

func TestEncodeCommandKeepsFieldsItDoesNotKnow(t *testing.T) {
	inst := &pb.Instance{Id: "a", Service: "b", Metadata: map[string]string{"k1": "v", "k0": "w"}}
	unknown := protowire.AppendTag(nil, 99, protowire.VarintType)
	unknown = protowire.AppendVarint(unknown, 7)
	inst.ProtoReflect().SetUnknown(unknown)
	cmd := register(inst)
	cmd.ProtoReflect().SetUnknown(unknown)
	got, err := EncodeCommand(cmd)
	if err != nil {
		t.Fatal(err)
	}
	back := &pb.Command{}
	if err := proto.Unmarshal(got, back); err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(back, cmd) {
		t.Fatalf("decoded %v, encoded %v", back, cmd)
	}
}

func TestEncodeCommandRefusesInvalidUTF8(t *testing.T) {
	for _, md := range []map[string]string{{"k\xff": "v"}, {"k": "v\xff"}} {
		cmd := register(&pb.Instance{Id: "a", Service: "b", Metadata: md})
		if _, err := EncodeCommand(cmd); err == nil {
			t.Errorf("EncodeCommand with metadata %q: no error", md)
		}
	}
}

// decodeCases are encodings decodeCommand must read as proto.Unmarshal
// does: entries as agents write them, in protobuf's other orders, with
// fields this agent does not know, and broken.
func decodeCases(t testing.TB) [][]byte {
	r := rand.New(rand.NewPCG(3, 4))
	var cases [][]byte
	for i := range 3000 {
		inst := instanceWithMetadata(r)
		if i%2 == 1 {
			inst = randomInstance(r)
		}
		cmd := register(inst)
		cmd.RequestId, cmd.Time = "z1-0123", int64(i)
		var opts proto.MarshalOptions
		opts.Deterministic = i%3 != 0
		b, err := opts.Marshal(cmd)
		if err != nil {
			t.Fatal(err)
		}
		cases = append(cases, b)
	}
	field := func(num protowire.Number, b []byte) []byte {
		return protowire.AppendBytes(protowire.AppendTag(nil, num, protowire.BytesType), b)
	}
	entry := func(parts ...[]byte) []byte { return field(metadataField, bytes.Join(parts, nil)) }
	key, value := func(s string) []byte { return field(mapKeyField, []byte(s)) }, func(s string) []byte { return field(mapValueField, []byte(s)) }
	varint := protowire.AppendVarint(protowire.AppendTag(nil, 5, protowire.VarintType), 3)
	id := field(1, []byte("i1"))
	for _, inst := range [][]byte{
		bytes.Join([][]byte{id, entry(key("a"), value("1")), entry(key("b"))}, nil),
		bytes.Join([][]byte{entry(value("only a value")), id}, nil),
		bytes.Join([][]byte{entry(key("a"), value("1")), id, entry(key("b"), value("2"))}, nil), // entries apart
		bytes.Join([][]byte{entry(key("a"), value("1")), entry(key("a"), value("2"))}, nil),     // a key twice
		bytes.Join([][]byte{entry(key("a"), varint, value("1"))}, nil),                          // a field entries do not have
		bytes.Join([][]byte{entry(value("1"), key("a"), key("b"))}, nil),
		bytes.Join([][]byte{entry(key("a\xff"), value("1"))}, nil),
		bytes.Join([][]byte{entry(key("a"), value("\xff"))}, nil),
		bytes.Join([][]byte{entry(key("a"), []byte{0x12, 0x05, 'x'})}, nil), // a value cut short
		bytes.Join([][]byte{id, protowire.AppendVarint(protowire.AppendTag(nil, metadataField, protowire.VarintType), 1)}, nil),
		bytes.Join([][]byte{id, protowire.AppendVarint(protowire.AppendTag(nil, 99, protowire.VarintType), 1), entry(key("a"))}, nil),
	} {
		cases = append(cases, field(registerField, inst))
		cases = append(cases, append(field(registerField, inst), field(14, []byte("req"))...)) // the instance not last
	}
	reg := field(registerField, bytes.Join([][]byte{id, entry(key("a"), value("1"))}, nil))
	dereg := field(2, field(1, []byte("svc")))
	cases = append(cases,
		append(slices.Clone(reg), dereg...), // another kind after it: the last one is the command's
		append(slices.Clone(dereg), reg...),
		append(slices.Clone(reg), reg...), // twice: protobuf merges them
	)
	return cases
}

func TestDecodeCommandDecodesAsProtobufDoes(t *testing.T) {
	for _, b := range decodeCases(t) {
		want := &pb.Command{}
		wantErr := proto.Unmarshal(b, want)
		got := &pb.Command{}
		err := DecodeCommand(b, got)
		switch {
		case (err != nil) != (wantErr != nil):
			t.Fatalf("decodeCommand(%x): error %v, protobuf's %v", b, err, wantErr)
		case err == nil && !proto.Equal(got, want):
			t.Fatalf("decodeCommand(%x)\n = %v\nwant %v", b, got, want)
		}
	}
}

// TestDecodeGetResponseDecodesAsProtobufDoes: responses with random
// instances, their header and page token before, after or among the
// instances (an agent sends its stored encodings after the other fields;
// protobuf's own order puts them between), decode as protobuf decodes
// them, and so do their truncations.
func TestDecodeGetResponseDecodesAsProtobufDoes(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for range 200 {
		resp := &pb.GetResponse{Header: &pb.ResponseHeader{Revision: uint64(r.IntN(100)), ServedBy: "a1"}}
		if r.IntN(2) == 0 {
			resp.NextPageToken = "token"
		}
		for range r.IntN(5) {
			resp.Instances = append(resp.Instances, instanceWithMetadata(r))
		}
		head, err := proto.Marshal(&pb.GetResponse{Header: resp.Header, NextPageToken: resp.NextPageToken})
		if err != nil {
			t.Fatal(err)
		}
		var encs [][]byte
		for _, in := range resp.Instances {
			b, err := proto.Marshal(in)
			if err != nil {
				t.Fatal(err)
			}
			encs = append(encs, AppendGetResponseInstance(nil, b))
		}
		split := r.IntN(len(encs) + 1) // the other fields go after this many instances
		enc := slices.Concat(slices.Concat(encs[:split]...), head, slices.Concat(encs[split:]...))
		for _, b := range [][]byte{enc, enc[:len(enc)/2], enc[:max(len(enc)-1, 0)]} {
			want := &pb.GetResponse{}
			wantErr := proto.Unmarshal(b, want)
			got := &pb.GetResponse{Instances: []*pb.Instance{{Id: "left over"}}}
			err := DecodeGetResponse(b, got)
			switch {
			case (err != nil) != (wantErr != nil):
				t.Fatalf("DecodeGetResponse(%x): error %v, protobuf's %v", b, err, wantErr)
			case err == nil && !proto.Equal(got, want):
				t.Fatalf("DecodeGetResponse(%x)\n = %v\nwant %v", b, got, want)
			}
		}
	}
}

// Instances appended by AppendGetResponseInstance are the bytes protobuf
// writes for a GetResponse holding them, and take the bytes
// GetResponseInstanceSize says.
func TestAppendGetResponseInstanceIsProtobufsEncoding(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	det := proto.MarshalOptions{Deterministic: true}
	for range 100 {
		resp := &pb.GetResponse{}
		var got []byte
		size := 0
		for range r.IntN(5) {
			in := instanceWithMetadata(r)
			resp.Instances = append(resp.Instances, in)
			enc, err := det.Marshal(in)
			if err != nil {
				t.Fatal(err)
			}
			got = AppendGetResponseInstance(got, enc)
			size += GetResponseInstanceSize(enc)
		}
		want, err := det.Marshal(resp)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) || size != len(want) {
			t.Fatalf("appended %x (sized %d), protobuf writes %x", got, size, want)
		}
	}
}

// An instance with every field set encodes as protobuf encodes it: the
// copies newInstanceEncoding makes leave no field out. A field added to
// Instance is set here too (fillEveryField walks the descriptor) and
// fails this test until the copies name it.
func TestEncodingCopiesEveryFieldOfAnInstance(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	for range 200 {
		inst := everyFieldInstance(r)
		fields := inst.ProtoReflect().Descriptor().Fields()
		for i := range fields.Len() {
			if !inst.ProtoReflect().Has(fields.Get(i)) {
				t.Fatalf("instance field %s not set: the test would not see it left out", fields.Get(i).Name())
			}
		}
		want, err := deterministic.Marshal(inst)
		if err != nil {
			t.Fatal(err)
		}
		const num = 7
		got, err := AppendInstanceField([]byte("head"), num, inst)
		if err != nil {
			t.Fatal(err)
		}
		wantField := protowire.AppendBytes(protowire.AppendTag([]byte("head"), num, protowire.BytesType), want)
		if !bytes.Equal(got, wantField) {
			t.Fatalf("AppendInstanceField(%v)\n = %x\nwant %x", inst, got, wantField)
		}
	}
}

// A registration with every field of its command set encodes as protobuf
// encodes it: the copy of the command's fields other than its kind leaves
// none out.
func TestEncodeCommandCopiesEveryFieldOfACommand(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	for range 200 {
		cmd := everyFieldCommand(r)
		m := cmd.ProtoReflect()
		fields := m.Descriptor().Fields()
		for i := range fields.Len() {
			if fd := fields.Get(i); fd.ContainingOneof() == nil && !m.Has(fd) {
				t.Fatalf("command field %s not set: the test would not see it left out", fd.Name())
			}
		}
		want, err := deterministic.Marshal(cmd)
		if err != nil {
			t.Fatal(err)
		}
		got, err := EncodeCommand(cmd)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("EncodeCommand(%v)\n = %x\nwant %x", cmd, got, want)
		}
	}
}

// Encoding only reads its message: goroutines that encode one command,
// and its instance as a response's, while others read it, race with
// nothing (go test -race fails this test if encoding writes to it).
func TestEncodingOnlyReadsItsMessage(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 10))
	cmd := everyFieldCommand(r)
	inst := cmd.GetRegister()
	want, err := deterministic.Marshal(cmd)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := range 8 {
		wg.Go(func() {
			for range 200 {
				switch g % 4 {
				case 0:
					got, err := EncodeCommand(cmd)
					if err == nil && !bytes.Equal(got, want) {
						err = fmt.Errorf("EncodeCommand gave %x, want %x", got, want)
					}
					if err != nil {
						errs <- err
						return
					}
				case 1:
					if _, err := AppendInstanceField(nil, 2, inst); err != nil {
						errs <- err
						return
					}
				case 2:
					if cmd.GetRegister() == nil || len(inst.Metadata) == 0 {
						errs <- fmt.Errorf("reader saw the command without its instance or metadata")
						return
					}
				default:
					for k, v := range inst.Metadata {
						_, _ = k, v
					}
					_ = inst.Check.GetTtl().AsDuration()
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// AppendMessage gives protobuf's deterministic encoding of the whole
// message, whether the instance's field comes first (RegisterRequest),
// last (RegisterResponse) or between others (Event), and leaves the
// message as it was.
func TestAppendMessageIsTheDeterministicEncoding(t *testing.T) {
	r := rand.New(rand.NewPCG(13, 14))
	unknown := protowire.AppendVarint(protowire.AppendTag(nil, 99, protowire.VarintType), 7)
	var insts []*pb.Instance
	for i := range 300 {
		inst := randomInstance(r)
		if i%2 == 0 {
			inst = instanceWithMetadata(r)
		}
		if i%50 == 0 {
			inst.ProtoReflect().SetUnknown(unknown)
		}
		insts = append(insts, inst)
	}
	insts = append(insts, nil, &pb.Instance{})
	for _, inst := range insts {
		for _, m := range []struct {
			msg  proto.Message
			head proto.Message // msg's fields but its instance
			num  protowire.Number
		}{
			{&pb.RegisterRequest{Instance: inst, RequestId: "req-1"}, &pb.RegisterRequest{RequestId: "req-1"}, 1},
			{&pb.RegisterRequest{Instance: inst}, &pb.RegisterRequest{}, 1},
			{&pb.RegisterResponse{Header: &pb.ResponseHeader{Revision: 9, ServedBy: "z1"}, Instance: inst}, &pb.RegisterResponse{Header: &pb.ResponseHeader{Revision: 9, ServedBy: "z1"}}, 2},
			{&pb.Event{Type: pb.Event_DELETE, Instance: inst, Revision: 1 << 40}, &pb.Event{Type: pb.Event_DELETE, Revision: 1 << 40}, 2},
			{&pb.Event{Instance: inst, Revision: 3}, &pb.Event{Revision: 3}, 2},
		} {
			want, err := deterministic.Marshal(m.msg)
			if err != nil {
				t.Fatal(err)
			}
			before := proto.Clone(m.msg)
			got, err := AppendMessage([]byte("prefix"), m.head, m.num, inst)
			if err != nil {
				t.Fatalf("AppendMessage(%v): %v", m.msg, err)
			}
			if want = append([]byte("prefix"), want...); !bytes.Equal(got, want) {
				t.Fatalf("AppendMessage(%v)\n = %x\nwant %x", m.msg, got, want)
			}
			if !proto.Equal(m.msg, before) {
				t.Fatalf("AppendMessage changed %v, was %v", m.msg, before)
			}
		}
	}
}

// TestRegisterMessagesKnowEveryField: EncodeRegisterRequest and
// EncodeRegisterResponse copy every field of their message but its
// instance; a field added to either must be copied there too.
func TestRegisterMessagesKnowEveryField(t *testing.T) {
	for _, tc := range []struct {
		msg    proto.Message
		copied []protoreflect.Name
	}{
		{&pb.RegisterRequest{}, []protoreflect.Name{"instance", "request_id"}},
		{&pb.RegisterResponse{}, []protoreflect.Name{"header", "instance"}},
	} {
		fields := tc.msg.ProtoReflect().Descriptor().Fields()
		var names []protoreflect.Name
		for i := range fields.Len() {
			names = append(names, fields.Get(i).Name())
		}
		if !slices.Equal(names, tc.copied) {
			t.Errorf("%s has fields %v; messages.go copies %v: copy the new ones there",
				tc.msg.ProtoReflect().Descriptor().Name(), names, tc.copied)
		}
	}
}
