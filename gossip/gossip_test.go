package gossip

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/zrpcio/zrpc/internal/testlog"
	"github.com/zrpcio/zrpc/internal/testport"
	"github.com/zrpcio/zrpc/internal/testwait"
)

// waitTimeout bounds every wait for the cluster to converge. Convergence
// takes well under a second with the local profile; the margin is for -race
// on a loaded machine. Tests never assert how fast it was.
const waitTimeout = 15 * time.Second

// waitFor polls cond until it holds or waitTimeout passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testwait.For(t, waitTimeout, what, cond)
}

// waitForOr is waitFor that adds explain() to the failure message.
func waitForOr(t *testing.T, what string, cond func() bool, explain func() string) {
	t.Helper()
	testwait.ForExplained(t, waitTimeout, what, cond, explain)
}

// about describes what a knows of member name, for failure messages.
func (a *agent) about(name string) func() string {
	return func() string {
		m, ok := memberNamed(a.Gossip, name)
		a.rec.mu.Lock()
		defer a.rec.mu.Unlock()
		var evs []string
		for _, ev := range a.rec.events {
			if ev.Member.Name == name {
				evs = append(evs, ev.Type.String())
			}
		}
		return fmt.Sprintf("\n%s lists %s: %+v (listed %v); its events about %s: %v", a.name, name, m, ok, name, evs)
	}
}

// recorder keeps every event a member's Events channel delivered.
type recorder struct {
	mu     sync.Mutex
	events []Event
	done   chan struct{}
}

func record(g *Gossip) *recorder {
	r := &recorder{done: make(chan struct{})}
	go func() {
		defer close(r.done)
		for ev := range g.Events() {
			r.mu.Lock()
			r.events = append(r.events, ev)
			r.mu.Unlock()
		}
	}()
	return r
}

// has reports whether an event of type typ about member name arrived.
func (r *recorder) has(typ EventType, name string) bool {
	_, ok := r.find(typ, name)
	return ok
}

// find returns the last event of type typ about member name.
func (r *recorder) find(typ EventType, name string) (Event, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := len(r.events) - 1; i >= 0; i-- {
		if ev := r.events[i]; ev.Type == typ && ev.Member.Name == name {
			return ev, true
		}
	}
	return Event{}, false
}

// mentions reports whether any event is about member name.
func (r *recorder) mentions(name string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, ev := range r.events {
		if ev.Member.Name == name {
			return true
		}
	}
	return false
}

// agent is a started Gossip with its events recorded.
type agent struct {
	*Gossip
	name string
	meta Meta
	rec  *recorder
}

func testMeta(name string) Meta {
	port := 10000 + 10*int(name[0]) // distinct per agent, never dialled
	return Meta{
		Name: name, GRPCAddr: fmt.Sprintf("127.0.0.1:%d", port), RaftAddr: fmt.Sprintf("127.0.0.1:%d", port+1),
		Role: "server", Build: "test", Zone: "zone-" + name,
	}
}

func testConfig(t *testing.T, name string) Config {
	return Config{
		Name:     name,
		BindAddr: "127.0.0.1",
		Meta:     testMeta(name),
		Profile:  ProfileLocal,
		Logger:   testlog.New(t, name),
	}
}

// startAgent starts a member on a free loopback port; edit may change its
// config first. Cleanup closes it and waits for its event pump to end.
func startAgent(t *testing.T, name string, edit func(*Config)) *agent {
	t.Helper()
	return startTunedAgent(t, name, edit, nil)
}

// startTunedAgent is startAgent that lets tune change memberlist's
// configuration (its timers) before the start.
func startTunedAgent(t *testing.T, name string, edit func(*Config), tune func(*memberlist.Config)) *agent {
	t.Helper()
	cfg := testConfig(t, name)
	if edit != nil {
		edit(&cfg)
	}
	g, err := New(cfg)
	if err != nil {
		t.Fatalf("New(%s): %v", name, err)
	}
	if tune != nil {
		tune(g.mc)
	}
	if err := g.Start(); err != nil {
		t.Fatalf("Start(%s): %v", name, err)
	}
	a := &agent{Gossip: g, name: name, meta: cfg.Meta, rec: record(g)}
	t.Cleanup(func() {
		g.Close()
		<-a.rec.done // Events is closed once the pump has stopped
	})
	return a
}

// startCluster starts n agents ("a", "b", ...) and joins them through the
// first one, waiting until every one of them sees all n alive.
func startCluster(t *testing.T, n int) []*agent {
	t.Helper()
	agents := make([]*agent, n)
	for i := range agents {
		agents[i] = startAgent(t, string(rune('a'+i)), nil)
	}
	for _, a := range agents[1:] {
		joined, err := a.Join(context.Background(), []string{agents[0].LocalAddr()})
		if err != nil || joined != 1 {
			t.Fatalf("%s joins %s: joined %d, err %v", a.name, agents[0].LocalAddr(), joined, err)
		}
	}
	for _, a := range agents {
		waitFor(t, a.name+" to see all members alive", func() bool {
			return countStatus(a.Members(), StatusAlive) == n
		})
	}
	return agents
}

func countStatus(ms []Member, status string) int {
	n := 0
	for _, m := range ms {
		if m.Status == status {
			n++
		}
	}
	return n
}

func memberNamed(g *Gossip, name string) (Member, bool) {
	for _, m := range g.Members() {
		if m.Name == name {
			return m, true
		}
	}
	return Member{}, false
}

func hasStatus(g *Gossip, name, status string) bool {
	m, ok := memberNamed(g, name)
	return ok && m.Status == status
}

func TestThreeMembersJoin(t *testing.T) {
	agents := startCluster(t, 3)
	for _, a := range agents {
		ms := a.Members()
		if len(ms) != 3 {
			t.Fatalf("%s lists %d members, want 3: %+v", a.name, len(ms), ms)
		}
		for i, m := range ms {
			want := agents[i] // sorted by name: a, b, c
			if m.Name != want.name || m.Status != StatusAlive || m.Addr != want.LocalAddr() || m.Meta != want.meta {
				t.Errorf("%s lists %+v, want %s alive at %s with %+v", a.name, m, want.name, want.LocalAddr(), want.meta)
			}
		}
		for _, other := range agents {
			if other == a {
				continue
			}
			waitFor(t, fmt.Sprintf("%s to get EventJoin for %s", a.name, other.name), func() bool {
				return a.rec.has(EventJoin, other.name)
			})
			ev, _ := a.rec.find(EventJoin, other.name)
			if ev.Member.Meta.GRPCAddr != other.meta.GRPCAddr || ev.Member.Meta.RaftAddr != other.meta.RaftAddr {
				t.Errorf("%s: join event for %s carries %+v, want %+v", a.name, other.name, ev.Member.Meta, other.meta)
			}
		}
		if !a.rec.has(EventJoin, a.name) {
			t.Errorf("%s: no EventJoin for itself", a.name)
		}
	}
}

// TestDepartures: Close alone is a crash (EventFailed), Leave then Close a
// goodbye (EventLeave); neither is mistaken for the other.
func TestDepartures(t *testing.T) {
	tests := []struct {
		name       string
		leave      bool
		want, not  EventType
		wantStatus string
	}{
		{"close without leave", false, EventFailed, EventLeave, StatusFailed},
		{"leave then close", true, EventLeave, EventFailed, StatusLeft},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			agents := startCluster(t, 3)
			gone := agents[2]
			if tt.leave {
				if err := gone.Leave(5 * time.Second); err != nil {
					t.Fatalf("Leave: %v", err)
				}
			}
			if err := gone.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
			for _, a := range agents[:2] {
				waitForOr(t, fmt.Sprintf("%s to report %s %s", a.name, gone.name, tt.wantStatus), func() bool {
					return a.rec.has(tt.want, gone.name) && hasStatus(a.Gossip, gone.name, tt.wantStatus)
				}, a.about(gone.name))
				if a.rec.has(tt.not, gone.name) {
					t.Errorf("%s also reported %s %v", a.name, gone.name, tt.not)
				}
			}
			if err := gone.Leave(time.Second); !errors.Is(err, ErrClosed) {
				t.Errorf("Leave after Close: got %v, want ErrClosed", err)
			}
		})
	}
}

func TestUpdateMetaReachesPeers(t *testing.T) {
	agents := startCluster(t, 3)
	changed := agents[0]
	meta := changed.meta
	meta.Build, meta.GRPCAddr = "v2", "127.0.0.1:9400"
	if err := changed.UpdateMeta(meta); err != nil {
		t.Fatalf("UpdateMeta: %v", err)
	}
	for _, a := range agents {
		waitFor(t, a.name+" to get EventUpdate with the new meta", func() bool {
			ev, ok := a.rec.find(EventUpdate, changed.name)
			return ok && ev.Member.Meta == meta
		})
		if m, _ := memberNamed(a.Gossip, changed.name); m.Meta != meta || m.Status != StatusAlive {
			t.Errorf("%s lists %+v, want alive with %+v", a.name, m, meta)
		}
	}
	if err := changed.UpdateMeta(Meta{Name: "someone-else"}); err == nil {
		t.Error("UpdateMeta with another agent's name: no error")
	}
}

func TestEncryptionKeepsOutAgentsWithoutTheKey(t *testing.T) {
	key := mustKey(t)
	tests := []struct {
		name string
		key  []byte
	}{
		{"different key", mustKey(t)},
		{"no key", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			withKey := func(k []byte) func(*Config) { return func(c *Config) { c.EncryptKey = k } }
			a := startAgent(t, "a", withKey(key))
			b := startAgent(t, "b", withKey(key))
			if n, err := b.Join(context.Background(), []string{a.LocalAddr()}); err != nil || n != 1 {
				t.Fatalf("b joins a with the shared key: joined %d, err %v", n, err)
			}
			c := startAgent(t, "c", withKey(tt.key))
			for _, peer := range []*agent{a, b} {
				n, err := c.Join(context.Background(), []string{peer.LocalAddr()})
				if err == nil && n != 0 {
					t.Fatalf("c joined %s without the key (joined %d)", peer.name, n)
				}
			}
			// Let gossip run for a while: a meta update reaching b takes
			// several rounds, during which c would have shown up.
			meta := a.meta
			meta.Build = "v2"
			if err := a.UpdateMeta(meta); err != nil {
				t.Fatalf("UpdateMeta: %v", err)
			}
			waitFor(t, "b to see a's new meta", func() bool {
				m, _ := memberNamed(b.Gossip, "a")
				return m.Meta == meta
			})
			for _, peer := range []*agent{a, b} {
				if _, ok := memberNamed(peer.Gossip, "c"); ok || peer.rec.mentions("c") {
					t.Errorf("%s knows c, which has no key", peer.name)
				}
				if countStatus(peer.Members(), StatusAlive) != 2 {
					t.Errorf("%s lists %+v, want a and b", peer.name, peer.Members())
				}
			}
			if ms := c.Members(); len(ms) != 1 {
				t.Errorf("c lists %+v, want only itself", ms)
			}
		})
	}
}

func mustKey(t *testing.T) []byte {
	t.Helper()
	s, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	k, err := ParseKey(s)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestJoinRetryGetsThroughOneLiveAddress(t *testing.T) {
	a := startAgent(t, "a", nil)
	b := startAgent(t, "b", nil)
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if err := b.JoinRetry(ctx, []string{testport.Unused(t), a.LocalAddr()}, time.Second); err != nil {
		t.Fatalf("JoinRetry: %v", err)
	}
	waitFor(t, "a to see b", func() bool { return hasStatus(a.Gossip, "b", StatusAlive) })
}

func TestJoinRetryGivesUpWhenContextEnds(t *testing.T) {
	logs := &logRecords{}
	c := startAgent(t, "c", func(cfg *Config) {
		cfg.Logger = slog.New(recordingHandler{Handler: cfg.Logger.Handler(), rec: logs})
	})
	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()
	dead := []string{testport.Unused(t), testport.Unused(t)}
	err := c.JoinRetry(ctx, dead, 400*time.Millisecond)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("JoinRetry with dead addresses: got %v, want an error wrapping context.DeadlineExceeded", err)
	}
	attempts := logs.matching("join attempt failed; retrying")
	if len(attempts) < joinWarnAfter {
		t.Fatalf("logged %d failed attempts, want at least %d (one per attempt)", len(attempts), joinWarnAfter)
	}
	for i, r := range attempts {
		if want := map[bool]slog.Level{true: slog.LevelInfo, false: slog.LevelWarn}[i+1 < joinWarnAfter]; r.Level != want {
			t.Errorf("attempt %d logged at %s, want %s", i+1, r.Level, want)
		}
		attrs := map[string]slog.Value{}
		r.Attrs(func(a slog.Attr) bool { attrs[a.Key] = a.Value; return true })
		for _, k := range []string{"attempt", "addrs", "err", "next_in"} {
			if _, ok := attrs[k]; !ok {
				t.Errorf("attempt log lacks %q: %v", k, attrs)
			}
		}
		if got := attrs["attempt"].Int64(); got != int64(i+1) {
			t.Errorf("attempt %d logged as %d", i+1, got)
		}
		if next := attrs["next_in"].Duration(); next <= 0 || next > 400*time.Millisecond {
			t.Errorf("next_in %s outside (0, maxBackoff 400ms]", next)
		}
	}
}

func TestJoinOwnAddressOnly(t *testing.T) {
	a := startAgent(t, "a", nil)
	if n, err := a.Join(context.Background(), []string{a.LocalAddr()}); err == nil || n != 0 {
		t.Errorf("Join(own address) = %d, %v; want an error", n, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if err := a.JoinRetry(ctx, []string{a.LocalAddr()}, time.Second); err == nil || ctx.Err() != nil {
		t.Errorf("JoinRetry(own address) = %v; want an immediate error", err)
	}
}

// logRecords keeps log records for assertions.
type logRecords struct {
	mu   sync.Mutex
	recs []slog.Record
}

func (l *logRecords) matching(msg string) []slog.Record {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []slog.Record
	for _, r := range l.recs {
		if r.Message == msg {
			out = append(out, r)
		}
	}
	return out
}

// recordingHandler passes records on to Handler and keeps a copy.
type recordingHandler struct {
	slog.Handler
	rec *logRecords
}

// Enabled records every level, whatever the inner handler keeps.
func (h recordingHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h recordingHandler) Handle(ctx context.Context, r slog.Record) error {
	h.rec.mu.Lock()
	h.rec.recs = append(h.rec.recs, r.Clone())
	h.rec.mu.Unlock()
	return h.Handler.Handle(ctx, r)
}

func (h recordingHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return recordingHandler{Handler: h.Handler.WithAttrs(as), rec: h.rec}
}

func (h recordingHandler) WithGroup(name string) slog.Handler {
	return recordingHandler{Handler: h.Handler.WithGroup(name), rec: h.rec}
}

func TestLifecycleErrors(t *testing.T) {
	g, err := New(testConfig(t, "a"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := g.Join(context.Background(), []string{"127.0.0.1:1"}); !errors.Is(err, ErrNotStarted) {
		t.Errorf("Join before Start: %v, want ErrNotStarted", err)
	}
	if err := g.Leave(time.Second); !errors.Is(err, ErrNotStarted) {
		t.Errorf("Leave before Start: %v, want ErrNotStarted", err)
	}
	if err := g.Close(); err != nil {
		t.Errorf("Close before Start: %v", err)
	}
	if err := g.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := g.Start(); !errors.Is(err, ErrClosed) {
		t.Errorf("Start after Close: %v, want ErrClosed", err)
	}
	if _, ok := <-g.Events(); ok {
		t.Error("Events not closed by Close")
	}

	a := startAgent(t, "b", nil)
	if err := a.Start(); err == nil {
		t.Error("second Start: no error")
	}
	if err := a.Leave(0); err == nil {
		t.Error("Leave(0): no error")
	}
	if err := a.Leave(time.Second); err != nil {
		t.Fatalf("Leave alone: %v", err)
	}
	if err := a.Leave(time.Second); err != nil {
		t.Errorf("second Leave: %v", err)
	}
	if err := a.UpdateMeta(a.meta); !errors.Is(err, ErrLeft) {
		t.Errorf("UpdateMeta after Leave: %v, want ErrLeft", err)
	}
	if _, err := a.Join(context.Background(), []string{"127.0.0.1:1"}); !errors.Is(err, ErrLeft) {
		t.Errorf("Join after Leave: %v, want ErrLeft", err)
	}
}

func TestConfigValidateReportsEveryProblem(t *testing.T) {
	cfg := Config{
		BindAddr:   "localhost",
		BindPort:   70000,
		Meta:       Meta{Name: "x", GRPCAddr: "no-port"},
		Profile:    "wan",
		EncryptKey: []byte("short"),
	}
	_, err := New(cfg)
	if err == nil {
		t.Fatal("New accepted a bad config")
	}
	for _, field := range []string{"name:", "bind_addr:", "bind_port:", "meta:", "profile:", "encrypt_key:"} {
		if !strings.Contains(err.Error(), field) {
			t.Errorf("error does not mention %s: %v", field, err)
		}
	}
	if _, err := New(Config{Name: "a", Meta: Meta{Name: "b"}}); err == nil || !strings.Contains(err.Error(), "meta.name") {
		t.Errorf("meta name differing from name: %v", err)
	}
}

// TestCloseEndsAnUpdateMetaWaitingForItsBroadcast: memberlist's UpdateNode
// waits (up to 5 s) for the update's broadcast to go out and does not
// notice Shutdown. Here it never goes out (no gossip or probe round comes
// in an hour), so an UpdateMeta in flight must end when the agent closes,
// not 5 s later: an agent halted right after it announced a change
// would otherwise take 5 s to stop, its Raft still running meanwhile.
func TestCloseEndsAnUpdateMetaWaitingForItsBroadcast(t *testing.T) {
	peer := startAgent(t, "b", nil)
	g, err := New(testConfig(t, "a"))
	if err != nil {
		t.Fatal(err)
	}
	g.mc.GossipInterval, g.mc.ProbeInterval = time.Hour, time.Hour
	if err := g.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		for range g.Events() {
		}
	}()
	defer g.Close()
	if n, err := g.Join(context.Background(), []string{peer.LocalAddr()}); err != nil || n != 1 {
		t.Fatalf("join b: joined %d, err %v", n, err)
	}
	meta := testConfig(t, "a").Meta
	meta.Build = "v2"
	done := make(chan error, 1)
	go func() { done <- g.UpdateMeta(meta) }()
	select {
	case err := <-done:
		t.Fatalf("UpdateMeta returned (%v) although its broadcast cannot have gone out", err)
	case <-time.After(200 * time.Millisecond):
	}
	closed := time.Now()
	g.Close()
	select {
	case err := <-done:
		if !errors.Is(err, ErrClosed) {
			t.Errorf("UpdateMeta ended by Close returned %v, want ErrClosed", err)
		}
		t.Logf("UpdateMeta returned %v after Close", time.Since(closed))
	case <-time.After(2 * time.Second):
		t.Fatal("UpdateMeta still waits for its broadcast 2 s after Close")
	}
}

// TestUpdateMetaFromBuildsAfterTheUpdateBeforeIt: an update that waits
// for another to go out builds its meta then, not when it was asked for:
// a change made meanwhile (another caller's, which that caller then
// sends) is in it, and peers end with the latest meta, not an older one
// sent last.
func TestUpdateMetaFromBuildsAfterTheUpdateBeforeIt(t *testing.T) {
	agents := startCluster(t, 2)
	a := agents[0]
	var (
		mu     sync.Mutex
		meta   = a.meta
		builds int
	)
	current := func() Meta {
		mu.Lock()
		defer mu.Unlock()
		builds++
		return meta
	}
	a.updateMu.Lock() // an update going out
	done := make(chan error, 1)
	go func() { done <- a.UpdateMetaFrom(current) }()
	time.Sleep(100 * time.Millisecond) // for the second update to be asked for
	mu.Lock()
	if builds != 0 {
		t.Errorf("the meta was built while an earlier update was going out")
	}
	meta.Build = "v2" // changed after the second update was asked for
	mu.Unlock()
	a.updateMu.Unlock()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	waitFor(t, agents[1].name+" to list "+a.name+" with the meta built last", func() bool {
		m, _ := memberNamed(agents[1].Gossip, a.name)
		return m.Meta.Build == "v2"
	})
}
