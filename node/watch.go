package node

import (
	"google.golang.org/protobuf/proto"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
)

// watchParts splits a watch response into messages of at most
// maxAnswerBytes of events each (at least one event, however large), all but
// the last marked more: a snapshot of a large service, or a revision that
// removed many large instances, would not fit in one gRPC message. A small
// response is its own one part.
func watchParts(resp *pb.WatchResponse) []*pb.WatchResponse {
	var parts []*pb.WatchResponse
	start, size := 0, 0
	for i, ev := range resp.Events {
		sz := proto.Size(ev)
		if i > start && size+sz > maxAnswerBytes {
			parts = append(parts, watchPart(resp, resp.Events[start:i], true))
			start, size = i, 0
		}
		size += sz
	}
	if parts == nil {
		return []*pb.WatchResponse{resp}
	}
	return append(parts, watchPart(resp, resp.Events[start:], false))
}

func watchPart(resp *pb.WatchResponse, evs []*pb.Event, more bool) *pb.WatchResponse {
	return &pb.WatchResponse{Header: resp.Header, Snapshot: resp.Snapshot, Events: evs, More: more}
}
