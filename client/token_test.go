package client

import (
	"context"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc/metadata"

	"github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/client/clienttest"
)

func TestTokenIsSentAsBearerOnEveryCall(t *testing.T) {
	var mu sync.Mutex
	var seen []string
	record := func(ctx context.Context) {
		mu.Lock()
		defer mu.Unlock()
		seen = append(seen, strings.Join(metadata.ValueFromIncomingContext(ctx, "authorization"), "|"))
	}
	agent := (&clienttest.Agent{
		OnStatus: func(ctx context.Context, _ *zrpcpb.StatusRequest) (*zrpcpb.StatusResponse, error) {
			record(ctx)
			return &zrpcpb.StatusResponse{}, nil
		},
		OnWatch: func(_ *zrpcpb.WatchRequest, s zrpcpb.Registry_WatchServer) error {
			record(s.Context())
			return s.Send(&zrpcpb.WatchResponse{Header: &zrpcpb.ResponseHeader{Revision: 1}, Snapshot: true})
		},
	}).Start(t)

	for _, token := range []string{"zrpc_s3cret", ""} {
		c, err := New(Config{Endpoints: []string{agent.Addr}, Token: token})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Status(context.Background()); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		w, err := c.Watch(ctx, "user.rpc", 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Recv(); err != nil {
			t.Fatal(err)
		}
		cancel()
		w.Close()
		c.Close()
	}
	mu.Lock()
	defer mu.Unlock()
	want := []string{"Bearer zrpc_s3cret", "Bearer zrpc_s3cret", "", ""}
	if strings.Join(seen, ",") != strings.Join(want, ",") {
		t.Fatalf("authorization metadata seen %q, want %q", seen, want)
	}
}

func TestConfigValidateRefusesATokenWithSpaces(t *testing.T) {
	for _, bad := range []string{"abc\n", "a b", "\x00", strings.Repeat("a", maxTokenLen+1)} {
		if err := (Config{Endpoints: []string{"127.0.0.1:1"}, Token: bad}).Validate(); err == nil || !strings.Contains(err.Error(), "token") {
			t.Errorf("Validate(token %q) = %v, want an error naming the token", bad, err)
		}
	}
}
