package instcodec

import (
	"slices"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
)

// The messages a registration travels in besides its Raft entry: a
// client's RegisterRequest and the agent's RegisterResponse, and the
// batch of Commands a follower forwards to its leader.

// Field numbers of the instance in RegisterRequest and RegisterResponse,
// and of ApplyBatchRequest's commands.
var (
	registerRequestInstance  = fieldNumber(&pb.RegisterRequest{}, "instance")
	registerResponseInstance = fieldNumber(&pb.RegisterResponse{}, "instance")
	applyBatchCommands       = fieldNumber(&pb.ApplyBatchRequest{}, "commands")
)

// EncodeRegisterRequest returns r's deterministic encoding, its instance
// written as AppendInstanceField does. r is only read.
func EncodeRegisterRequest(r *pb.RegisterRequest) ([]byte, error) {
	// Every field of the request but its instance
	// (TestRegisterMessagesKnowEveryField).
	head := &pb.RegisterRequest{RequestId: r.RequestId}
	return AppendMessage(nil, head, registerRequestInstance, r.Instance)
}

// EncodeRegisterResponse returns r's deterministic encoding, its instance
// written as AppendInstanceField does. r is only read: its instance may
// be one that others read too.
func EncodeRegisterResponse(r *pb.RegisterResponse) ([]byte, error) {
	// Every field of the response but its instance
	// (TestRegisterMessagesKnowEveryField).
	head := &pb.RegisterResponse{Header: r.Header}
	return AppendMessage(nil, head, registerResponseInstance, r.Instance)
}

// DecodeRegisterRequest decodes enc into r as proto.Unmarshal does, its
// instance by DecodeInstance.
func DecodeRegisterRequest(enc []byte, r *pb.RegisterRequest) error {
	return DecodeMessageWithInstance(enc, r, registerRequestInstance, func(inst *pb.Instance) { r.Instance = inst })
}

// DecodeRegisterResponse decodes enc into r as proto.Unmarshal does, its
// instance by DecodeInstance.
func DecodeRegisterResponse(enc []byte, r *pb.RegisterResponse) error {
	return DecodeMessageWithInstance(enc, r, registerResponseInstance, func(inst *pb.Instance) { r.Instance = inst })
}

// EncodeApplyBatch returns the encoding of a follower's batch of
// forwarded writes, each command by EncodeCommand, and true; or false
// when m has fields this agent does not know or a nil command, which
// protobuf must encode. m is only read.
func EncodeApplyBatch(m *pb.ApplyBatchRequest) ([]byte, bool, error) {
	if len(m.ProtoReflect().GetUnknown()) > 0 || slices.Contains(m.Commands, nil) {
		return nil, false, nil
	}
	var b []byte
	for _, cmd := range m.Commands {
		enc, err := EncodeCommand(cmd)
		if err != nil {
			return nil, false, err
		}
		b = protowire.AppendTag(b, applyBatchCommands, protowire.BytesType)
		b = protowire.AppendBytes(b, enc)
	}
	return b, true, nil
}

// DecodeApplyBatch decodes a follower's batch of forwarded writes into
// m, which it resets, each command with DecodeCommand. A batch with
// fields other than its commands is decoded by protobuf alone.
func DecodeApplyBatch(enc []byte, m *pb.ApplyBatchRequest) error {
	proto.Reset(m)
	for b := enc; len(b) > 0; {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 || num != applyBatchCommands || typ != protowire.BytesType {
			return proto.Unmarshal(enc, m)
		}
		v, l := protowire.ConsumeBytes(b[n:])
		if l < 0 {
			return proto.Unmarshal(enc, m)
		}
		cmd := &pb.Command{}
		if err := DecodeCommand(v, cmd); err != nil {
			return err
		}
		m.Commands = append(m.Commands, cmd)
		b = b[n+l:]
	}
	return nil
}

// getResponseInstances is GetResponse's instances field.
var getResponseInstances = fieldNumber(&pb.GetResponse{}, "instances")

// GetResponseInstanceSize is the bytes an instance encoded as enc takes
// in a GetResponse's instances field.
func GetResponseInstanceSize(enc []byte) int {
	return protowire.SizeTag(getResponseInstances) + protowire.SizeBytes(len(enc))
}

// AppendGetResponseInstance appends to b an instance encoded as enc as
// an element of a GetResponse's instances field: what protobuf writes for
// it, so that bytes so appended (as the response's unknown fields, say)
// decode into its Instances in order.
func AppendGetResponseInstance(b, enc []byte) []byte {
	b = protowire.AppendTag(b, getResponseInstances, protowire.BytesType)
	return protowire.AppendBytes(b, enc)
}

// DecodeGetResponse decodes enc into r as proto.Unmarshal does, each
// instance by DecodeInstance and the response's other fields by
// protobuf: a Get of a service's instances is decoded at the cost of its
// instances' fields, not of protobuf's reflection over their metadata.
func DecodeGetResponse(enc []byte, r *pb.GetResponse) error {
	var insts [][]byte
	var rest []byte // the other fields, in their order
	for at := 0; at < len(enc); {
		num, typ, n := protowire.ConsumeTag(enc[at:])
		if n < 0 {
			return proto.Unmarshal(enc, r)
		}
		m := protowire.ConsumeFieldValue(num, typ, enc[at+n:])
		if m < 0 {
			return proto.Unmarshal(enc, r)
		}
		if num == getResponseInstances && typ == protowire.BytesType {
			v, _ := protowire.ConsumeBytes(enc[at+n:])
			insts = append(insts, v)
		} else {
			rest = append(rest, enc[at:at+n+m]...)
		}
		at += n + m
	}
	if err := proto.Unmarshal(rest, r); err != nil {
		return err
	}
	if len(insts) == 0 {
		return nil
	}
	r.Instances = make([]*pb.Instance, len(insts))
	for i, v := range insts {
		inst := &pb.Instance{}
		if err := DecodeInstance(v, inst); err != nil {
			return err
		}
		r.Instances[i] = inst
	}
	return nil
}
