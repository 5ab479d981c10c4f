package acl

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
)

// recordingHandler keeps the log records it is given.
type recordingHandler struct {
	mu      sync.Mutex
	records []slog.Record
}

func (h *recordingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *recordingHandler) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *recordingHandler) WithGroup(string) slog.Handler            { return h }
func (h *recordingHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.records = append(h.records, r)
	return nil
}

// take returns the records kept since the last take, each as its
// message and attributes.
func (h *recordingHandler) take() []map[string]string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []map[string]string
	for _, r := range h.records {
		m := map[string]string{"msg": r.Message}
		r.Attrs(func(a slog.Attr) bool { m[a.Key] = a.Value.String(); return true })
		out = append(out, m)
	}
	h.records = nil
	return out
}

// refusalLogTest is an agent's interceptors with one token, "secret-real",
// that grants nothing, a clock the test moves and a log it reads.
type refusalLogTest struct {
	t   *testing.T
	ic  *Interceptors
	log *recordingHandler
	now time.Time
}

func newRefusalLogTest(t *testing.T) *refusalLogTest {
	rt := &refusalLogTest{t: t, log: &recordingHandler{}, now: time.Unix(1000, 0)}
	rt.ic = NewInterceptors(InterceptorConfig{
		Resolver: fakeResolver{HashSecret("secret-real"): Compile()},
		Now:      func() time.Time { return rt.now },
		Logger:   slog.New(rt.log),
	})
	return rt
}

// status calls Status from ip with secret ("" for none), which is refused.
func (rt *refusalLogTest) status(ip, secret string) {
	rt.t.Helper()
	ctx := peer.NewContext(context.Background(), &peer.Peer{Addr: &net.TCPAddr{IP: net.ParseIP(ip), Port: 40000}})
	if secret != "" {
		ctx = metadata.NewIncomingContext(ctx, metadata.Pairs(AuthorizationKey, "Bearer "+secret))
	}
	h := func(context.Context, any) (any, error) { return nil, nil }
	if _, err := rt.ic.Unary(ctx, &pb.StatusRequest{}, &grpc.UnaryServerInfo{FullMethod: pb.Status_Status_FullMethodName}, h); err == nil {
		rt.t.Fatalf("a call from %s was allowed", ip)
	}
}

// TestTokensSprayedFromOneHostTakeOnePlaceInTheRefusalLog: a stranger
// trying ever new secrets, from one IPv4 address or from all over its
// IPv6 /64, gets one line a minute, and the refusals of a real token and
// of other hosts are still logged after it.
func TestTokensSprayedFromOneHostTakeOnePlaceInTheRefusalLog(t *testing.T) {
	rt := newRefusalLogTest(t)
	for n := range 2 * maxLogged {
		rt.status("203.0.113.9", fmt.Sprintf("guess-%d", n))
		rt.status(fmt.Sprintf("2001:db8:7:7::%x", n), fmt.Sprintf("guess-%d", n))
	}
	lines := rt.log.take()
	if len(lines) != 2 {
		t.Fatalf("%d unknown tokens from one IPv4 address and %d from one IPv6 /64 logged %d lines, want 2", 2*maxLogged, 2*maxLogged, len(lines))
	}
	if lines[0]["from"] != "203.0.113.9" || lines[1]["from"] != "2001:db8:7:7::" {
		t.Errorf("the spray's lines say it came from %q and %q, want 203.0.113.9 and 2001:db8:7:7::", lines[0]["from"], lines[1]["from"])
	}

	rt.status("198.51.100.1", "secret-real")
	rt.status("198.51.100.2", "")
	lines = rt.log.take()
	if len(lines) != 2 || !strings.HasPrefix(lines[0]["caller"], "token ") || lines[1]["caller"] != "no token" || lines[1]["from"] != "198.51.100.2" {
		t.Fatalf("after the spray, a real token's refusal and one without a token from another host logged %v, want a line each", lines)
	}

	rt.now = rt.now.Add(time.Minute)
	rt.status("203.0.113.9", "guess-again")
	if lines = rt.log.take(); len(lines) != 1 || lines[0]["held_back"] != fmt.Sprint(2*maxLogged-1) {
		t.Fatalf("the spray's host a minute later logged %v, want one line counting the %d held back", lines, 2*maxLogged-1)
	}
}

// TestCallersPastTheBoundShareOneLineAMinute: with more hosts refused in
// a minute than the log follows one by one, the others' refusals are
// counted in one line a minute, not dropped, and the callers it follows
// are still logged.
func TestCallersPastTheBoundShareOneLineAMinute(t *testing.T) {
	rt := newRefusalLogTest(t)
	host := func(n int) string { return fmt.Sprintf("10.%d.%d.%d", n>>16&0xff, n>>8&0xff, n&0xff) }
	for n := range maxLogged {
		rt.status(host(n), "")
	}
	if lines := rt.log.take(); len(lines) != maxLogged {
		t.Fatalf("%d hosts refused logged %d lines, want one each", maxLogged, len(lines))
	}
	rt.now = rt.now.Add(30 * time.Second)
	for n := maxLogged; n < maxLogged+1000; n++ {
		rt.status(host(n), "")
		rt.status(host(n), "")
	}
	lines := rt.log.take()
	if len(lines) != 1 || lines[0]["refused"] != "1" || lines[0]["callers"] != "1" || lines[0]["from"] != host(maxLogged) {
		t.Fatalf("the first refusal past the bound logged %v, want one line of 1 refusal of 1 caller, from %s", lines, host(maxLogged))
	}

	rt.now = rt.now.Add(30 * time.Second)
	for n := range maxLogged { // the callers followed stay followed
		rt.status(host(n), "")
	}
	if lines := rt.log.take(); len(lines) != maxLogged {
		t.Fatalf("the %d hosts followed, a minute later, logged %d lines, want one each", maxLogged, len(lines))
	}
	rt.now = rt.now.Add(30 * time.Second)
	rt.status(host(maxLogged+1000), "")
	lines = rt.log.take()
	// 1999 refusals of the 1000 hosts past the bound after the first line
	// (the first of them refused once more), and this one of a new host.
	if len(lines) != 1 || lines[0]["refused"] != "2000" || lines[0]["callers"] != "1001" {
		t.Fatalf("a minute after the first line of the others: %v, want one line of 2000 refusals of 1001 callers", lines)
	}
}

// failingResolver cannot read any token's policy.
type failingResolver struct{}

func (failingResolver) Resolve([32]byte) (Authorizer, string, error) {
	return nil, "", fmt.Errorf("stored policy web: unreadable rules")
}

// TestATokenWhoseLookupFailsIsLogged: a refusal that is the agent's own
// trouble (a policy it cannot read) is in the log, naming the error.
func TestATokenWhoseLookupFailsIsLogged(t *testing.T) {
	rt := newRefusalLogTest(t)
	rt.ic.cfg.Resolver = failingResolver{}
	rt.status("10.0.0.9", "secret-any")
	lines := rt.log.take()
	if len(lines) != 1 || !strings.Contains(lines[0]["error"], "unreadable rules") || !strings.Contains(lines[0]["caller"], "lookup failed") {
		t.Fatalf("log after a refusal whose token lookup failed = %v, want one line naming the failed lookup and its error", lines)
	}
}
