package wirecodec

import (
	"bytes"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
)

// borrowedMessages are the messages whose bytes field the agent and its
// clients borrow (Borrow, BorrowPieces) or read into a destination
// (WithDestination), with that field.
var borrowedMessages = []struct {
	msg   proto.Message
	field protoreflect.Name
}{
	{&pb.BlobPutRequest{}, "chunk"}, // in a oneof
	{&pb.BlobGetResponse{}, "chunk"},
	{&pb.PutShardRequest{}, "payload"},
	{&pb.GetShardResponse{}, "payload"},
	{&pb.ReadShardsResponse{}, "payload"},
	{&pb.WriteShardsRequest{}, "payload"},
}

// hasGroup reports whether wire, read as far as it goes, has a group at
// its top level: BorrowPieces refuses those, which proto3 does not write.
func hasGroup(wire []byte) bool {
	for len(wire) > 0 {
		num, typ, n := protowire.ConsumeTag(wire)
		if n < 0 {
			return false
		}
		if typ == protowire.StartGroupType || typ == protowire.EndGroupType {
			return true
		}
		m := protowire.ConsumeFieldValue(num, typ, wire[n:])
		if m < 0 {
			return false
		}
		wire = wire[n+m:]
	}
	return false
}

// FuzzBorrowedMessagesReadAsProtobufDoes decodes arbitrary bytes, cut in
// up to three frames, into every borrowed message: borrowed, borrowed in
// pieces, read into a destination, and as usual. Each fails when
// protobuf fails, and otherwise gives protobuf's message; nothing
// panics.
func FuzzBorrowedMessagesReadAsProtobufDoes(f *testing.F) {
	chunk := pattern(3000, 1)
	hdr := &pb.BlobPutRequest{Msg: &pb.BlobPutRequest_Header{Header: &pb.BlobPutHeader{Name: "n", Size: 9}}}
	for _, m := range []proto.Message{
		&pb.BlobPutRequest{Msg: &pb.BlobPutRequest_Chunk{Chunk: chunk}},
		hdr,
		&pb.BlobGetResponse{Blob: &pb.Blob{Name: "a/b"}, Chunk: chunk},
		&pb.PutShardRequest{Ref: &pb.ShardRef{BlobId: "ab", Block: 2}, DataShards: 2, ParityShards: 1, Sum: 7, Payload: chunk, Staged: true},
		&pb.GetShardResponse{Sum: 9, Payload: chunk},
		&pb.ReadShardsResponse{Shard: &pb.ShardPos{Block: 7, Index: 2}, Sum: 3, Payload: chunk, Error: "e"},
		&pb.WriteShardsRequest{Header: &pb.WriteShardsHeader{}, Block: 1, BlockLen: 3000, Sum: 5, Payload: chunk},
	} {
		wire, err := proto.Marshal(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(wire, uint16(1), uint16(len(wire)/2))
		hw, _ := proto.Marshal(hdr)
		f.Add(append(wire, hw...), uint16(3), uint16(len(wire)-1))
	}
	f.Fuzz(func(t *testing.T, wire []byte, cut1, cut2 uint16) {
		cuts := []int{min(int(cut1), len(wire)), min(int(cut2), len(wire))}
		if cuts[0] > cuts[1] {
			cuts[0], cuts[1] = cuts[1], cuts[0]
		}
		for _, bm := range borrowedMessages {
			want := bm.msg.ProtoReflect().New().Interface()
			wantErr := proto.Unmarshal(wire, want)
			fd := want.ProtoReflect().Descriptor().Fields().ByName(bm.field)
			check := func(how string, got proto.Message, err error) {
				t.Helper()
				switch {
				case (err != nil) != (wantErr != nil):
					t.Fatalf("%s %T from %x cut at %v: error %v, protobuf's %v", how, got, wire, cuts, err, wantErr)
				case err == nil && !proto.Equal(got, want):
					t.Fatalf("%s %T from %x cut at %v:\n got %v\nwant %v", how, got, wire, cuts, got, want)
				}
			}

			got := bm.msg.ProtoReflect().New().Interface()
			done := Borrow(got, bm.field)
			data := framesOf(wire, pool{}, cuts...)
			err := Codec{}.Unmarshal(data, got)
			data.Free()
			free := done()
			check("borrowed", got, err)
			free()

			got = bm.msg.ProtoReflect().New().Interface()
			donePieces := BorrowPieces(got, bm.field)
			data = framesOf(wire, pool{}, cuts...)
			err = Codec{}.Unmarshal(data, got)
			data.Free()
			pieces, free := donePieces()
			if pieces != nil {
				got.ProtoReflect().Set(fd, protoreflect.ValueOfBytes(bytes.Join(pieces, nil)))
			}
			if !(err != nil && wantErr == nil && hasGroup(wire)) {
				check("borrowed in pieces", got, err)
			}
			free()

			for _, room := range []int{0, len(wire) / 2, len(wire)} {
				got = bm.msg.ProtoReflect().New().Interface()
				borrows.Store(got, &borrow{fd: fd, dst: make([]byte, room)})
				data = framesOf(wire, pool{}, cuts...)
				err = Codec{}.Unmarshal(data, got)
				data.Free()
				borrows.Delete(got)
				check("read into a destination", got, err)
			}

			got = bm.msg.ProtoReflect().New().Interface()
			data = framesOf(wire, pool{}, cuts...)
			err = Codec{}.Unmarshal(data, got)
			data.Free()
			check("read", got, err)
		}
	})
}
