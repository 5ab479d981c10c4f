package ctlcmd

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	zrpcpb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/cli"
	"github.com/zrpcio/zrpc/client/clienttest"
	"github.com/zrpcio/zrpc/internal/pki/pkitest"
	"github.com/zrpcio/zrpc/internal/testwait"
)

func TestTableOutput(t *testing.T) {
	t.Setenv(addrEnv, "")
	f := startFake(t)
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"service list", []string{"service", "list"}, `
SERVICE    INSTANCES  PASSING
order.rpc  1          1
user.rpc   2          1
`},
		{"service get", []string{"service", "get", "user.rpc"}, `
ID      ADDRESS        NODE    HEALTH    WEIGHT  ZONE   VERSION  TAGS       HEALTH_OUTPUT
user-1  10.0.0.5:9000  node-1  passing   100     eu-1a  1.2.0    canary,v1  -
user-2  10.0.0.6:9000  node-3  critical  100     -      -        -          agent failed: no gossip contact
`},
		{"status", []string{"status"}, `
Node:           node-1
Cluster ID:     5f0c2a9e41d7b3c8a6e19f2d4b7c0e83
Leader:         node-2
Leader address: 10.0.0.2:8401
Term:           3
Raft state:     Follower
Commit index:   42
Applied index:  41
Last log index: 42
Last contact:   12ms
Build:          0.1.0
`},
		{"raft peers", []string{"raft", "peers"}, `
ID      ADDRESS        SUFFRAGE  LEADER  LAST_INDEX
node-1  10.0.0.1:8401  voter     no      41
node-2  10.0.0.2:8401  voter     yes     42
node-3  10.0.0.3:8401  voter     no      unreachable
`},
		{"members", []string{"members"}, `
NAME    ADDRESS        STATUS                         ROLE      BUILD  ZONE   FOR
node-1  10.0.0.1:8402  alive                          voter     0.1.0  eu-1a  1m15s
node-2  -              unknown                        voter     -      -      -
node-3  10.0.0.3:8402  alive (clock 1h0m2.3s behind)  voter     0.1.0  eu-1b  1m0s
node-4  10.0.0.4:8402  alive (leaving)                nonvoter  0.1.0  eu-1b  1m0s
node-5  10.0.0.5:8402  left                           none      0.1.0  eu-1b  1s
`},
		{"service register", []string{"service", "register", "user.rpc", "--id", "user-1", "--address", "10.0.0.5:9000"},
			"\nregistered user.rpc/user-1 at revision 42\n"},
		{"service deregister", []string{"service", "deregister", "user.rpc", "user-1"},
			"\nderegistered user.rpc/user-1 at revision 43\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := runZrpcctl(testContext(t), t, f.Addr, tt.args...)
			if res.err != nil {
				t.Fatalf("zrpcctl %s: %v\nstderr: %s", strings.Join(tt.args, " "), res.err, res.stderr)
			}
			if want := strings.TrimPrefix(tt.want, "\n"); res.stdout != want {
				t.Errorf("output:\n%s\nwant:\n%s", res.stdout, want)
			}
		})
	}
}

func TestJSONOutput(t *testing.T) {
	t.Setenv(addrEnv, "")
	f := startFake(t)
	tests := []struct {
		name string
		args []string
		// want holds keys and values expected in the (first) object.
		want  map[string]any
		array bool
	}{
		{"service list", []string{"service", "list"}, map[string]any{"name": "order.rpc", "instances": 1.0}, true},
		{"service get", []string{"service", "get", "user.rpc"}, map[string]any{"id": "user-1", "health": "PASSING"}, true},
		{"status", []string{"status"}, map[string]any{"node": "node-1", "raft_state": "Follower", "last_contact": "0.012s"}, false},
		{"raft peers", []string{"raft", "peers"}, map[string]any{"id": "node-1", "last_index": "41"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := runZrpcctl(testContext(t), t, f.Addr, append(tt.args, "-o", "json")...)
			if res.err != nil {
				t.Fatalf("zrpcctl: %v", res.err)
			}
			var obj map[string]any
			if tt.array {
				var list []map[string]any
				if err := json.Unmarshal([]byte(res.stdout), &list); err != nil || len(list) == 0 {
					t.Fatalf("output is not a non-empty JSON array (%v):\n%s", err, res.stdout)
				}
				obj = list[0]
			} else if err := json.Unmarshal([]byte(res.stdout), &obj); err != nil {
				t.Fatalf("output is not a JSON object (%v):\n%s", err, res.stdout)
			}
			for k, v := range tt.want {
				if obj[k] != v {
					t.Errorf("%s = %#v, want %#v in\n%s", k, obj[k], v, res.stdout)
				}
			}
		})
	}
}

// TestInputErrors checks that malformed flags fail with a clear message
// before any request reaches the agent.
func TestInputErrors(t *testing.T) {
	t.Setenv(addrEnv, "")
	f := startFake(t)
	register := []string{"service", "register", "user.rpc", "--id", "user-1", "--address", "10.0.0.5:9000"}
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"bad output", []string{"status", "-o", "yaml"}, `invalid --output "yaml"`},
		{"bad consistency", []string{"service", "list", "--consistency", "strong"}, `invalid --consistency "strong"`},
		{"ttl with grpc check", append(register, "--ttl", "10s", "--grpc-check"), "--ttl and --grpc-check exclude each other"},
		{"meta without =", append(register, "--meta", "owner"), `invalid --meta "owner": want key=value`},
		{"missing id", []string{"service", "register", "user.rpc", "--address", "10.0.0.5:9000"}, `required flag(s) "id" not set`},
		{"bad duration", append(register, "--ttl", "10x"), `invalid argument "10x" for "--ttl"`},
		{"check flag without check", append(register, "--interval", "5s"), "--interval needs --grpc-check"},
		{"check timeout over interval", append(register, "--grpc-check", "--interval", "1s", "--check-timeout", "3s"),
			"--check-timeout 3s is longer than --interval 1s"},
		{"bad timeout", []string{"status", "--timeout", "0s"}, "invalid --timeout"},
		{"addr without port", []string{"status", "--addr", "localhost"}, `invalid --addr "localhost"`},
		{"extra argument", []string{"service", "get", "a", "b"}, "accepts 1 arg(s)"},
		{"json of a command that writes files", []string{"tls", "ca", "create", "--dir", t.TempDir(), "-o", "json"}, "-o json: zrpcctl tls prints text only"},
		{"json of gen", []string{"gen", "proto", "foo", "--dir", t.TempDir(), "-o", "json"}, "-o json: zrpcctl gen prints text only"},
		{"json of a completion script", []string{"completion", "bash", "-o", "json"}, "-o json: zrpcctl completion prints text only"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := runZrpcctl(testContext(t), t, f.Addr, tt.args...)
			if res.err == nil || !strings.Contains(res.err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to contain %q", res.err, tt.want)
			}
			if !strings.Contains(res.stderr, "Error: ") {
				t.Errorf("stderr does not show the error:\n%s", res.stderr)
			}
		})
	}
	if n := f.Calls(); n != 0 {
		t.Fatalf("the agent got %d calls, want 0", n)
	}
}

// TestUnknownSubcommandFails: an argument that names no command of a
// group fails, naming it and the group's commands like it, where the
// group's help and a success would hide the mistake from a script.
func TestUnknownSubcommandFails(t *testing.T) {
	t.Setenv(addrEnv, "")
	f := startFake(t)
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"service", "lst"}, `unknown command "lst" for "zrpcctl service"; did you mean get or list?`},
		{[]string{"acl", "policy", "creat", "svc-user"}, `unknown command "creat" for "zrpcctl acl policy"; did you mean create or read?`},
		{[]string{"raft", "peer"}, `unknown command "peer" for "zrpcctl raft"; did you mean peers?`},
		{[]string{"blob", "repair", "stats", "-o", "json"}, `unknown command "stats" for "zrpcctl blob repair"`},
		{[]string{"tls", "crt", "create"}, "`zrpcctl tls --help` lists its commands"},
		{[]string{"servce", "list"}, `unknown command "servce" for "zrpcctl"`},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			res := runZrpcctl(testContext(t), t, f.Addr, tt.args...)
			if res.err == nil || !strings.Contains(res.err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to contain %q\nstdout: %s", res.err, tt.want, res.stdout)
			}
			if res.stdout != "" {
				t.Errorf("stdout is not empty:\n%s", res.stdout)
			}
		})
	}
	// A group alone prints its help and succeeds.
	res := runZrpcctl(testContext(t), t, f.Addr, "service")
	if res.err != nil || !strings.Contains(res.stdout, "Available Commands:") {
		t.Fatalf("zrpcctl service = %v:\n%s", res.err, res.stdout)
	}
	if n := f.Calls(); n != 0 {
		t.Fatalf("the agent got %d calls, want 0", n)
	}
}

func TestRegisterSendsFlags(t *testing.T) {
	t.Setenv(addrEnv, "")
	f := startFake(t)
	res := runZrpcctl(testContext(t), t, f.Addr, "service", "register", "user.rpc", "--id", "user-3",
		"--address", "10.0.0.7:9000", "--weight", "50", "--tag", "a", "--tag", "b",
		"--meta", "owner=team=users", "--grpc-check", "--interval", "5s", "--deregister-critical-after", "10m")
	if res.err != nil {
		t.Fatalf("register: %v", res.err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.registered) != 1 {
		t.Fatalf("agent got %d registrations, want 1", len(f.registered))
	}
	in := f.registered[0]
	check := in.GetCheck()
	switch {
	case in.GetService() != "user.rpc" || in.GetId() != "user-3" || in.GetAddress() != "10.0.0.7:9000" || in.GetWeight() != 50:
		t.Errorf("instance = %v", in)
	case strings.Join(in.GetTags(), ",") != "a,b" || in.GetMetadata()["owner"] != "team=users":
		t.Errorf("tags/metadata = %v %v", in.GetTags(), in.GetMetadata())
	case !check.GetGrpc() || check.GetTtl() != nil || check.GetInterval().AsDuration() != 5*time.Second ||
		check.GetTimeout().AsDuration() != 2*time.Second || check.GetDeregisterCriticalAfter().AsDuration() != 10*time.Minute:
		t.Errorf("check = %v", check)
	}
}

// TestRegisterCheckTimeoutDefault checks the gRPC check's timeout when
// --check-timeout is not given: 2s, or the interval when that is shorter
// (the agent refuses a timeout longer than the interval).
func TestRegisterCheckTimeoutDefault(t *testing.T) {
	t.Setenv(addrEnv, "")
	f := startFake(t)
	for _, tt := range []struct {
		flags []string
		want  time.Duration
	}{
		{[]string{"--interval", "1s"}, time.Second},
		{[]string{"--interval", "300ms"}, 300 * time.Millisecond},
		{nil, 2 * time.Second},
		{[]string{"--interval", "1s", "--check-timeout", "500ms"}, 500 * time.Millisecond},
		{[]string{"--interval", "1s", "--check-timeout", "1s"}, time.Second},
	} {
		args := append([]string{"service", "register", "user.rpc", "--id", "user-4", "--address", "10.0.0.8:9000", "--grpc-check"}, tt.flags...)
		if res := runZrpcctl(testContext(t), t, f.Addr, args...); res.err != nil {
			t.Fatalf("zrpcctl %s: %v", strings.Join(args, " "), res.err)
		}
		f.mu.Lock()
		got := f.registered[len(f.registered)-1].GetCheck().GetTimeout().AsDuration()
		f.mu.Unlock()
		if got != tt.want {
			t.Errorf("%v: check timeout %s, want %s", tt.flags, got, tt.want)
		}
	}
}

// hangingUpListener accepts connections and closes them at once, as a
// port of another protocol (or TLS, to plaintext) does; it returns its
// address.
func hangingUpListener(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	return ln.Addr().String()
}

func TestAgentErrors(t *testing.T) {
	t.Setenv(addrEnv, "")
	f := startFake(t)
	down := clienttest.ClosedAddr(t)
	web := httptest.NewServer(http.NotFoundHandler())
	t.Cleanup(web.Close)
	httpAddr := web.Listener.Addr().String()
	hangUp := hangingUpListener(t)
	kitFiles := pkitest.New(t).Client("ops")
	silent, silentToo := startFake(t), startFake(t)
	silent.Silent.Store(true)
	silentToo.Silent.Store(true)
	tests := []struct {
		name  string
		addr  string
		args  []string
		wants []string
	}{
		{"deregister not found", f.Addr, []string{"service", "deregister", "user.rpc", "user-9"},
			[]string{"Error: deregister user.rpc/user-9: not found: instance user.rpc/user-9"}},
		{"ACLs off", f.Addr, []string{"acl", "token", "list"},
			[]string{"Hint: the agent at " + f.Addr + " runs with ACLs off", "--acl"}},
		{"no agent", down, []string{"status"},
			[]string{"Error: ", "Hint: is an agent running at " + down + "? start one with `zrpcd agent --dev`"}},
		{"an HTTP port", httpAddr, []string{"status"},
			[]string{"Hint: " + httpAddr + " answers HTTP/1 (the agent's HTTP port?): --addr takes the gRPC port"}},
		{"a port that hangs up", hangUp, []string{"status"},
			[]string{"Hint: something at " + hangUp + " took the connection and closed it: an agent with TLS on", "its Raft or gossip port?"}},
		{"TLS to a plaintext agent", f.Addr, []string{"status", "--tls-ca", kitFiles.CA, "--tls-cert", kitFiles.Cert, "--tls-key", kitFiles.Key},
			[]string{"Hint: the agent at " + f.Addr + " does not speak TLS: leave out --tls-ca"}},
		{"a stopped agent", silent.Addr, []string{"service", "list", "--timeout", "300ms"},
			[]string{"Hint: no answer within --timeout 300ms; is the agent at " + silent.Addr + " overloaded, stopped or partitioned?"}},
		{"stopped agents", silent.Addr + "," + silentToo.Addr, []string{"service", "list", "--timeout", "300ms"},
			[]string{"Hint: no answer within --timeout 300ms; is any of the agents at " + silent.Addr + "," + silentToo.Addr + " overloaded, stopped or partitioned?"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := runZrpcctl(testContext(t), t, tt.addr, tt.args...)
			if res.err == nil {
				t.Fatal("command succeeded, want an error")
			}
			for _, want := range tt.wants {
				if !strings.Contains(res.stderr, want) {
					t.Errorf("stderr does not contain %q:\n%s", want, res.stderr)
				}
			}
			if strings.Contains(res.stderr, "Usage:") {
				t.Errorf("runtime error printed the usage:\n%s", res.stderr)
			}
		})
	}
}

// TestStoppedAgentSaysNoAnswer: an agent whose process is stopped (its
// kernel still takes connections, nothing answers on them), or whose host
// does not answer at all, is reported as not answering within --timeout,
// whichever of the call's deadline and the connection's timeout (both
// --timeout) ends the wait first; never as a port of another protocol,
// nor as no agent running.
func TestStoppedAgentSaysNoAnswer(t *testing.T) {
	t.Setenv(addrEnv, "")
	ln, err := net.Listen("tcp", "127.0.0.1:0") // never accepts: the kernel queues the connections
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	addr := ln.Addr().String()
	want := "Hint: no answer within --timeout 1s; is the agent at " + addr + " overloaded, stopped or partitioned?"
	check := func(what, out string) {
		t.Helper()
		if !strings.Contains(out, want) || strings.Contains(out, "took the connection and closed it") {
			t.Fatalf("%s does not say the agent did not answer:\n%s", what, out)
		}
	}
	// The connection's timeout, first: gRPC closed the connection itself.
	o := &options{addr: addr, timeout: time.Second}
	closed := status.Error(codes.Unavailable, `connection error: desc = "error reading server preface: raw-read tcp 127.0.0.1:41528->`+
		addr+`: use of closed network connection"`)
	check("the connection's timeout", o.explain(fmt.Errorf("no agent answered at %s: %w", addr, closed)).Error())
	// A host that does not answer the TCP handshake (down, or cut off).
	unanswered := status.Error(codes.Unavailable, `connection error: desc = "transport: Error while dialing: dial tcp `+addr+`: i/o timeout"`)
	check("a dial's timeout", o.explain(fmt.Errorf("no agent answered at %s: %w", addr, unanswered)).Error())
	// Whichever comes first.
	for range 3 {
		res := runZrpcctl(testContext(t), t, addr, "status", "--timeout", "1s")
		if res.err == nil {
			t.Fatal("status of a stopped agent succeeded")
		}
		check("stderr", res.stderr)
	}
}

func TestVersion(t *testing.T) {
	t.Setenv(addrEnv, "")
	f := startFake(t)
	res := runZrpcctl(testContext(t), t, f.Addr, "version")
	if res.err != nil {
		t.Fatalf("version: %v", res.err)
	}
	for _, want := range []string{"Client version: " + cli.Version, "Agent version:  9.9.9 (abc123) go1.26"} {
		if !strings.Contains(res.stdout, want) {
			t.Errorf("output does not contain %q:\n%s", want, res.stdout)
		}
	}
	// Without an agent it still prints the client's version.
	res = runZrpcctl(testContext(t), t, clienttest.ClosedAddr(t), "version")
	if res.err != nil || !strings.Contains(res.stdout, "Client version: "+cli.Version) || strings.Contains(res.stdout, "Agent") {
		t.Fatalf("version without agent = %v:\n%s", res.err, res.stdout)
	}
}

func TestAddrFromEnv(t *testing.T) {
	f := startFake(t)
	t.Setenv(addrEnv, clienttest.ClosedAddr(t)+","+f.Addr)
	if res := runZrpcctl(testContext(t), t, "", "status"); res.err != nil {
		t.Fatalf("status with %s set: %v", addrEnv, res.err)
	}
}

func TestCommandsDocumented(t *testing.T) {
	var walk func(*cobra.Command)
	walk = func(c *cobra.Command) {
		if c.Short == "" || c.Long == "" || c.Example == "" {
			t.Errorf("%q lacks Short, Long or Example", c.CommandPath())
		}
		for _, sub := range c.Commands() {
			if sub.Name() != "help" && sub.Name() != "completion" {
				walk(sub)
			}
		}
	}
	walk(NewCommand())
}

// waitFor polls cond until it holds, for at most 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testwait.For(t, 10*time.Second, what, cond)
}

// TestHungAgentLeavesTimeForTheNext: with --addr naming two agents, the
// first of which takes the call and never answers it while it answers
// health checks, the command is answered by the second within --timeout.
func TestHungAgentLeavesTimeForTheNext(t *testing.T) {
	t.Setenv(addrEnv, "")
	hung := (&clienttest.Agent{OnStatus: func(ctx context.Context, _ *zrpcpb.StatusRequest) (*zrpcpb.StatusResponse, error) {
		<-ctx.Done()
		return nil, ctx.Err()
	}}).Start(t)
	f := startFake(t)
	res := runZrpcctl(testContext(t), t, hung.Addr+","+f.Addr, "status", "--timeout", "4s")
	if res.err != nil {
		t.Fatalf("status through a hung agent and a live one: %v\n%s", res.err, res.stderr)
	}
}
