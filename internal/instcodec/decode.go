package instcodec

import (
	"fmt"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
)

// DecodeCommand decodes an entry's command into cmd: proto.Unmarshal's
// result, except that a registration's metadata map is decoded here
// rather than by protobuf's reflection over it (a value and an interface
// for every key and value, half of what decoding a registration cost
// each replica). A command that holds its instance more than once, or
// another kind too, is decoded by protobuf alone.
func DecodeCommand(data []byte, cmd *pb.Command) error {
	at, end, inst, ok := singleField(data, registerField)
	if !ok {
		return proto.Unmarshal(data, cmd)
	}
	if err := unmarshalAround(data, at, end, cmd); err != nil {
		return err
	}
	if cmd.Kind != nil {
		return proto.Unmarshal(data, cmd)
	}
	reg := &pb.Instance{}
	if err := DecodeInstance(inst, reg); err != nil {
		return err
	}
	cmd.Kind = &pb.Command_Register{Register: reg}
	return nil
}

// unmarshalAround decodes enc without its bytes from at to end into m,
// which it resets first.
func unmarshalAround(enc []byte, at, end int, m proto.Message) error {
	if err := proto.Unmarshal(enc[:at], m); err != nil {
		return err
	}
	return proto.UnmarshalOptions{Merge: true}.Unmarshal(enc[end:], m)
}

// DecodeMessageWithInstance decodes enc into m, which it resets, as
// proto.Unmarshal does, with the instance in its field num decoded by
// DecodeInstance and handed to set. m's own fields are decoded by
// protobuf; when the instance field is not there exactly once, so is
// all of enc.
func DecodeMessageWithInstance(enc []byte, m proto.Message, num protowire.Number, set func(*pb.Instance)) error {
	at, end, v, ok := singleField(enc, num)
	if !ok {
		return proto.Unmarshal(enc, m)
	}
	if err := unmarshalAround(enc, at, end, m); err != nil {
		return err
	}
	inst := &pb.Instance{}
	if err := DecodeInstance(v, inst); err != nil {
		return err
	}
	set(inst)
	return nil
}

// singleField returns where the field num of wire type bytes starts and
// ends in enc, and its bytes, when it is there exactly once.
func singleField(enc []byte, num protowire.Number) (at, end int, v []byte, ok bool) {
	at = -1
	for i := 0; i < len(enc); {
		n, typ, m := protowire.ConsumeTag(enc[i:])
		if m < 0 {
			return 0, 0, nil, false
		}
		l := protowire.ConsumeFieldValue(n, typ, enc[i+m:])
		if l < 0 {
			return 0, 0, nil, false
		}
		if n == num {
			if typ != protowire.BytesType || at >= 0 {
				return 0, 0, nil, false
			}
			at, end = i, i+m+l
			v, _ = protowire.ConsumeBytes(enc[i+m:])
		}
		i += m + l
	}
	return at, end, v, at >= 0
}

// DecodeInstance decodes enc into inst, which it resets, as
// proto.Unmarshal does: the fields before and after the metadata entries
// by protobuf, the entries here, without protobuf's reflection over the
// map. Entries that are not all together are left to protobuf.
func DecodeInstance(enc []byte, inst *pb.Instance) error {
	start, end := metadataEntries(enc)
	if start < 0 {
		return proto.Unmarshal(enc, inst)
	}
	if err := unmarshalAround(enc, start, end, inst); err != nil {
		return err
	}
	md := make(map[string]string)
	for b := enc[start:end]; len(b) > 0; {
		_, _, n := protowire.ConsumeTag(b)
		entry, m := protowire.ConsumeBytes(b[n:])
		k, v, err := metadataEntry(entry)
		if err != nil {
			return err
		}
		md[k] = v
		b = b[n+m:]
	}
	inst.Metadata = md
	return nil
}

// metadataEntries returns where the metadata entries of an instance's
// encoding start and end, or -1 when it has none, or has them apart or
// of another wire type.
func metadataEntries(enc []byte) (start, end int) {
	start, end = -1, -1
	for at := 0; at < len(enc); {
		n, typ, m := protowire.ConsumeTag(enc[at:])
		if m < 0 {
			return -1, -1
		}
		l := protowire.ConsumeFieldValue(n, typ, enc[at+m:])
		if l < 0 {
			return -1, -1
		}
		if n == metadataField {
			if typ != protowire.BytesType || (start >= 0 && end != at) {
				return -1, -1
			}
			if start < 0 {
				start = at
			}
			end = at + m + l
		}
		at += m + l
	}
	return start, end
}

// metadataEntry decodes a metadata map entry as protobuf does: a missing
// key or value is empty, fields other than them are skipped, a string
// must be UTF-8.
func metadataEntry(b []byte) (k, v string, err error) {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return "", "", protowire.ParseError(n)
		}
		if num > protowire.MaxValidNumber {
			return "", "", fmt.Errorf("metadata: field number %d out of range", num)
		}
		b = b[n:]
		if (num == mapKeyField || num == mapValueField) && typ == protowire.BytesType {
			s, m := protowire.ConsumeBytes(b)
			if m < 0 {
				return "", "", protowire.ParseError(m)
			}
			if !utf8.Valid(s) {
				return "", "", fmt.Errorf("metadata: string field contains invalid UTF-8")
			}
			if num == mapKeyField {
				k = string(s)
			} else {
				v = string(s)
			}
			b = b[m:]
			continue
		}
		m := protowire.ConsumeFieldValue(num, typ, b)
		if m < 0 {
			return "", "", protowire.ParseError(m)
		}
		b = b[m:]
	}
	return k, v, nil
}
