package rpc_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/metadata"

	"github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/client/clienttest"
	"github.com/zrpcio/zrpc/internal/testwait"
	"github.com/zrpcio/zrpc/rpc"
)

// tokenAgent is a fake agent that records the authorization metadata of
// sessions and watches, and serves both.
type tokenAgent struct {
	*clienttest.Agent
	mu   sync.Mutex
	seen []string
}

func startTokenAgent(t *testing.T) *tokenAgent {
	a := &tokenAgent{Agent: &clienttest.Agent{}}
	record := func(ctx context.Context) {
		a.mu.Lock()
		defer a.mu.Unlock()
		a.seen = append(a.seen, strings.Join(metadata.ValueFromIncomingContext(ctx, "authorization"), "|"))
	}
	a.OnSession = func(s zrpcpb.Registry_SessionServer) error {
		record(s.Context())
		for {
			req, err := s.Recv()
			if err != nil {
				return nil
			}
			resp := &zrpcpb.SessionResponse{Seq: req.Seq, Header: &zrpcpb.ResponseHeader{Revision: 1}}
			if req.GetOpen() != nil {
				resp.Session = "s1"
			}
			if r := req.GetRegister(); r != nil {
				resp.Instance = r.Instance
			}
			if err := s.Send(resp); err != nil {
				return nil
			}
		}
	}
	a.OnWatch = func(_ *zrpcpb.WatchRequest, s zrpcpb.Registry_WatchServer) error {
		record(s.Context())
		<-s.Context().Done()
		return nil
	}
	a.Start(t)
	return a
}

func (a *tokenAgent) authorizations() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.seen...)
}

func TestServerRegistersWithItsAgentTokenFromAFile(t *testing.T) {
	t.Setenv(rpc.TokenEnv, "")
	agent := startTokenAgent(t)
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "user.token")
	os.WriteFile(tokenFile, []byte("zrpc_user\n"), 0o600)
	path := filepath.Join(dir, "user.yaml")
	os.WriteFile(path, []byte("Name: user.rpc\nListenOn: 127.0.0.1:0\ntoken_file: "+tokenFile+"\nAgents: ["+agent.Addr+"]\n"), 0o600)
	cfg := rpc.DefaultServerConfig()
	cfg.DrainDelay = 0
	if err := rpc.LoadConfig(path, &cfg); err != nil {
		t.Fatal(err)
	}
	srv, err := rpc.NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer srv.Stop(ctx)
	if got := agent.authorizations(); len(got) == 0 || got[0] != "Bearer zrpc_user" {
		t.Fatalf("the session carried authorization %q, want Bearer zrpc_user", got)
	}
}

func TestDialWatchesWithTheAgentToken(t *testing.T) {
	agent := startTokenAgent(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := rpc.Dial(ctx, "zrpc:///user.rpc", rpc.WithAgents(agent.Addr), rpc.WithAgentToken("zrpc_client"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.Connect()
	testwait.For(t, 10*time.Second, "the resolver's watch reaches the agent", func() bool { return len(agent.authorizations()) > 0 })
	if got := agent.authorizations()[0]; got != "Bearer zrpc_client" {
		t.Fatalf("the watch carried authorization %q, want Bearer zrpc_client", got)
	}
}

func TestAgentTokenResolve(t *testing.T) {
	t.Setenv(rpc.TokenEnv, " zrpc_env\n")
	file := filepath.Join(t.TempDir(), "t")
	os.WriteFile(file, []byte("  zrpc_file \n"), 0o600)
	for _, tc := range []struct {
		tok     rpc.AgentToken
		want    string
		wantErr string
	}{
		{rpc.AgentToken{}, "zrpc_env", ""},
		{rpc.AgentToken{Token: "zrpc_inline"}, "zrpc_inline", ""},
		{rpc.AgentToken{TokenFile: file}, "zrpc_file", ""},
		{rpc.AgentToken{Token: "a", TokenFile: file}, "", "both are set"},
		{rpc.AgentToken{TokenFile: file + ".missing"}, "", "token_file"},
	} {
		got, err := tc.tok.Resolve()
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%+v: %q, %v; want an error with %q", tc.tok, got, err, tc.wantErr)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%+v: %q, %v; want %q", tc.tok, got, err, tc.want)
		}
	}
}
