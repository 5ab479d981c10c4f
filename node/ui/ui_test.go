package ui

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/zrpcio/zrpc/acl"
	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/internal/fsmtest"
	"github.com/zrpcio/zrpc/internal/testwait"
	"github.com/zrpcio/zrpc/raftstore"
)

// fakeStatus answers as the Status service of a one-agent cluster, or,
// with stopped set, of an agent that stopped its Raft node, or, with
// cutOff set, of one cut off from the leader.
type fakeStatus struct{ stopped, cutOff string }

func (f fakeStatus) Status(context.Context, *pb.StatusRequest) (*pb.StatusResponse, error) {
	if f.stopped != "" {
		return &pb.StatusResponse{Node: "a1", RaftState: "Shutdown", Term: 3, CommitIndex: 9, RaftStopped: f.stopped}, nil
	}
	if f.cutOff != "" {
		return &pb.StatusResponse{Node: "a1", RaftState: "Candidate", Term: 4, CommitIndex: 9, CutOff: f.cutOff}, nil
	}
	return &pb.StatusResponse{Node: "a1", Leader: "a1", RaftState: "Leader", Term: 3, CommitIndex: 9}, nil
}

func (fakeStatus) Members(context.Context, *pb.MembersRequest) (*pb.MembersResponse, error) {
	return &pb.MembersResponse{Members: []*pb.Member{
		{Name: "a2", Address: "127.0.0.2:8402", Status: "failed", Role: "voter", Zone: "z2", ShardsFull: true, Leaving: true},
		{Name: "a3", Address: "127.0.0.3:8402", Status: "alive", Role: "voter", NoRaftState: true, ClockOffset: durationpb.New(-90 * time.Second)},
		{Name: "a1", Address: "127.0.0.1:8402", Status: "alive", Role: "leader", Zone: "z1"},
	}}, nil
}

func (fakeStatus) Peers(context.Context, *pb.PeersRequest) (*pb.PeersResponse, error) {
	return &pb.PeersResponse{Peers: []*pb.Peer{
		{Id: "a1", Address: "127.0.0.1:8401", Suffrage: "voter", Leader: true, LastIndex: 9},
		{Id: "a2", Address: "127.0.0.2:8401", Suffrage: "voter", LastIndex: 0, Unreachable: true},
		{Id: "a3", Address: "127.0.0.3:8401", Suffrage: "nonvoter", LastIndex: 7},
	}}, nil
}

// fakeBlobs holds two blobs, one degraded.
type fakeBlobs struct{}

func (fakeBlobs) ListPage(_ context.Context, prefix, after string, limit int, keep func(string) bool, _ pb.Consistency) ([]*pb.BlobSummary, int, uint64, error) {
	page, total := listPage([]*pb.BlobSummary{
		{Name: "models/a.bin", Size: 1 << 20, DataShards: 2, ParityShards: 1, Health: "healthy"},
		{Name: "secret/b.bin", Size: 10, Health: "degraded"},
	}, prefix, after, limit, keep)
	return page, total, 5, nil
}

// listPage is the page of all, sorted by name, that Blobs.ListPage
// answers: keep is asked about every blob under prefix in order.
func listPage(all []*pb.BlobSummary, prefix, after string, limit int, keep func(string) bool) (page []*pb.BlobSummary, total int) {
	for _, b := range all {
		if !strings.HasPrefix(b.Name, prefix) || (keep != nil && !keep(b.Name)) {
			continue
		}
		total++
		if b.Name > after && len(page) < limit {
			page = append(page, b)
		}
	}
	return page, total
}

func (fakeBlobs) LeaderRepairStatus(_ context.Context, blobID string) (*pb.RepairStatusResponse, error) {
	r := &pb.RepairStatusResponse{Leader: "a1", Queued: 2, Waiting: 1, WaitingForAgent: 1, Retrying: 3}
	if blobID == "id-b" {
		r.Corrupt = []*pb.ShardRef{{BlobId: blobID, Block: 0, Index: 1, Node: "a2"}}
	}
	return r, nil
}

// blobReplica is a registry replica that also holds the fake blobs'
// metadata.
type blobReplica struct{ *raftstore.FSM }

func (blobReplica) Blob(name string) *pb.Blob {
	switch name {
	case "models/a.bin":
		return &pb.Blob{Name: name, Id: "id-a"}
	case "secret/b.bin":
		return &pb.Blob{Name: name, Id: "id-b"}
	}
	return nil
}

type testUI struct {
	*UI
	w   *fsmtest.Writer
	srv *httptest.Server
}

// tokens of the fake ACL: "admin" may do everything, "user" reads the
// services under "user." only, anything else is unknown.
var policies = map[string]string{
	"admin": `service "" { write } blob "" { write } operator { write }`,
	"user":  `service "user." { read }`,
	"ops":   `operator { read } blob "models/" { read }`,
}

func fakeAuthorize(t *testing.T) Authorize {
	return func(w http.ResponseWriter, r *http.Request, need string) (acl.Authorizer, bool) {
		secret := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
		rules, ok := policies[secret]
		if !ok {
			http.Error(w, "needs a token with "+need, http.StatusUnauthorized)
			return nil, false
		}
		p, err := acl.ParsePolicy(secret, rules)
		if err != nil {
			t.Fatal(err)
		}
		return acl.Compile(p), true
	}
}

func newTestUI(t *testing.T, withACL bool) *testUI {
	return newTestUIWith(t, withACL, 0)
}

func newTestUIWith(t *testing.T, withACL bool, keepAlive time.Duration) *testUI {
	return newTestUIOf(t, withACL, func(cfg *Config) { cfg.KeepAlive = keepAlive })
}

// newTestUIOf is newTestUI with its Config changed by set.
func newTestUIOf(t *testing.T, withACL bool, set func(*Config)) *testUI {
	fsm := raftstore.NewFSM(1 << 12)
	cfg := Config{Replica: blobReplica{fsm}, Status: fakeStatus{}, Blobs: fakeBlobs{}}
	if withACL {
		cfg.Authorize = fakeAuthorize(t)
	}
	set(&cfg)
	u := &testUI{UI: New(cfg), w: fsmtest.NewWriter(t, fsm)}
	u.srv = httptest.NewServer(u)
	t.Cleanup(func() {
		u.Close()
		u.srv.Close()
	})
	return u
}

// get GETs path with token ("" for none) and returns the response and its
// body.
func (u *testUI) get(t *testing.T, path, token string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, u.srv.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := u.srv.Client().Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	return resp, string(b)
}

func (u *testUI) getJSON(t *testing.T, path, token string, v any) {
	t.Helper()
	resp, body := u.get(t, path, token)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %s", path, resp.StatusCode, body)
	}
	if err := json.Unmarshal([]byte(body), v); err != nil {
		t.Fatalf("GET %s: %v in %s", path, err, body)
	}
}

func registerSample(u *testUI) {
	u.w.Register(
		&pb.Instance{Service: "user.rpc", Id: "u1", Address: "10.0.0.1:9000", Node: "a1", Zone: "z1", Version: "1.4.2",
			Weight: 100, Tags: []string{"canary", "v2"}, Health: pb.Health_PASSING},
		&pb.Instance{Service: "user.rpc", Id: "u2", Address: "10.0.0.2:9000", Node: "a2", Weight: 50,
			Health: pb.Health_CRITICAL, HealthOutput: "connection refused"},
		&pb.Instance{Service: "user.rpc", Id: "u3", Address: "10.0.0.3:9000", Node: "a1", Health: pb.Health_WARNING},
		&pb.Instance{Service: "order.rpc", Id: "o1", Address: "10.0.1.1:9000", Node: "a1", Health: pb.Health_PASSING},
	)
}

// The services endpoint counts every service's instances by health as
// the replica holds them, sorted by name.
func TestServicesCountInstancesByHealth(t *testing.T) {
	u := newTestUI(t, false)
	registerSample(u)
	var got servicesView
	u.getJSON(t, "/ui/api/services", "", &got)
	want := []serviceView{
		{Name: "order.rpc", Instances: 1, Passing: 1},
		{Name: "user.rpc", Instances: 3, Passing: 1, Warning: 1, Critical: 1},
	}
	if len(got.Services) != len(want) {
		t.Fatalf("services %+v, want %+v", got.Services, want)
	}
	for i := range want {
		if got.Services[i] != want[i] {
			t.Errorf("service %d: %+v, want %+v", i, got.Services[i], want[i])
		}
	}
	if got.Revision != u.w.Index() {
		t.Errorf("revision %d, want the replica's %d", got.Revision, u.w.Index())
	}
}

// One service's endpoint shows each instance as registered: address,
// zone, version, weight, tags, health and its output, owning agent.
func TestServiceShowsItsInstancesAsRegistered(t *testing.T) {
	u := newTestUI(t, false)
	registerSample(u)
	var got instancesView
	u.getJSON(t, "/ui/api/services/user.rpc", "", &got)
	if got.Service != "user.rpc" || len(got.Instances) != 3 {
		t.Fatalf("got %+v, want the 3 instances of user.rpc", got)
	}
	byID := map[string]instanceView{}
	for _, in := range got.Instances {
		byID[in.ID] = in
	}
	u1, u2 := byID["u1"], byID["u2"]
	if u1.Address != "10.0.0.1:9000" || u1.Zone != "z1" || u1.Version != "1.4.2" || u1.Weight != 100 ||
		strings.Join(u1.Tags, ",") != "canary,v2" || u1.Health != "passing" || u1.Node != "a1" {
		t.Errorf("u1 = %+v", u1)
	}
	if u2.Health != "critical" || u2.HealthOutput != "connection refused" || u2.Node != "a2" || u2.Weight != 50 {
		t.Errorf("u2 = %+v", u2)
	}
	var none instancesView
	u.getJSON(t, "/ui/api/services/gone.rpc", "", &none)
	if none.Instances == nil || len(none.Instances) != 0 {
		t.Errorf("a service without instances: %+v, want an empty list", none)
	}
}

// Members, Raft peers with their lag behind the leader, blobs and the
// repair state come from the agent's Status service and blob store.
func TestClusterViewsComeFromStatusAndBlobs(t *testing.T) {
	u := newTestUI(t, false)
	var members membersView
	u.getJSON(t, "/ui/api/members", "", &members)
	if len(members.Members) != 3 || members.Members[0].Name != "a1" || members.Members[0].Role != "leader" ||
		members.Members[1].Status != "failed" || members.Members[1].Zone != "z2" || !members.Members[1].ShardsFull || members.Members[0].ShardsFull || !members.Members[1].Leaving || members.Members[0].Leaving ||
		!members.Members[2].NoRaftState || members.Members[1].NoRaftState {
		t.Errorf("members %+v", members.Members)
	}
	if off := members.Members[2].ClockOffsetSeconds; off == nil || *off != -90 || members.Members[0].ClockOffsetSeconds != nil {
		t.Errorf("clock offsets: a3 %v (want -90), a1 %v (want none)", off, members.Members[0].ClockOffsetSeconds)
	}
	var rv raftView
	u.getJSON(t, "/ui/api/raft", "", &rv)
	lags, unreachable := map[string]int64{}, map[string]bool{}
	for _, p := range rv.Peers {
		lags[p.ID], unreachable[p.ID] = p.Lag, p.Unreachable
	}
	if rv.Leader != "a1" || lags["a1"] != 0 || lags["a2"] != -1 || lags["a3"] != 2 {
		t.Errorf("raft %+v, want leader a1 and lags a1 0, a2 -1 (no answer), a3 2", rv)
	}
	if unreachable["a1"] || !unreachable["a2"] || unreachable["a3"] {
		t.Errorf("raft %+v, want only a2 unreachable", rv)
	}
	var blobs blobsView
	u.getJSON(t, "/ui/api/blobs", "", &blobs)
	if len(blobs.Blobs) != 2 || blobs.Blobs[1].Health != "degraded" || blobs.Blobs[0].Size != 1<<20 || blobs.Blobs[1].ID != "id-b" {
		t.Errorf("blobs %+v", blobs.Blobs)
	}
	var repair repairView
	u.getJSON(t, "/ui/api/repair", "", &repair)
	if repair.Leader != "a1" || repair.Queued != 2 || repair.Waiting != 1 || repair.WaitingForAgent != 1 || repair.Retrying != 3 {
		t.Errorf("repair %+v", repair)
	}
	var one repairView
	u.getJSON(t, "/ui/api/repair?blob=secret/b.bin", "", &one)
	if one.Corrupt != 1 {
		t.Errorf("repair of secret/b.bin %+v, want its 1 corrupt shard", one)
	}
	if resp, body := u.get(t, "/ui/api/repair?blob=nothing", ""); resp.StatusCode != http.StatusNotFound || !strings.Contains(body, "no blob named nothing") {
		t.Errorf("repair of an unknown blob: %d %s, want 404 naming it", resp.StatusCode, body)
	}
}

// With ACLs on, each endpoint needs what the gRPC method serving the same
// data needs: a token at all (401 without), service:read on the service
// (Get), operator:read for members and Raft; lists are filtered as List
// filters them. The page and its script need no token.
func TestEndpointsNeedTheirGRPCMethodsPermission(t *testing.T) {
	u := newTestUI(t, true)
	registerSample(u)
	for _, path := range []string{"/ui/api/services", "/ui/api/services/user.rpc", "/ui/api/members", "/ui/api/raft", "/ui/api/blobs", "/ui/api/events"} {
		if resp, body := u.get(t, path, ""); resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("GET %s without a token: %d %s, want 401", path, resp.StatusCode, body)
		}
		if resp, body := u.get(t, path, "stranger"); resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("GET %s with an unknown token: %d %s, want 401", path, resp.StatusCode, body)
		}
	}
	for _, path := range []string{"/ui/api/services/order.rpc", "/ui/api/members", "/ui/api/raft", "/ui/api/repair", "/ui/api/agent"} {
		resp, body := u.get(t, path, "user")
		if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "permission denied") {
			t.Errorf("GET %s with a token lacking the permission: %d %s, want 403 naming it", path, resp.StatusCode, body)
		}
	}
	var svcs servicesView
	u.getJSON(t, "/ui/api/services", "user", &svcs)
	if len(svcs.Services) != 1 || svcs.Services[0].Name != "user.rpc" {
		t.Errorf("services a user.* reader sees: %+v, want user.rpc only", svcs.Services)
	}
	var blobs blobsView
	u.getJSON(t, "/ui/api/blobs", "user", &blobs)
	if len(blobs.Blobs) != 0 {
		t.Errorf("blobs a token without blob:read sees: %+v, want none", blobs.Blobs)
	}
	u.getJSON(t, "/ui/api/blobs", "admin", &blobs)
	if len(blobs.Blobs) != 2 {
		t.Errorf("blobs the admin sees: %+v, want both", blobs.Blobs)
	}
	var members membersView
	u.getJSON(t, "/ui/api/members", "admin", &members)
	for _, path := range []string{"/ui/", "/ui/services/user.rpc", "/ui/static/app.js", "/ui/static/app.css"} {
		if resp, body := u.get(t, path, ""); resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s without a token: %d %s, want 200", path, resp.StatusCode, body)
		}
	}
}

// Registry text is data, never markup: the JSON writes < and > as \u
// escapes, and the script puts every value in the page as text.
func TestRegistryTextIsNeverMarkup(t *testing.T) {
	u := newTestUI(t, false)
	const tag = `<img src=x onerror=alert(1)>`
	u.w.Register(&pb.Instance{Service: "user.rpc", Id: "x", Address: "10.0.0.1:9000", Tags: []string{tag},
		HealthOutput: "</script><script>alert(2)</script>", Health: pb.Health_PASSING})
	_, body := u.get(t, "/ui/api/services/user.rpc", "")
	if strings.Contains(body, "<") || !strings.Contains(body, `\u003cimg src=x onerror=alert(1)\u003e`) {
		t.Errorf("JSON carries markup as is: %s", body)
	}
	var got instancesView
	u.getJSON(t, "/ui/api/services/user.rpc", "", &got)
	if got.Instances[0].Tags[0] != tag {
		t.Errorf("tag %q came back as %q", tag, got.Instances[0].Tags[0])
	}

	_, script := u.get(t, "/ui/static/app.js", "")
	for _, sink := range []string{"innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function", "DOMParser", "createContextualFragment"} {
		if strings.Contains(script, sink) {
			t.Errorf("app.js uses %s, which parses text as HTML or code: put values in with textContent", sink)
		}
	}
	_, page := u.get(t, "/ui/", "")
	if m := regexp.MustCompile(`<script(?:\s[^>]*)?>[^<]+</script>|<script(?:(?:\s+[a-z]+="[^"]*")*)>`).FindAllString(page, -1); len(m) > 0 {
		for _, s := range m {
			if !strings.Contains(s, "src=") {
				t.Errorf("index.html has an inline script %q (the CSP forbids it)", s)
			}
		}
	}
	if regexp.MustCompile(`\son[a-z]+=|\sstyle=`).MatchString(page) {
		t.Error("index.html has an inline event handler or style (the CSP forbids them)")
	}
}

// Every answer carries a Content-Security-Policy allowing only the UI's
// own files and nosniff; JSON is never cached; only GET is served.
func TestAnswersCarrySecurityHeaders(t *testing.T) {
	u := newTestUI(t, false)
	for _, path := range []string{"/ui/", "/ui/members", "/ui/static/app.js", "/ui/api/services", "/ui/api/nothing", "/ui/static/missing.js"} {
		resp, _ := u.get(t, path, "")
		h := resp.Header
		if !strings.HasPrefix(h.Get("Content-Security-Policy"), "default-src 'self'") {
			t.Errorf("GET %s: Content-Security-Policy %q", path, h.Get("Content-Security-Policy"))
		}
		if h.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("GET %s: X-Content-Type-Options %q", path, h.Get("X-Content-Type-Options"))
		}
		if strings.HasPrefix(h.Get("Content-Type"), "application/json") && h.Get("Cache-Control") != "no-store" {
			t.Errorf("GET %s: JSON with Cache-Control %q, want no-store", path, h.Get("Cache-Control"))
		}
	}
	if resp, body := u.get(t, "/ui/api/nothing", ""); resp.StatusCode != http.StatusNotFound || !strings.Contains(body, "no UI endpoint") {
		t.Errorf("GET an unknown endpoint: %d %s, want 404", resp.StatusCode, body)
	}
	if resp, _ := u.get(t, "/ui/static/app.js", ""); !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/javascript") {
		t.Errorf("app.js served as %q", resp.Header.Get("Content-Type"))
	}
	resp, err := u.srv.Client().Post(u.srv.URL+"/ui/api/services", "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST: %d, want 405", resp.StatusCode)
	}
}

// sseReader reads Server-Sent Events.
type sseReader struct {
	t    *testing.T
	body io.ReadCloser
	sc   *bufio.Scanner
}

func (u *testUI) openEvents(t *testing.T, token string) *sseReader {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.srv.URL+"/ui/api/events", nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := u.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("events: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	return &sseReader{t: t, body: resp.Body, sc: bufio.NewScanner(resp.Body)}
}

// next returns the next event's name and data, or ok false at the end of
// the stream.
func (r *sseReader) next() (name string, change registryChange, ok bool) {
	r.t.Helper()
	var data string
	for r.sc.Scan() {
		line := r.sc.Text()
		switch {
		case strings.HasPrefix(line, "event: "):
			name = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			data = strings.TrimPrefix(line, "data: ")
		case line == "" && name != "":
			if err := json.Unmarshal([]byte(data), &change); err != nil {
				r.t.Fatalf("event %s: %v in %q", name, err, data)
			}
			return name, change, true
		}
	}
	return "", change, false
}

// The live stream says hello, then names the services each registry
// change touched, as they happen.
func TestLiveStreamNamesChangedServices(t *testing.T) {
	u := newTestUI(t, false)
	registerSample(u)
	ev := u.openEvents(t, "")
	if name, c, ok := ev.next(); !ok || name != "hello" || c.Revision != u.w.Index() {
		t.Fatalf("first event %q %+v, want hello at revision %d", name, c, u.w.Index())
	}
	u.w.Register(&pb.Instance{Service: "pay.rpc", Id: "p1", Address: "10.0.2.1:9000", Health: pb.Health_PASSING})
	name, c, ok := ev.next()
	if !ok || name != "registry" || strings.Join(c.Services, ",") != "pay.rpc" || c.Revision != u.w.Index() || c.Reset {
		t.Fatalf("after a registration: %q %+v, want registry naming pay.rpc at revision %d", name, c, u.w.Index())
	}
}

// A token sees on the live stream only changes of services it may read,
// as a gRPC Watch of every service is filtered.
func TestLiveStreamIsFilteredByTheToken(t *testing.T) {
	u := newTestUI(t, true)
	ev := u.openEvents(t, "user")
	if name, _, ok := ev.next(); !ok || name != "hello" {
		t.Fatalf("first event %q, want hello", name)
	}
	u.w.Register(&pb.Instance{Service: "order.rpc", Id: "o9", Address: "10.0.1.9:9000", Health: pb.Health_PASSING})
	u.w.Register(&pb.Instance{Service: "user.rpc", Id: "u9", Address: "10.0.0.9:9000", Health: pb.Health_PASSING})
	name, c, ok := ev.next()
	if !ok || name != "registry" || strings.Join(c.Services, ",") != "user.rpc" {
		t.Fatalf("first change a user.* reader sees: %q %+v, want only user.rpc", name, c)
	}
}

// Close ends the open live streams (the agent's HTTP shutdown would wait
// for them) and refuses new ones.
func TestCloseEndsLiveStreams(t *testing.T) {
	u := newTestUI(t, false)
	ev := u.openEvents(t, "")
	if name, _, ok := ev.next(); !ok || name != "hello" {
		t.Fatalf("first event %q, want hello", name)
	}
	closed := make(chan struct{})
	go func() {
		u.Close()
		close(closed)
	}()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return with a live stream open")
	}
	if name, _, ok := ev.next(); ok {
		t.Errorf("the stream went on after Close with %q", name)
	}
	if resp, body := u.get(t, "/ui/api/events", ""); resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("a stream after Close: %d %s, want 503", resp.StatusCode, body)
	}
}

// A live stream with nothing to say sends a comment now and then, so that
// a connection that went away without closing is found.
func TestQuietLiveStreamSendsKeepAlives(t *testing.T) {
	u := newTestUIWith(t, false, 20*time.Millisecond)
	ev := u.openEvents(t, "")
	if name, _, ok := ev.next(); !ok || name != "hello" {
		t.Fatalf("first event %q, want hello", name)
	}
	stop := time.AfterFunc(10*time.Second, func() { ev.body.Close() })
	defer stop.Stop()
	for ev.sc.Scan() {
		if ev.sc.Text() == ": keep-alive" {
			return
		}
	}
	t.Fatalf("the stream ended without a keep-alive comment: %v", ev.sc.Err())
}

// A HEAD of the live stream is answered at once, without a stream: the
// connection is free for the next request.
func TestHeadOfLiveStreamDoesNotStream(t *testing.T) {
	u := newTestUI(t, false)
	client := &http.Client{Transport: &http.Transport{MaxConnsPerHost: 1}, Timeout: 10 * time.Second}
	t.Cleanup(client.CloseIdleConnections)
	resp, err := client.Head(u.srv.URL + "/ui/api/events")
	if err != nil {
		t.Fatalf("HEAD /ui/api/events: %v", err)
	}
	resp.Body.Close()
	if resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Errorf("HEAD /ui/api/events: Content-Type %q", resp.Header.Get("Content-Type"))
	}
	resp, err = client.Get(u.srv.URL + "/ui/api/services")
	if err != nil {
		t.Fatalf("GET after a HEAD of the stream, on the same connection: %v", err)
	}
	resp.Body.Close()
}

// stalledWriter is a live stream's response to a reader that stops
// reading after the hello: later writes block until their deadline (for
// ever without one).
type stalledWriter struct {
	header   http.Header
	writes   atomic.Int32
	deadline atomic.Pointer[time.Time]
	never    chan struct{}
}

func (s *stalledWriter) Header() http.Header { return s.header }
func (s *stalledWriter) WriteHeader(int)     {}
func (s *stalledWriter) FlushError() error   { return nil }

func (s *stalledWriter) SetWriteDeadline(t time.Time) error {
	s.deadline.Store(&t)
	return nil
}

func (s *stalledWriter) Write(p []byte) (int, error) {
	if s.writes.Add(1) == 1 {
		return len(p), nil // the hello
	}
	d := s.deadline.Load()
	if d == nil || d.IsZero() {
		<-s.never
		return 0, io.ErrClosedPipe
	}
	time.Sleep(time.Until(*d))
	return 0, os.ErrDeadlineExceeded
}

// A live stream whose reader stopped reading is ended once a write has
// waited the write timeout, so it neither holds a goroutine for ever nor
// keeps Close waiting.
func TestLiveStreamOfAStalledReaderEnds(t *testing.T) {
	fsm := raftstore.NewFSM(1 << 12)
	u := New(Config{Replica: blobReplica{fsm}, Status: fakeStatus{}, Blobs: fakeBlobs{}, WriteTimeout: 50 * time.Millisecond})
	sw := &stalledWriter{header: http.Header{}, never: make(chan struct{})}
	t.Cleanup(func() { close(sw.never) })
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	done := make(chan struct{})
	go func() {
		u.ServeHTTP(sw, httptest.NewRequest(http.MethodGet, "/ui/api/events", nil).WithContext(ctx))
		close(done)
	}()
	testwait.For(t, 10*time.Second, "the hello", func() bool { return sw.writes.Load() >= 1 })
	fsmtest.NewWriter(t, fsm).Register(&pb.Instance{Service: "user.rpc", Id: "u1", Address: "10.0.0.1:9000"})
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the stream of a reader that stopped reading was still open 10s later")
	}
	u.Close()
}

// TestAgentViewSaysWhyTheRaftNodeStopped: the page's header names the
// reason an agent stopped its Raft node.
func TestAgentViewSaysWhyTheRaftNodeStopped(t *testing.T) {
	why := "fsync of the Raft log failed (input/output error): check the disk, then restart the agent"
	a := agentViewOf(t, fakeStatus{stopped: why})
	if a.RaftState != "Shutdown" || a.RaftStopped != why {
		t.Fatalf("agent view: state %q, stopped %q; want Shutdown, %q", a.RaftState, a.RaftStopped, why)
	}
}

// TestAgentViewSaysTheAgentIsCutOff: the page's header says why an agent
// is cut off from the leader, as `zrpcctl status` does.
func TestAgentViewSaysTheAgentIsCutOff(t *testing.T) {
	why := "replica is stale: no other voter has sent this agent a Raft message or answered one for 1.3s"
	if a := agentViewOf(t, fakeStatus{cutOff: why}); a.CutOff != why {
		t.Fatalf("agent view: cut off %q, want %q", a.CutOff, why)
	}
}

// agentViewOf returns the page header's view of an agent whose Status
// answers as st does.
func agentViewOf(t *testing.T, st fakeStatus) agentView {
	t.Helper()
	u := New(Config{Replica: blobReplica{raftstore.NewFSM(1 << 12)}, Status: st, Blobs: fakeBlobs{}})
	t.Cleanup(u.Close)
	srv := httptest.NewServer(u)
	t.Cleanup(srv.Close)
	resp, err := http.Get(srv.URL + "/ui/api/agent")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var a agentView
	if err := json.NewDecoder(resp.Body).Decode(&a); err != nil {
		t.Fatal(err)
	}
	return a
}

// newChangingTokenUI is a UI whose one token, "reader", has the rules
// *rules holds at each request (none: the token was deleted).
func newChangingTokenUI(t *testing.T, rules *atomic.Pointer[string], writeTimeout time.Duration) *testUI {
	fsm := raftstore.NewFSM(1 << 12)
	u := &testUI{w: fsmtest.NewWriter(t, fsm), UI: New(Config{Replica: blobReplica{fsm}, Status: fakeStatus{}, Blobs: fakeBlobs{}, WriteTimeout: writeTimeout,
		Authorize: func(w http.ResponseWriter, r *http.Request, need string) (acl.Authorizer, bool) {
			current := rules.Load()
			if current == nil || r.Header.Get("Authorization") != "Bearer reader" {
				http.Error(w, "ACL token not found: needs a token with "+need, http.StatusUnauthorized)
				return nil, false
			}
			p, err := acl.ParsePolicy("reader", *current)
			if err != nil {
				t.Error(err)
				return nil, false
			}
			return acl.Compile(p), true
		}})}
	u.srv = httptest.NewServer(u)
	t.Cleanup(func() {
		u.Close()
		u.srv.Close()
	})
	return u
}

// A live stream is authorized by its token as it is now, not as it was
// when the stream opened, as a gRPC Watch is: a token narrowed meanwhile
// sees no more changes of what it lost, and one deleted ends the stream.
func TestLiveStreamFollowsItsTokensChanges(t *testing.T) {
	var rules atomic.Pointer[string] // nil: the token was deleted
	all, users := `service "" { read }`, `service "user." { read }`
	rules.Store(&all)
	u := newChangingTokenUI(t, &rules, 0)
	ev := u.openEvents(t, "reader")
	if name, _, ok := ev.next(); !ok || name != "hello" {
		t.Fatalf("first event %q, want hello", name)
	}
	u.w.Register(&pb.Instance{Service: "order.rpc", Id: "o1", Address: "10.0.1.1:9000", Health: pb.Health_PASSING})
	if name, c, ok := ev.next(); !ok || name != "registry" || strings.Join(c.Services, ",") != "order.rpc" {
		t.Fatalf("a change of order.rpc: %q %+v, want it named", name, c)
	}

	rules.Store(&users)
	u.w.Register(&pb.Instance{Service: "order.rpc", Id: "o2", Address: "10.0.1.2:9000", Health: pb.Health_PASSING})
	u.w.Register(&pb.Instance{Service: "user.rpc", Id: "u1", Address: "10.0.0.1:9000", Health: pb.Health_PASSING})
	if name, c, ok := ev.next(); !ok || name != "registry" || strings.Join(c.Services, ",") != "user.rpc" {
		t.Fatalf("first change after the token lost order.rpc: %q %+v, want only user.rpc", name, c)
	}

	rules.Store(nil)
	u.w.Register(&pb.Instance{Service: "user.rpc", Id: "u2", Address: "10.0.0.2:9000", Health: pb.Health_PASSING})
	stop := time.AfterFunc(10*time.Second, func() { ev.body.Close() })
	defer stop.Stop()
	if name, c, ok := ev.next(); ok {
		t.Fatalf("after its token was deleted the stream sent %q %+v, want it ended", name, c)
	}
	if !stop.Stop() {
		t.Fatal("the stream of a deleted token was still open 10 s later")
	}
}

// The repair state of one blob (?blob=NAME) needs blob:read on its name
// besides operator:read: a token that may not read a blob learns neither
// its repair state nor whether it exists.
func TestRepairOfABlobNeedsItsReadPermission(t *testing.T) {
	u := newTestUI(t, true)
	var repair repairView
	u.getJSON(t, "/ui/api/repair?blob=models/a.bin", "ops", &repair)
	for _, name := range []string{"secret/b.bin", "secret/nothing"} {
		resp, body := u.get(t, "/ui/api/repair?blob="+name, "ops")
		if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "permission denied") {
			t.Errorf("repair of %s with a token that may not read it: %d %s, want 403", name, resp.StatusCode, body)
		}
	}
}

// manyInstances registers n instances of service, critical with a health
// output of 4 KiB (the most the API takes) each.
func manyInstances(u *testUI, service string, n int) {
	output := strings.Repeat("x", 4096)
	insts := make([]*pb.Instance, n)
	for i := range insts {
		insts[i] = &pb.Instance{Service: service, Id: fmt.Sprintf("i%05d", i), Address: "10.0.0.1:9000", Node: "a1",
			Health: pb.Health_CRITICAL, HealthOutput: output}
	}
	u.w.Register(insts...)
}

// The services list counts instances by health without decoding them: a
// registry of critical instances with long health outputs costs the page
// far less than those outputs.
func TestServicesListDoesNotDecodeInstances(t *testing.T) {
	u := newTestUI(t, false)
	manyInstances(u, "big.rpc", 2000)
	outputs := uint64(2000 * 4096)
	var got servicesView
	u.getJSON(t, "/ui/api/services", "", &got) // warm up the connection
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	u.getJSON(t, "/ui/api/services", "", &got)
	runtime.ReadMemStats(&after)
	if len(got.Services) != 1 || got.Services[0].Critical != 2000 {
		t.Fatalf("services %+v, want big.rpc with 2000 critical instances", got.Services)
	}
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > outputs/4 {
		t.Errorf("the services list allocated %d bytes, want far less than the %d bytes of its instances' health outputs", alloc, outputs)
	}
}

// One service's instances come in pages, in id order: a service of
// thousands of instances with long health outputs is not answered whole.
func TestServiceAnswersItsInstancesInPages(t *testing.T) {
	u := newTestUI(t, false)
	manyInstances(u, "big.rpc", 1200)
	var ids []string
	after := ""
	for pages := 0; ; pages++ {
		if pages > 3 {
			t.Fatalf("more than 3 pages for 1200 instances")
		}
		var page instancesView
		u.getJSON(t, "/ui/api/services/big.rpc?after="+after, "", &page)
		if len(page.Instances) > instancesPerPage || page.Total != 1200 || page.First != len(ids) {
			t.Fatalf("page after %q: %d instances, total %d, first %d; want at most %d, 1200, %d",
				after, len(page.Instances), page.Total, page.First, instancesPerPage, len(ids))
		}
		for _, in := range page.Instances {
			ids = append(ids, in.ID)
		}
		if page.Next == "" {
			break
		}
		if page.Next != ids[len(ids)-1] {
			t.Fatalf("next %q, want the page's last id %q", page.Next, ids[len(ids)-1])
		}
		after = page.Next
	}
	if len(ids) != 1200 {
		t.Fatalf("the pages held %d instances, want 1200", len(ids))
	}
	for i, id := range ids {
		if want := fmt.Sprintf("i%05d", i); id != want {
			t.Fatalf("instance %d is %s, want %s (id order, each once)", i, id, want)
		}
	}
}

// A page holds at most maxInstancePageBytes of encoded instances, and
// one instance at least.
func TestInstancePageIsBoundedInBytes(t *testing.T) {
	all := make([]raftstore.EncodedInstance, 10)
	for i := range all {
		all[i] = raftstore.EncodedInstance{ID: fmt.Sprintf("i%d", i), Encoding: make([]byte, maxInstancePageBytes/3)}
	}
	if first, last := instancePage(all, ""); first != 0 || last != 3 {
		t.Errorf("first page [%d, %d), want [0, 3)", first, last)
	}
	if first, last := instancePage(all, "i8"); first != 9 || last != 10 {
		t.Errorf("page after i8 [%d, %d), want [9, 10)", first, last)
	}
	all[0].Encoding = make([]byte, 2*maxInstancePageBytes)
	if first, last := instancePage(all, ""); first != 0 || last != 1 {
		t.Errorf("page of an oversized instance [%d, %d), want [0, 1)", first, last)
	}
}

// Live streams beyond MaxStreams are refused, saying so, and a stream
// that ends makes room for another: clients that open streams without
// end do not take every connection, goroutine and watch slot.
func TestLiveStreamsAreBounded(t *testing.T) {
	u := newTestUIOf(t, false, func(cfg *Config) { cfg.MaxStreams = 2 })
	first := u.openEvents(t, "")
	second := u.openEvents(t, "")
	for _, ev := range []*sseReader{first, second} {
		if name, _, ok := ev.next(); !ok || name != "hello" {
			t.Fatalf("first event %q, want hello", name)
		}
	}
	if code, body := u.tryEvents(t); code != http.StatusServiceUnavailable || !strings.Contains(body, "at most 2 live streams") {
		t.Fatalf("a third stream: %d %s, want 503 saying at most 2 live streams are served", code, body)
	}
	first.body.Close()
	testwait.For(t, 10*time.Second, "a stream once another ended", func() bool {
		code, _ := u.tryEvents(t)
		return code == http.StatusOK
	})
}

// tryEvents opens a live stream and closes it at once, returning its
// status and, when refused, the refusal.
func (u *testUI) tryEvents(t *testing.T) (int, string) {
	t.Helper()
	resp, err := u.srv.Client().Get(u.srv.URL + "/ui/api/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusOK {
		return resp.StatusCode, ""
	}
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// countingHandler counts the log records at Warn or above whose message
// starts with prefix.
type countingHandler struct {
	prefix string
	mu     sync.Mutex
	n      int
}

func (h *countingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *countingHandler) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *countingHandler) WithGroup(string) slog.Handler            { return h }
func (h *countingHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if r.Level >= slog.LevelWarn && strings.HasPrefix(r.Message, h.prefix) {
		h.n++
	}
	return nil
}

func (h *countingHandler) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.n
}

// TestRefusedRequestsAreLoggedOnceAMinutePerClientAndPath: a page open
// with a token that lacks a permission asks again every few seconds; the
// log says so once a minute, not at every request.
func TestRefusedRequestsAreLoggedOnceAMinutePerClientAndPath(t *testing.T) {
	logs := &countingHandler{prefix: "ACL refused a UI request"}
	u := newTestUIOf(t, true, func(cfg *Config) { cfg.Logger = slog.New(logs) })
	for range 5 {
		if resp, body := u.get(t, "/ui/api/agent", "user"); resp.StatusCode != http.StatusForbidden {
			t.Fatalf("GET /ui/api/agent with a token lacking operator:read: %d %s, want 403", resp.StatusCode, body)
		}
	}
	if resp, _ := u.get(t, "/ui/api/raft", "user"); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("GET /ui/api/raft with a token lacking operator:read: %d, want 403", resp.StatusCode)
	}
	if n := logs.count(); n != 2 {
		t.Fatalf("%d refusal lines for 5 refused requests to one path and 1 to another, want 2", n)
	}
}

// manyBlobs is a blob store holding n blobs named with prefix and a
// number, each name padded to at least nameLen bytes.
type manyBlobs struct {
	fakeBlobs
	prefixes []string
	n        int
	nameLen  int
	// asked, when set, is told the limit of each page asked for.
	asked func(limit int)
}

func (m manyBlobs) ListPage(_ context.Context, prefix, after string, limit int, keep func(string) bool, _ pb.Consistency) ([]*pb.BlobSummary, int, uint64, error) {
	var all []*pb.BlobSummary
	for _, p := range m.prefixes {
		for i := range m.n {
			name := fmt.Sprintf("%s%05d", p, i)
			if pad := m.nameLen - len(name); pad > 0 {
				name += strings.Repeat("x", pad)
			}
			all = append(all, &pb.BlobSummary{Name: name, Size: 10, Health: "healthy"})
		}
	}
	slices.SortFunc(all, func(a, b *pb.BlobSummary) int { return strings.Compare(a.Name, b.Name) })
	if m.asked != nil {
		m.asked(limit)
	}
	page, total := listPage(all, prefix, after, limit, keep)
	return page, total, 7, nil
}

// blobPages reads every page of /ui/api/blobs with token, checking each
// page's bounds, and returns the names in the order the pages gave them.
func (u *testUI) blobPages(t *testing.T, token string, wantTotal int) []string {
	t.Helper()
	var names []string
	after := ""
	for pages := 0; ; pages++ {
		if pages > wantTotal {
			t.Fatalf("more pages than the %d blobs", wantTotal)
		}
		resp, body := u.get(t, "/ui/api/blobs?after="+url.QueryEscape(after), token)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET the blobs after %q: %d %s", after, resp.StatusCode, body)
		}
		if len(body) > maxBlobPageBytes+4096 {
			t.Fatalf("the page after %q is %d bytes, want at most about %d", after, len(body), maxBlobPageBytes)
		}
		var page blobsView
		if err := json.Unmarshal([]byte(body), &page); err != nil {
			t.Fatal(err)
		}
		if len(page.Blobs) == 0 || len(page.Blobs) > blobsPerPage || page.Total != wantTotal || page.First != len(names) {
			t.Fatalf("page after %q: %d blobs, total %d, first %d; want 1 to %d, %d, %d",
				after, len(page.Blobs), page.Total, page.First, blobsPerPage, wantTotal, len(names))
		}
		for _, b := range page.Blobs {
			names = append(names, b.Name)
		}
		if page.Next == "" {
			return names
		}
		if page.Next != names[len(names)-1] {
			t.Fatalf("next %q, want the page's last name %q", page.Next, names[len(names)-1])
		}
		after = page.Next
	}
}

// The blobs come in pages, in name order, each bounded in entries and in
// bytes: a store of thousands of blobs is not answered whole. A token
// that may read only some of them pages through those, counted alone.
func TestBlobsComeInPages(t *testing.T) {
	u := newTestUIOf(t, true, func(cfg *Config) {
		cfg.Blobs = manyBlobs{prefixes: []string{"secret/", "models/"}, n: 1200}
	})
	for _, c := range []struct {
		token    string
		prefixes []string
	}{{"admin", []string{"models/", "secret/"}}, {"ops", []string{"models/"}}} {
		names := u.blobPages(t, c.token, 1200*len(c.prefixes))
		i := 0
		for _, p := range c.prefixes {
			for n := range 1200 {
				if want := fmt.Sprintf("%s%05d", p, n); names[i] != want {
					t.Fatalf("token %s: blob %d is %s, want %s (name order, each once)", c.token, i, names[i], want)
				}
				i++
			}
		}
	}

	long := newTestUIOf(t, false, func(cfg *Config) {
		cfg.Blobs = manyBlobs{prefixes: []string{"models/"}, n: 1000, nameLen: 1000}
	})
	if names := long.blobPages(t, "", 1000); len(names) != 1000 {
		t.Fatalf("the pages of long names held %d blobs, want 1000", len(names))
	}
}

// Each page of blobs asks the store for one page, not the whole list: the
// store judges the health of a page's blobs only. A page after the last
// blob is empty and says where it is.
func TestBlobsPageAsksTheStoreForOnePage(t *testing.T) {
	var mu sync.Mutex
	var limits []int
	u := newTestUIOf(t, true, func(cfg *Config) {
		cfg.Blobs = manyBlobs{prefixes: []string{"secret/", "models/"}, n: 1200, asked: func(limit int) {
			mu.Lock()
			defer mu.Unlock()
			limits = append(limits, limit)
		}}
	})
	if names := u.blobPages(t, "ops", 1200); len(names) != 1200 {
		t.Fatalf("the pages held %d blobs, want 1200", len(names))
	}
	mu.Lock()
	if len(limits) != 3 || slices.Max(limits) > blobsPerPage {
		t.Errorf("the store was asked for pages of %v blobs, want 3 pages of at most %d", limits, blobsPerPage)
	}
	mu.Unlock()
	var end blobsView
	u.getJSON(t, "/ui/api/blobs?after=zzz", "admin", &end)
	if len(end.Blobs) != 0 || end.Total != 2400 || end.First != 2400 || end.Next != "" {
		t.Errorf("the page after the last blob: %d blobs, total %d, first %d, next %q; want none, 2400, 2400, none",
			len(end.Blobs), end.Total, end.First, end.Next)
	}
}

// When its agent does not answer, the page says so in a banner of its
// own, with the reason and how often it retries, rather than the
// browser's "Failed to fetch"; a request that hangs fails in time. (The
// behaviour in a browser is e2e's to test; this checks the page has it.)
func TestPageHasABannerForAnAgentThatDoesNotAnswer(t *testing.T) {
	u := newTestUI(t, false)
	_, page := u.get(t, "/ui/", "")
	if !regexp.MustCompile(`<div id="down" [^>]*hidden>`).MatchString(page) {
		t.Error(`index.html has no hidden <div id="down"> for the banner saying the agent does not answer`)
	}
	_, script := u.get(t, "/ui/static/app.js", "")
	for _, want := range []string{`getElementById("down")`, "This agent does not answer: ", "the page retries every ", "AbortSignal.timeout(ANSWER_MS)"} {
		if !strings.Contains(script, want) {
			t.Errorf("app.js lacks %q", want)
		}
	}
}

// refusedBlobs is a blob store of names a token may not read: its
// ListPage asks keep about each and records the allocations that cost.
type refusedBlobs struct {
	fakeBlobs
	names  []string
	allocs atomic.Uint64
}

func (s *refusedBlobs) ListPage(_ context.Context, _, _ string, _ int, keep func(string) bool, _ pb.Consistency) ([]*pb.BlobSummary, int, uint64, error) {
	kept := 0
	allocs := testing.AllocsPerRun(1, func() {
		for _, name := range s.names {
			if keep(name) {
				kept++
			}
		}
	})
	s.allocs.Store(uint64(allocs))
	if kept != 0 {
		return nil, 0, 0, fmt.Errorf("keep kept %d of the blobs the token may not read", kept)
	}
	return nil, 0, 1, nil
}

// A page of blobs for a token that may read few of them allocates
// nothing for each blob it may not read: a store of 100,000 blobs costs
// such a token's every page no garbage per blob.
func TestBlobsRefusedToATokenCostNoAllocation(t *testing.T) {
	store := &refusedBlobs{}
	for i := range 10_000 {
		store.names = append(store.names, fmt.Sprintf("secret/%05d", i))
	}
	u := newTestUIOf(t, true, func(cfg *Config) { cfg.Blobs = store })
	var page blobsView
	u.getJSON(t, "/ui/api/blobs", "ops", &page)
	if len(page.Blobs) != 0 || page.Total != 0 {
		t.Fatalf("the page of a store whose blobs the token may not read: %+v, want none", page)
	}
	// Not 0: the allocations of the process's other goroutines are
	// counted too; one a blob would be 10,000.
	if n := store.allocs.Load(); n >= uint64(len(store.names)/100) {
		t.Fatalf("asking about %d blobs the token may not read allocated %d times, want none a blob", len(store.names), n)
	}
}
