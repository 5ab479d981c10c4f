package instcodec

import (
	"math/rand/v2"

	"google.golang.org/protobuf/reflect/protoreflect"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
)

// fillEveryField sets every field of m that is not in a oneof, and those
// of the messages it holds, to a value protobuf writes (never a default),
// walking m's descriptor: a field added to the message later is set too.
func fillEveryField(r *rand.Rand, m protoreflect.Message) {
	fields := m.Descriptor().Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		switch {
		case fd.ContainingOneof() != nil:
		case fd.IsList():
			l := m.Mutable(fd).List()
			for range 1 + r.IntN(3) {
				l.Append(fieldValue(r, fd, l.NewElement))
			}
		case fd.IsMap():
			mp := m.Mutable(fd).Map()
			for range 1 + r.IntN(5) {
				mp.Set(fieldValue(r, fd.MapKey(), nil).MapKey(), fieldValue(r, fd.MapValue(), mp.NewValue))
			}
		default:
			m.Set(fd, fieldValue(r, fd, func() protoreflect.Value { return m.NewField(fd) }))
		}
	}
}

// fieldValue is a value of fd's kind that is not its default; newMessage
// makes an empty message of a message field, which is then filled.
func fieldValue(r *rand.Rand, fd protoreflect.FieldDescriptor, newMessage func() protoreflect.Value) protoreflect.Value {
	sign := int64(1 - 2*r.IntN(2))
	switch fd.Kind() {
	case protoreflect.BoolKind:
		return protoreflect.ValueOfBool(true)
	case protoreflect.EnumKind:
		vals := fd.Enum().Values()
		return protoreflect.ValueOfEnum(vals.Get(r.IntN(vals.Len()-1) + 1).Number())
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		return protoreflect.ValueOfInt32(int32(sign) * (1 + r.Int32N(1<<30)))
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		return protoreflect.ValueOfInt64(sign * (1 + r.Int64N(1<<62)))
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		return protoreflect.ValueOfUint32(1 + r.Uint32N(1<<31))
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		return protoreflect.ValueOfUint64(1 + r.Uint64N(1<<63))
	case protoreflect.FloatKind:
		return protoreflect.ValueOfFloat32(1 + r.Float32())
	case protoreflect.DoubleKind:
		return protoreflect.ValueOfFloat64(1 + r.Float64())
	case protoreflect.StringKind:
		return protoreflect.ValueOfString(word(r))
	case protoreflect.BytesKind:
		return protoreflect.ValueOfBytes([]byte(word(r)))
	case protoreflect.MessageKind, protoreflect.GroupKind:
		v := newMessage()
		fillEveryField(r, v.Message())
		return v
	}
	panic("fieldValue: kind " + fd.Kind().String())
}

// word is a short non-empty string, sometimes not ASCII, sometimes long
// enough for a two-byte length.
func word(r *rand.Rand) string {
	return []string{"a", "ab", "b", "é", "zone-a", "w-" + string(rune('a'+r.IntN(26))), string(make([]byte, 130))}[r.IntN(7)]
}

// everyFieldInstance is an instance with every field set, metadata
// included.
func everyFieldInstance(r *rand.Rand) *pb.Instance {
	inst := &pb.Instance{}
	fillEveryField(r, inst.ProtoReflect())
	return inst
}

// everyFieldCommand is a registration with every field of its command
// set, and every field of its instance.
func everyFieldCommand(r *rand.Rand) *pb.Command {
	cmd := &pb.Command{}
	fillEveryField(r, cmd.ProtoReflect())
	cmd.Kind = &pb.Command_Register{Register: everyFieldInstance(r)}
	return cmd
}

// randomInstance is an instance with every field set, then about a third
// of them cleared again.
func randomInstance(r *rand.Rand) *pb.Instance {
	inst := everyFieldInstance(r)
	m := inst.ProtoReflect()
	fields := m.Descriptor().Fields()
	for i := range fields.Len() {
		if r.IntN(3) == 0 {
			m.Clear(fields.Get(i))
		}
	}
	return inst
}

// register is the command that registers inst.
func register(inst *pb.Instance) *pb.Command {
	return &pb.Command{Kind: &pb.Command_Register{Register: inst}}
}
