package grpcapi

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/zrpcio/zrpc/api/apierr"
	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/raftstore"
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
	enc := encodedInstances(t, insts)
	if _, err := getPage(&pb.GetRequest{Service: "big.rpc"}, enc, 9); !errors.Is(err, apierr.ErrTooLarge) || !strings.Contains(err.Error(), "page_size") {
		t.Fatalf("unpaged Get of 70 MiB = %v, want ErrTooLarge pointing to page_size", err)
	}
	resp := page(t, &pb.GetRequest{Service: "big.rpc"}, enc[:10], 9)
	if len(resp.Instances) != 10 || resp.NextPageToken != "" {
		t.Fatalf("unpaged Get of 10 MiB = %d instances, token %q; want all 10 and no token", len(resp.GetInstances()), resp.GetNextPageToken())
	}
	resp = page(t, &pb.GetRequest{Service: "big.rpc", PageSize: 100}, enc, 9)
	if len(resp.Instances) != 3 || resp.NextPageToken == "" {
		t.Fatalf("paged Get of 70 MiB = %d instances, token %q; want a first page of 3 (4 MiB) and a token", len(resp.GetInstances()), resp.GetNextPageToken())
	}
}

// TestGetPageSendsTheStoredInstances: a page carries the stored encodings
// as its instances field: decoded by a receiver they are the instances,
// in id order, passing ones only when asked, the page's header and token
// beside them; and the next page goes on after the last.
func TestGetPageSendsTheStoredInstances(t *testing.T) {
	var insts []*pb.Instance
	for i := range 5 {
		h := pb.Health_PASSING
		if i == 2 {
			h = pb.Health_CRITICAL
		}
		insts = append(insts, &pb.Instance{Service: "s.rpc", Id: fmt.Sprintf("i%d", i), Address: fmt.Sprintf("10.0.0.%d:80", i),
			Health: h, Metadata: map[string]string{"k": strconv.Itoa(i)}, ModRevision: uint64(3 + i)})
	}
	enc := encodedInstances(t, insts)
	resp := page(t, &pb.GetRequest{Service: "s.rpc"}, enc, 9)
	if len(resp.Instances) != 5 || resp.Header.GetRevision() != 9 {
		t.Fatalf("whole Get: %d instances at revision %d, want 5 at 9", len(resp.Instances), resp.Header.GetRevision())
	}
	for i, in := range resp.Instances {
		if !proto.Equal(in, insts[i]) {
			t.Fatalf("instance %d sent as %v, want %v", i, in, insts[i])
		}
	}
	req := &pb.GetRequest{Service: "s.rpc", PassingOnly: true, PageSize: 2}
	var got []string
	for n := 0; ; n++ {
		resp := page(t, req, enc, 9)
		for _, in := range resp.Instances {
			got = append(got, in.Id)
		}
		if resp.NextPageToken == "" {
			break
		}
		if n > 5 {
			t.Fatal("pages never end")
		}
		req.PageToken = resp.NextPageToken
	}
	if want := []string{"i0", "i1", "i3", "i4"}; !slices.Equal(got, want) {
		t.Fatalf("passing instances in pages of 2: %v, want %v", got, want)
	}
	// A service changed since the first page (an instance modified after
	// its revision) expires the token.
	first := page(t, &pb.GetRequest{Service: "s.rpc", PageSize: 2}, enc, 5)
	if _, err := getPage(&pb.GetRequest{Service: "s.rpc", PageToken: first.NextPageToken}, enc, 9); !errors.Is(err, apierr.ErrPageExpired) {
		t.Fatalf("next page after instances changed past the first page's revision: %v, want ErrPageExpired", err)
	}
}

// encodedInstances stores insts as the replica does and returns them as
// its EncodedInstances would.
func encodedInstances(t *testing.T, insts []*pb.Instance) []raftstore.EncodedInstance {
	t.Helper()
	out := make([]raftstore.EncodedInstance, len(insts))
	for i, in := range insts {
		b, err := proto.MarshalOptions{Deterministic: true}.Marshal(in)
		if err != nil {
			t.Fatal(err)
		}
		out[i] = raftstore.EncodedInstance{ID: in.Id, Health: in.Health, Encoding: b}
	}
	return out
}

// page returns getPage's answer as a client receives it: encoded and
// decoded again.
func page(t *testing.T, req *pb.GetRequest, all []raftstore.EncodedInstance, rev uint64) *pb.GetResponse {
	t.Helper()
	resp, err := getPage(req, all, rev)
	if err != nil {
		t.Fatal(err)
	}
	b, err := proto.Marshal(resp)
	if err != nil {
		t.Fatal(err)
	}
	out := &pb.GetResponse{}
	if err := proto.Unmarshal(b, out); err != nil {
		t.Fatal(err)
	}
	return out
}
