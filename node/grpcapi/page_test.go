package grpcapi

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/zrpcio/zrpc/api/apierr"
	pb "github.com/zrpcio/zrpc/api/zrpcpb"
)

func TestWatchPartsBoundBytes(t *testing.T) {
	big := strings.Repeat("x", 1000)
	var evs []*pb.Event
	for i := range 3000 { // about 3 MB
		evs = append(evs, &pb.Event{Revision: 7, Instance: &pb.Instance{Service: "s", Id: fmt.Sprintf("i%d", i), Address: big}})
	}
	resp := &pb.WatchResponse{Header: &pb.ResponseHeader{Revision: 7}, Snapshot: true, Events: evs}
	parts, _ := watchParts(resp)
	if len(parts) < 3 {
		t.Fatalf("10 MB of events went in %d parts, want at least 3 of at most %d bytes", len(parts), maxWatchPartBytes)
	}
	total := 0
	for i, p := range parts {
		size := 0
		for _, ev := range p.Events {
			size += proto.Size(ev)
		}
		if size > maxWatchPartBytes || len(p.Events) == 0 {
			t.Fatalf("part %d holds %d events of %d bytes", i, len(p.Events), size)
		}
		if p.More != (i < len(parts)-1) || p.Snapshot != (i == 0) || p.Header.Revision != 7 {
			t.Fatalf("part %d of %d: more %v, snapshot %v, revision %d", i, len(parts), p.More, p.Snapshot, p.Header.Revision)
		}
		total += len(p.Events)
	}
	if total != len(evs) {
		t.Fatalf("parts hold %d events, want %d", total, len(evs))
	}
	if small, _ := watchParts(&pb.WatchResponse{Events: evs[:3]}); len(small) != 1 || small[0].More {
		t.Fatalf("a small response went in %d parts", len(small))
	}
}

// TestGetUnpagedWholeOrTooLarge: a Get that asks for no pages (a client
// from before paging) gets the whole service, or ErrTooLarge when it does
// not fit in one message, never a first page taken for the whole.
func TestGetUnpagedWholeOrTooLarge(t *testing.T) {
	big := strings.Repeat("x", 1<<20)
	var insts []*pb.Instance
	for i := range 70 { // 70 MiB
		insts = append(insts, &pb.Instance{Service: "big.rpc", Id: fmt.Sprintf("i%02d", i), Address: big})
	}
	if _, err := getPage(&pb.GetRequest{Service: "big.rpc"}, insts, 9); !errors.Is(err, apierr.ErrTooLarge) || !strings.Contains(err.Error(), "page_size") {
		t.Fatalf("unpaged Get of 70 MiB = %v, want ErrTooLarge pointing to page_size", err)
	}
	resp, err := getPage(&pb.GetRequest{Service: "big.rpc"}, insts[:10], 9)
	if err != nil || len(resp.Instances) != 10 || resp.NextPageToken != "" {
		t.Fatalf("unpaged Get of 10 MiB = %d instances, token %q, %v; want all 10 and no token", len(resp.GetInstances()), resp.GetNextPageToken(), err)
	}
	resp, err = getPage(&pb.GetRequest{Service: "big.rpc", PageSize: 100}, insts, 9)
	if err != nil || len(resp.Instances) != 3 || resp.NextPageToken == "" {
		t.Fatalf("paged Get of 70 MiB = %d instances, token %q, %v; want a first page of 3 (4 MiB) and a token", len(resp.GetInstances()), resp.GetNextPageToken(), err)
	}
}
