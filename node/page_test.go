package node

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/zrpcio/zrpc/api/apierr"
	pb "github.com/zrpcio/zrpc/api/zrpcpb"
)

func TestGetPages(t *testing.T) {
	n := startNode(t, testConfig(t))
	_, c := dial(t, n.GRPCAddr())
	ctx := ctxT(t)
	for i := range 5 {
		if _, err := c.Register(ctx, &pb.RegisterRequest{Instance: inst("user.rpc", fmt.Sprintf("u%d", i), fmt.Sprintf("127.0.0.1:%d", 9000+i))}); err != nil {
			t.Fatal(err)
		}
	}

	// Pages of two follow each other and reflect the first page's revision.
	req := &pb.GetRequest{Service: "user.rpc", PageSize: 2}
	var ids []string
	var revs []uint64
	for range 3 {
		resp, err := c.Get(ctx, req)
		if err != nil {
			t.Fatalf("Get page %d: %v", len(revs)+1, err)
		}
		for _, in := range resp.Instances {
			ids = append(ids, in.Id)
		}
		revs = append(revs, resp.Header.Revision)
		req.PageToken = resp.NextPageToken
	}
	if got := strings.Join(ids, ","); got != "u0,u1,u2,u3,u4" || req.PageToken != "" || revs[0] != revs[2] {
		t.Fatalf("pages = %s (revisions %v), last token %q; want u0..u4 at one revision, no token after the last", got, revs, req.PageToken)
	}

	// A change between two pages expires the token.
	first, err := c.Get(ctx, &pb.GetRequest{Service: "user.rpc", PageSize: 2})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Deregister(ctx, &pb.DeregisterRequest{Service: "user.rpc", Id: "u4"}); err != nil {
		t.Fatal(err)
	}
	_, err = c.Get(ctx, &pb.GetRequest{Service: "user.rpc", PageSize: 2, PageToken: first.NextPageToken})
	if !errors.Is(apierr.FromStatus(err), apierr.ErrPageExpired) {
		t.Fatalf("next page after a change = %v, want ErrPageExpired", err)
	}

	other, err := c.Get(ctx, &pb.GetRequest{Service: "user.rpc", PageSize: 1})
	if err != nil {
		t.Fatal(err)
	}
	for _, tok := range []string{"!!", "bm90LWEtdG9rZW4", other.NextPageToken} {
		_, err := c.Get(ctx, &pb.GetRequest{Service: "order.rpc", PageToken: tok})
		if !errors.Is(apierr.FromStatus(err), apierr.ErrInvalidArgument) || !strings.Contains(err.Error(), "page_token") {
			t.Fatalf("Get with page_token %q = %v, want InvalidArgument naming page_token", tok, err)
		}
	}
}
