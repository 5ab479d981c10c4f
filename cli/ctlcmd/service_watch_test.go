package ctlcmd

import (
	"context"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/internal/testlog"
)

func TestWatch(t *testing.T) {
	t.Setenv(addrEnv, "")
	f := startFake(t)
	tests := []struct {
		name   string
		output string
		// done reports whether the whole canned stream has been printed.
		done  func(out string) bool
		check func(t *testing.T, out string)
	}{
		{"table", "table", func(out string) bool { return strings.Contains(out, "DELETE") }, func(t *testing.T, out string) {
			for _, want := range []string{
				"-- snapshot at revision 10: 2 instances --",
				"10        PUT     user.rpc              user-1                10.0.0.5:9000          passing",
				"11        DELETE  user.rpc              user-2                10.0.0.6:9000          critical",
			} {
				if !strings.Contains(out, want) {
					t.Errorf("output does not contain %q:\n%s", want, out)
				}
			}
		}},
		{"json", "json", func(out string) bool { return strings.Count(out, "\n") >= 2 }, func(t *testing.T, out string) {
			lines := strings.Split(strings.TrimSpace(out), "\n")
			var resp zrpcpb.WatchResponse
			if err := protojson.Unmarshal([]byte(lines[0]), &resp); err != nil || !resp.GetSnapshot() || len(resp.GetEvents()) != 2 {
				t.Errorf("first line %q: %v, want a snapshot of 2 events", lines[0], err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(testContext(t))
			defer cancel()
			var out, errOut testlog.Buffer
			done := make(chan runResult, 1)
			go func() {
				done <- runZrpcctlTo(ctx, t, &out, &errOut, f.Addr, "service", "watch", "user.rpc", "-o", tt.output)
			}()
			waitFor(t, "the watch output", func() bool { return tt.done(out.String()) })
			cancel() // as Ctrl-C does
			res := <-done
			if res.err != nil {
				t.Fatalf("watch ended with %v, want a clean exit", res.err)
			}
			tt.check(t, res.stdout)
		})
	}
}
