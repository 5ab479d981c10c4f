package grpcapi

import (
	"bytes"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/zrpcio/zrpc/api/apierr"
)

// A request whose bytes are not a message of its method's type is a bad
// request: InvalidArgument naming the type and the decoder's complaint.
// grpc-go answers a codec's error with Internal, before any interceptor
// sees the call, so the agent's codec does not fail: it leaves the
// message empty but for a mark in its unknown fields (the highest field
// number protobuf allows, holding the decoder's error), and the
// interceptors refuse a marked request.

// undecodableField is the field number of the mark.
const undecodableField = protowire.MaxValidNumber

var undecodableTag = protowire.AppendTag(nil, undecodableField, protowire.BytesType)

// markUndecodable empties v and marks it undecodable because of err; it
// returns err itself when v is no protobuf message.
func markUndecodable(v any, err error) error {
	m, ok := v.(proto.Message)
	if !ok {
		return err
	}
	proto.Reset(m)
	m.ProtoReflect().SetUnknown(protowire.AppendString(bytes.Clone(undecodableTag), err.Error()))
	return nil
}

// undecodable returns InvalidArgument when req carries the mark of
// markUndecodable, nil otherwise.
func undecodable(req any) error {
	m, ok := req.(proto.Message)
	if !ok {
		return nil
	}
	u := m.ProtoReflect().GetUnknown()
	if !bytes.HasPrefix(u, undecodableTag) {
		return nil
	}
	why, n := protowire.ConsumeString(u[len(undecodableTag):])
	if n < 0 {
		why = "malformed"
	}
	return apierr.Invalid("request", "is not a %s message: %s", m.ProtoReflect().Descriptor().FullName(), why)
}

// decodedStream refuses, from RecvMsg, a streamed request that was not a
// message.
type decodedStream struct{ grpc.ServerStream }

func (s decodedStream) RecvMsg(m any) error {
	if err := s.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	return undecodable(m)
}
