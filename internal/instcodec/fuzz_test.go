package instcodec

import (
	"bytes"
	"math/rand/v2"
	"slices"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
)

// fuzzSeeds are encodings of registrations, those decodeCases makes
// (entries as agents write them, in protobuf's other orders, broken) and
// a few with every field set.
func fuzzSeeds(f *testing.F) [][]byte {
	cases := decodeCases(f)
	seeds := append(cases[:40:40], cases[3000:]...)
	r := rand.New(rand.NewPCG(11, 12))
	for range 4 {
		b, err := deterministic.Marshal(everyFieldCommand(r))
		if err != nil {
			f.Fatal(err)
		}
		seeds = append(seeds, b)
	}
	return seeds
}

// FuzzDecodeRegistration decodes arbitrary bytes as a command, an
// instance, a RegisterRequest and a RegisterResponse, here and by
// protobuf: both fail, or both give equal messages.
func FuzzDecodeRegistration(f *testing.F) {
	for _, b := range fuzzSeeds(f) {
		f.Add(b)
		if inst := commandInstance(b); inst != nil {
			f.Add(inst)
		}
	}
	reqField := fieldNumber(&pb.RegisterRequest{}, "instance")
	respField := fieldNumber(&pb.RegisterResponse{}, "instance")
	f.Fuzz(func(t *testing.T, data []byte) {
		check := func(name string, want, got proto.Message, decode func() error) {
			wantErr := proto.Unmarshal(data, want)
			err := decode()
			switch {
			case (err != nil) != (wantErr != nil):
				t.Fatalf("%s from %x: error %v, protobuf's %v", name, data, err, wantErr)
			case err == nil && !proto.Equal(got, want):
				t.Fatalf("%s from %x:\n got %v\nwant %v", name, data, got, want)
			}
		}
		cmd := &pb.Command{}
		check("command", &pb.Command{}, cmd, func() error { return DecodeCommand(data, cmd) })
		inst := &pb.Instance{}
		check("instance", &pb.Instance{}, inst, func() error { return DecodeInstance(data, inst) })
		req := &pb.RegisterRequest{}
		check("RegisterRequest", &pb.RegisterRequest{}, req, func() error {
			return DecodeMessageWithInstance(data, req, reqField, func(i *pb.Instance) { req.Instance = i })
		})
		resp := &pb.RegisterResponse{}
		check("RegisterResponse", &pb.RegisterResponse{}, resp, func() error {
			return DecodeMessageWithInstance(data, resp, respField, func(i *pb.Instance) { resp.Instance = i })
		})
		get := &pb.GetResponse{}
		check("GetResponse", &pb.GetResponse{}, get, func() error { return DecodeGetResponse(data, get) })
	})
}

// commandInstance is the register field's bytes of an encoded command,
// or nil.
func commandInstance(b []byte) []byte {
	if _, _, v, ok := singleField(b, registerField); ok {
		return v
	}
	return nil
}

// FuzzApplyBatch decodes arbitrary bytes as a follower's batch of
// forwarded writes, here and by protobuf: both fail, or both give equal
// batches; and a batch decoded encodes as protobuf's deterministic
// encoding, or is left to protobuf.
func FuzzApplyBatch(f *testing.F) {
	field := func(b []byte) []byte {
		return protowire.AppendBytes(protowire.AppendTag(nil, applyBatchCommands, protowire.BytesType), b)
	}
	seeds := fuzzSeeds(f)
	for i := 0; i+2 < len(seeds); i += 3 {
		f.Add(slices.Concat(field(seeds[i]), field(seeds[i+1]), field(seeds[i+2])))
	}
	f.Add(append(field(seeds[0]), 0x10, 0x01)) // a field the batch does not have
	f.Fuzz(func(t *testing.T, data []byte) {
		want := &pb.ApplyBatchRequest{}
		wantErr := proto.Unmarshal(data, want)
		got := &pb.ApplyBatchRequest{Commands: []*pb.Command{{RequestId: "left over"}}}
		err := DecodeApplyBatch(data, got)
		switch {
		case (err != nil) != (wantErr != nil):
			t.Fatalf("DecodeApplyBatch(%x): error %v, protobuf's %v", data, err, wantErr)
		case err != nil:
			return
		case !proto.Equal(got, want):
			t.Fatalf("DecodeApplyBatch(%x)\n = %v\nwant %v", data, got, want)
		}
		before := proto.Clone(got)
		enc, ok, err := EncodeApplyBatch(got)
		wantEnc, wantErr := deterministic.Marshal(got)
		switch {
		case (err != nil) != (wantErr != nil):
			t.Fatalf("EncodeApplyBatch(%v): error %v, protobuf's %v", got, err, wantErr)
		case err == nil && ok && !bytes.Equal(enc, wantEnc):
			t.Fatalf("EncodeApplyBatch(%v)\n = %x\nwant %x", got, enc, wantEnc)
		}
		if !proto.Equal(got, before) {
			t.Fatalf("encoding changed the batch: %v, was %v", got, before)
		}
	})
}

// FuzzEncodeRegistration encodes an instance decoded from arbitrary bytes,
// with one more metadata entry that may not be UTF-8, here and by
// protobuf, alone, in a RegisterRequest and in a command: both fail, or both give the same
// bytes; and the message is left as it was.
func FuzzEncodeRegistration(f *testing.F) {
	for i, b := range fuzzSeeds(f) {
		if inst := commandInstance(b); inst != nil {
			f.Add(inst, "", "", int64(i))
			f.Add(inst, "k\xff", "v", int64(-i))
		}
	}
	f.Fuzz(func(t *testing.T, data []byte, key, value string, at int64) {
		inst := &pb.Instance{}
		if proto.Unmarshal(data, inst) != nil {
			return
		}
		if key != "" || value != "" {
			if inst.Metadata == nil {
				inst.Metadata = map[string]string{}
			}
			inst.Metadata[key] = value
		}
		cmd := &pb.Command{Kind: &pb.Command_Register{Register: inst}, RequestId: key, Time: at}
		before := proto.Clone(cmd)

		want, wantErr := deterministic.Marshal(inst)
		got, err := AppendInstanceField(nil, 2, inst)
		if wantErr == nil {
			want = protowire.AppendBytes(protowire.AppendTag(nil, 2, protowire.BytesType), want)
		}
		switch {
		case (err != nil) != (wantErr != nil):
			t.Fatalf("AppendInstanceField(%v): error %v, protobuf's %v", inst, err, wantErr)
		case err == nil && !bytes.Equal(got, want):
			t.Fatalf("AppendInstanceField(%v)\n = %x\nwant %x", inst, got, want)
		}

		req := &pb.RegisterRequest{Instance: inst, RequestId: key}
		want, wantErr = deterministic.Marshal(req)
		got, err = AppendMessage(nil, &pb.RegisterRequest{RequestId: key}, fieldNumber(req, "instance"), inst)
		switch {
		case (err != nil) != (wantErr != nil):
			t.Fatalf("AppendMessage(%v): error %v, protobuf's %v", req, err, wantErr)
		case err == nil && !bytes.Equal(got, want):
			t.Fatalf("AppendMessage(%v)\n = %x\nwant %x", req, got, want)
		}

		resp := &pb.RegisterResponse{Header: &pb.ResponseHeader{Revision: uint64(at), ServedBy: value}, Instance: inst}
		want, wantErr = deterministic.Marshal(resp)
		got, err = EncodeRegisterResponse(resp)
		switch {
		case (err != nil) != (wantErr != nil):
			t.Fatalf("EncodeRegisterResponse(%v): error %v, protobuf's %v", resp, err, wantErr)
		case err == nil && !bytes.Equal(got, want):
			t.Fatalf("EncodeRegisterResponse(%v)\n = %x\nwant %x", resp, got, want)
		}

		want, wantErr = deterministic.Marshal(cmd)
		got, err = EncodeCommand(cmd)
		switch {
		case (err != nil) != (wantErr != nil):
			t.Fatalf("EncodeCommand(%v): error %v, protobuf's %v", cmd, err, wantErr)
		case err == nil && !bytes.Equal(got, want):
			t.Fatalf("EncodeCommand(%v)\n = %x\nwant %x", cmd, got, want)
		}
		if !proto.Equal(cmd, before) {
			t.Fatalf("encoding changed the command: %v, was %v", cmd, before)
		}
	})
}
