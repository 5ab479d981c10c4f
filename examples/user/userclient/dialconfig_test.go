package userclient

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc/metadata"

	"github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/client/clienttest"
	"github.com/zrpcio/zrpc/internal/testwait"
	"github.com/zrpcio/zrpc/rpc"
)

// TestDialConfigWatchesWithTheConfiguredToken: the token_file of a
// client's YAML reaches the agent the client watches the registry on.
func TestDialConfigWatchesWithTheConfiguredToken(t *testing.T) {
	t.Setenv(rpc.TokenEnv, "")
	auth := make(chan string, 16)
	agent := (&clienttest.Agent{OnWatch: func(_ *zrpcpb.WatchRequest, s zrpcpb.Registry_WatchServer) error {
		md, _ := metadata.FromIncomingContext(s.Context())
		if v := md.Get("authorization"); len(v) > 0 {
			auth <- v[0]
		}
		<-s.Context().Done()
		return nil
	}}).Start(t)
	file := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(file, []byte("zrpc_svc_user\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := DialConfig(ctx, rpc.ClientConfig{Agents: []string{agent.Addr}, AgentToken: rpc.AgentToken{TokenFile: file}})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.Connect()
	var got string
	testwait.For(t, 10*time.Second, "the resolver's watch to reach the agent", func() bool {
		select {
		case got = <-auth:
			return true
		default:
			return false
		}
	})
	if got != "Bearer zrpc_svc_user" {
		t.Fatalf("watch carried authorization %q, want Bearer zrpc_svc_user", got)
	}
}
