package ctlcmd

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc"

	"github.com/zrpcio/zrpc/api/apierr"
	"github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/internal/grpctest"
	"github.com/zrpcio/zrpc/internal/testlog"
)

const (
	testKey1 = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
	testKey2 = "ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA="
)

// keyringFake is an agent's Keyring service answering for agents n1 and
// n2; n2 fails the keys in failOn.
type keyringFake struct {
	zrpcpb.UnimplementedKeyringServer
	failOn string
	mu     sync.Mutex
	got    []string // "op key" of every call
}

func (f *keyringFake) answer(op, key string) (*zrpcpb.KeyringResponse, error) {
	f.mu.Lock()
	f.got = append(f.got, op+" "+key)
	f.mu.Unlock()
	if key != testKey1 && key != testKey2 {
		return nil, apierr.ToStatus(apierr.Invalid("key", "encryption key is not valid base64"))
	}
	n2 := &zrpcpb.KeyringAgentResult{Agent: "n2", Ok: true}
	if key == f.failOn {
		n2 = &zrpcpb.KeyringAgentResult{Agent: "n2", Error: "no answer within 3.75s: context deadline exceeded"}
	}
	return &zrpcpb.KeyringResponse{Agents: []*zrpcpb.KeyringAgentResult{{Agent: "n1", Ok: true}, n2}}, nil
}

func (f *keyringFake) List(context.Context, *zrpcpb.KeyringListRequest) (*zrpcpb.KeyringResponse, error) {
	return &zrpcpb.KeyringResponse{
		Agents: []*zrpcpb.KeyringAgentResult{
			{Agent: "n1", Ok: true, PrimaryKey: testKey2, Keys: []string{testKey2, testKey1}},
			{Agent: "n2", Ok: true, PrimaryKey: testKey1, Keys: []string{testKey1}},
		},
		Keys: []*zrpcpb.KeyringKeyCount{{Key: testKey1, Agents: 2, Primary: 1}, {Key: testKey2, Agents: 1, Primary: 1}},
	}, nil
}

func (f *keyringFake) Install(_ context.Context, r *zrpcpb.KeyringKeyRequest) (*zrpcpb.KeyringResponse, error) {
	return f.answer("install", r.Key)
}

func (f *keyringFake) Use(_ context.Context, r *zrpcpb.KeyringKeyRequest) (*zrpcpb.KeyringResponse, error) {
	return f.answer("use", r.Key)
}

func (f *keyringFake) Remove(_ context.Context, r *zrpcpb.KeyringKeyRequest) (*zrpcpb.KeyringResponse, error) {
	return f.answer("remove", r.Key)
}

func startKeyringFake(t *testing.T, f *keyringFake) string {
	return grpctest.Serve(t, func(s *grpc.Server) { zrpcpb.RegisterKeyringServer(s, f) })
}

// runKeyring runs zrpcctl against addr with stdin.
func runKeyring(t *testing.T, addr, stdin string, args ...string) runResult {
	t.Helper()
	var out, errOut testlog.Buffer
	cmd := NewCommand()
	cmd.SetOut(&out)
	cmd.SetErr(&errOut)
	cmd.SetIn(strings.NewReader(stdin))
	cmd.SetArgs(append([]string{"--addr", addr, "keyring"}, args...))
	err := cmd.ExecuteContext(testContext(t))
	return runResult{stdout: out.String(), stderr: errOut.String(), err: err}
}

func TestKeyringCommandsTakeTheKeyFromAFileStdinOrArgument(t *testing.T) {
	f := &keyringFake{}
	addr := startKeyringFake(t, f)
	file := filepath.Join(t.TempDir(), "new.key")
	if err := os.WriteFile(file, []byte(testKey1+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"install", "--key-file", file},
		{"use", "-"},
		{"remove", testKey2},
	} {
		stdin := ""
		if args[1] == "-" {
			stdin = "  " + testKey1 + "\n"
		}
		res := runKeyring(t, addr, stdin, args...)
		if res.err != nil {
			t.Fatalf("keyring %v: %v\n%s", args, res.err, res.stderr)
		}
		for _, want := range []string{"AGENT", "RESULT", "n1", "n2", "ok"} {
			if !strings.Contains(res.stdout, want) {
				t.Errorf("keyring %v printed\n%s\nwant %q in it", args, res.stdout, want)
			}
		}
		if strings.Contains(res.stdout, testKey1) || strings.Contains(res.stdout, testKey2) {
			t.Errorf("keyring %v printed the key:\n%s", args, res.stdout)
		}
	}
	want := []string{"install " + testKey1, "use " + testKey1, "remove " + testKey2}
	if strings.Join(f.got, ",") != strings.Join(want, ",") {
		t.Errorf("the agent got %v, want %v", f.got, want)
	}
}

func TestKeyringCommandFailsWhenAnAgentFailed(t *testing.T) {
	addr := startKeyringFake(t, &keyringFake{failOn: testKey1})
	res := runKeyring(t, addr, "", "install", testKey1)
	if res.err == nil || !strings.Contains(res.err.Error(), "1 of 2 agents (n2)") {
		t.Fatalf("install failing on n2: %v, want an error naming n2", res.err)
	}
	if !strings.Contains(res.stdout, "failed") || !strings.Contains(res.stdout, "no answer within") {
		t.Errorf("the per-agent table does not show n2's failure:\n%s", res.stdout)
	}

	res = runKeyring(t, addr, "", "-o", "json", "use", testKey1)
	if res.err == nil {
		t.Fatal("use failing on n2 with -o json succeeded")
	}
	var resp struct {
		Agents []struct {
			Agent string `json:"agent"`
			Ok    bool   `json:"ok"`
			Error string `json:"error"`
		} `json:"agents"`
	}
	if err := json.Unmarshal([]byte(res.stdout), &resp); err != nil || len(resp.Agents) != 2 || resp.Agents[1].Ok || resp.Agents[1].Error == "" {
		t.Fatalf("json output %q (%v), want both agents with n2 failed", res.stdout, err)
	}
}

func TestKeyringCommandRefusesMissingOrAmbiguousKeys(t *testing.T) {
	f := &keyringFake{}
	addr := startKeyringFake(t, f)
	file := filepath.Join(t.TempDir(), "k")
	if err := os.WriteFile(file, []byte(testKey1), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, stdin, want string
		args              []string
	}{
		{"no key", "", "KEY is required", []string{"install"}},
		{"both", "", "not both", []string{"install", testKey1, "--key-file", file}},
		{"empty stdin", " \n", "KEY is empty", []string{"use", "-"}},
		{"missing file", "", "--key-file", []string{"remove", "--key-file", filepath.Join(t.TempDir(), "none")}},
		{"huge stdin", strings.Repeat("A", 5000), "longer than", []string{"install", "-"}},
		{"bad key", "", "key: encryption key is not valid base64", []string{"install", "nope"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := runKeyring(t, addr, tt.stdin, tt.args...)
			if res.err == nil || !strings.Contains(res.err.Error(), tt.want) {
				t.Fatalf("keyring %v: %v, want an error saying %q", tt.args, res.err, tt.want)
			}
		})
	}
	if len(f.got) != 1 {
		t.Errorf("the agent got %v, want only the bad key's call", f.got)
	}
}

func TestKeyringListShowsKeysPerAgent(t *testing.T) {
	addr := startKeyringFake(t, &keyringFake{})
	res := runKeyring(t, addr, "", "list")
	if res.err != nil {
		t.Fatal(res.err)
	}
	for _, want := range []string{testKey1 + "  2/2     1/2", testKey2 + "  1/2     1/2", "n1     ok      " + testKey2 + "  2"} {
		if !strings.Contains(res.stdout, want) {
			t.Errorf("keyring list printed\n%s\nwant %q in it", res.stdout, want)
		}
	}
	res = runKeyring(t, addr, "", "list", "-o", "json")
	var resp struct {
		Keys []struct {
			Key    string `json:"key"`
			Agents int    `json:"agents"`
		} `json:"keys"`
	}
	if err := json.Unmarshal([]byte(res.stdout), &resp); err != nil || len(resp.Keys) != 2 || resp.Keys[0].Agents != 2 {
		t.Fatalf("keyring list -o json: %q (%v)", res.stdout, err)
	}
}
