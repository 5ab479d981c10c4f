package grpcapi

import (
	"context"
	"errors"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/zrpcio/zrpc/api/apierr"
	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/gossip"
	"github.com/zrpcio/zrpc/internal/grpctest"
)

// keyringFake is an agent's keyring with gossip's rules: use needs an
// installed key, remove refuses the primary.
type keyringFake struct {
	mu      sync.Mutex
	primary string
	keys    []string
	calls   int
}

func (f *keyringFake) Keys() (string, []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.primary, slices.Clone(f.keys)
}

func (f *keyringFake) InstallKey(k string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if !slices.Contains(f.keys, k) {
		f.keys = append(f.keys, k)
	}
	return nil
}

func (f *keyringFake) UseKey(k string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if !slices.Contains(f.keys, k) {
		return gossip.ErrKeyNotInstalled
	}
	f.primary = k
	return nil
}

func (f *keyringFake) RemoveKey(k string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if k == f.primary {
		return gossip.ErrRemovePrimary
	}
	f.keys = slices.DeleteFunc(f.keys, func(x string) bool { return x == k })
	return nil
}

// keyringPeerFake is a peer's KeyringPeer client: it serves through a
// real KeyringPeer service, or fails at once (down), or never answers
// (hung: it waits for the caller's deadline).
type keyringPeerFake struct {
	srv  pb.KeyringPeerServer
	down bool
	hung bool
}

func (p *keyringPeerFake) call(ctx context.Context, f func() (*pb.KeyringAgentResult, error)) (*pb.KeyringAgentResult, error) {
	switch {
	case p.down:
		return nil, status.Error(codes.Unavailable, "connection refused")
	case p.hung:
		<-ctx.Done()
		return nil, status.FromContextError(ctx.Err()).Err()
	}
	return f()
}

func (p *keyringPeerFake) List(ctx context.Context, in *pb.KeyringListRequest, _ ...grpc.CallOption) (*pb.KeyringAgentResult, error) {
	return p.call(ctx, func() (*pb.KeyringAgentResult, error) { return p.srv.List(ctx, in) })
}

func (p *keyringPeerFake) Install(ctx context.Context, in *pb.KeyringKeyRequest, _ ...grpc.CallOption) (*pb.KeyringAgentResult, error) {
	return p.call(ctx, func() (*pb.KeyringAgentResult, error) { return p.srv.Install(ctx, in) })
}

func (p *keyringPeerFake) Use(ctx context.Context, in *pb.KeyringKeyRequest, _ ...grpc.CallOption) (*pb.KeyringAgentResult, error) {
	return p.call(ctx, func() (*pb.KeyringAgentResult, error) { return p.srv.Use(ctx, in) })
}

func (p *keyringPeerFake) Remove(ctx context.Context, in *pb.KeyringKeyRequest, _ ...grpc.CallOption) (*pb.KeyringAgentResult, error) {
	return p.call(ctx, func() (*pb.KeyringAgentResult, error) { return p.srv.Remove(ctx, in) })
}

// keyringClusterFake is a cluster of agents named by their gRPC
// addresses.
type keyringClusterFake struct {
	members []gossip.Member
	peers   map[string]*keyringPeerFake // by gRPC address
}

func (c *keyringClusterFake) Members() []gossip.Member { return c.members }

func (c *keyringClusterFake) KeyringPeer(addr string) (pb.KeyringPeerClient, error) {
	p, ok := c.peers[addr]
	if !ok {
		return nil, errors.New("no connection to " + addr)
	}
	return p, nil
}

// keyringCluster builds the Keyring service of agent "a" in a cluster of
// the named agents, all holding key; edit may break a peer.
type keyringTestCluster struct {
	svc   *Keyring
	local map[string]*keyringFake
	peers map[string]*keyringPeerFake
	cl    *keyringClusterFake
}

func newKeyringTestCluster(t *testing.T, key string, names ...string) *keyringTestCluster {
	t.Helper()
	tc := &keyringTestCluster{local: map[string]*keyringFake{}, peers: map[string]*keyringPeerFake{}, cl: &keyringClusterFake{peers: map[string]*keyringPeerFake{}}}
	for _, n := range names {
		addr := n + ":8400"
		tc.cl.members = append(tc.cl.members, gossip.Member{Name: n, Status: gossip.StatusAlive, Meta: gossip.Meta{Name: n, GRPCAddr: addr}})
		tc.local[n] = &keyringFake{primary: key, keys: []string{key}}
		peer := NewKeyring(KeyringConfig{Agent: n, Local: tc.local[n], Cluster: tc.cl})
		tc.peers[n] = &keyringPeerFake{srv: peer.Peer()}
		tc.cl.peers[addr] = tc.peers[n]
	}
	tc.svc = NewKeyring(KeyringConfig{Agent: names[0], Local: tc.local[names[0]], Cluster: tc.cl, PeerTimeout: 200 * time.Millisecond})
	return tc
}

func genKey(t *testing.T) string {
	t.Helper()
	k, err := gossip.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func agentResults(resp *pb.KeyringResponse) map[string]*pb.KeyringAgentResult {
	m := map[string]*pb.KeyringAgentResult{}
	for _, r := range resp.GetAgents() {
		m[r.Agent] = r
	}
	return m
}

func TestKeyringRotationReachesEveryAliveAgent(t *testing.T) {
	oldKey, newKey := genKey(t), genKey(t)
	tc := newKeyringTestCluster(t, oldKey, "a", "b", "c", "d")
	tc.cl.members[3].Status = gossip.StatusFailed                                              // d is dead: not asked, reported
	tc.cl.members = append(tc.cl.members, gossip.Member{Name: "e", Status: gossip.StatusLeft}) // left for good: neither
	ctx := context.Background()

	for _, step := range []struct {
		call func(context.Context, *pb.KeyringKeyRequest) (*pb.KeyringResponse, error)
		key  string
	}{{tc.svc.Install, newKey}, {tc.svc.Use, newKey}, {tc.svc.Remove, oldKey}} {
		resp, err := step.call(ctx, &pb.KeyringKeyRequest{Key: step.key})
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, r := range resp.Agents {
			names = append(names, r.Agent)
			switch {
			case r.Agent == "d" && (r.Ok || !strings.Contains(r.Error, "not reached: the agent is failed") || !strings.Contains(r.Error, "cannot rejoin")):
				t.Errorf("the failed agent d: ok %v, error %q; want it reported as not reached, and why that matters", r.Ok, r.Error)
			case r.Agent != "d" && (!r.Ok || r.Error != ""):
				t.Errorf("agent %s: ok %v, error %q", r.Agent, r.Ok, r.Error)
			}
		}
		if !slices.Equal(names, []string{"a", "b", "c", "d"}) {
			t.Fatalf("results of agents %v, want a, b, c, d in order", names)
		}
	}
	for _, n := range []string{"a", "b", "c"} {
		if p, all := tc.local[n].Keys(); p != newKey || !slices.Equal(all, []string{newKey}) {
			t.Errorf("%s holds %v (primary %s), want only the new key", n, all, p)
		}
	}
	if tc.local["d"].calls != 0 {
		t.Errorf("the dead agent d was asked %d times", tc.local["d"].calls)
	}

	resp, err := tc.svc.List(ctx, &pb.KeyringListRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Keys) != 1 || resp.Keys[0].Key != newKey || resp.Keys[0].Agents != 3 || resp.Keys[0].Primary != 3 {
		t.Fatalf("List counts %v, want the new key on 3 agents, primary on 3", resp.Keys)
	}
}

func TestKeyringReportsAgentsThatFailOrDoNotAnswer(t *testing.T) {
	oldKey, newKey := genKey(t), genKey(t)
	tc := newKeyringTestCluster(t, oldKey, "a", "b", "c", "d")
	tc.peers["c"].down = true
	tc.peers["d"].hung = true

	// Install succeeds where agents answer and is reported failed where not.
	resp, err := tc.svc.Install(context.Background(), &pb.KeyringKeyRequest{Key: newKey})
	if err != nil {
		t.Fatal(err)
	}
	got := agentResults(resp)
	if len(got) != 4 {
		t.Fatalf("results of %d agents, want 4: %v", len(got), resp.Agents)
	}
	for name, want := range map[string]string{"c": "connection refused", "d": "no answer within 200ms"} {
		if r := got[name]; r.Ok || !strings.Contains(r.Error, want) {
			t.Errorf("agent %s: ok %v, error %q; want a failure saying %q", name, r.Ok, r.Error, want)
		}
	}
	for _, name := range []string{"a", "b"} {
		if !got[name].Ok {
			t.Errorf("install on %s: error %q, want ok", name, got[name].Error)
		}
	}
	for _, r := range resp.Agents {
		if strings.Contains(r.Error, newKey) {
			t.Errorf("agent %s's error holds the whole key: %q", r.Agent, r.Error)
		}
	}
}

// keyringStates returns every agent's primary key and keys.
func (tc *keyringTestCluster) keyringStates() map[string][]string {
	m := map[string][]string{}
	for n, f := range tc.local {
		p, all := f.Keys()
		m[n] = append([]string{p}, all...)
	}
	return m
}

// A key made primary on agents where another lacks it, or removed from
// agents while another still encrypts with it, would cut that agent off
// from gossip beyond the reach of any later keyring call: such a step is
// refused before any agent changes.
func TestKeyringRefusesStepsThatWouldCutAnAgentOff(t *testing.T) {
	oldKey, newKey := genKey(t), genKey(t)
	for _, tt := range []struct {
		name  string
		setup func(tc *keyringTestCluster)
		call  func(tc *keyringTestCluster) (*pb.KeyringResponse, error)
		want  string
	}{{
		name: "use of a key an alive agent lacks",
		setup: func(tc *keyringTestCluster) {
			tc.local["a"].keys = append(tc.local["a"].keys, newKey)
			tc.local["c"].keys = append(tc.local["c"].keys, newKey)
		},
		call: func(tc *keyringTestCluster) (*pb.KeyringResponse, error) {
			return tc.svc.Use(context.Background(), &pb.KeyringKeyRequest{Key: newKey})
		},
		want: "is not installed on b,",
	}, {
		name: "remove of a key an alive agent encrypts with",
		setup: func(tc *keyringTestCluster) {
			for _, n := range []string{"a", "b", "c"} {
				tc.local[n].keys = append(tc.local[n].keys, newKey)
			}
			tc.local["a"].primary, tc.local["b"].primary = newKey, newKey
		},
		call: func(tc *keyringTestCluster) (*pb.KeyringResponse, error) {
			return tc.svc.Remove(context.Background(), &pb.KeyringKeyRequest{Key: oldKey})
		},
		want: "still the primary key of c",
	}, {
		name: "use while an alive agent does not answer",
		setup: func(tc *keyringTestCluster) {
			for _, n := range []string{"a", "b", "c"} {
				tc.local[n].keys = append(tc.local[n].keys, newKey)
			}
			tc.peers["b"].down = true
		},
		call: func(tc *keyringTestCluster) (*pb.KeyringResponse, error) {
			return tc.svc.Use(context.Background(), &pb.KeyringKeyRequest{Key: newKey})
		},
		want: "could not list the keys of every alive agent (b: ",
	}} {
		t.Run(tt.name, func(t *testing.T) {
			tc := newKeyringTestCluster(t, oldKey, "a", "b", "c")
			tt.setup(tc)
			before := tc.keyringStates()
			resp, err := tt.call(tc)
			if !errors.Is(err, apierr.ErrFailedPrecondition) || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), "nothing was changed") {
				t.Fatalf("got %v, %v; want FailedPrecondition saying %q", resp, err, tt.want)
			}
			if strings.Contains(err.Error(), newKey) || strings.Contains(err.Error(), oldKey) {
				t.Errorf("the error holds a whole key: %v", err)
			}
			for n, f := range tc.local {
				if f.calls != 0 {
					t.Errorf("agent %s was changed %d times", n, f.calls)
				}
			}
			if after := tc.keyringStates(); !maps.EqualFunc(before, after, slices.Equal) {
				t.Errorf("keys changed from %v to %v", before, after)
			}
		})
	}
}

// Once every alive agent holds the key, use goes ahead, whatever white
// space surrounds the key in the request.
func TestKeyringUseGoesAheadOnceEveryAgentHoldsTheKey(t *testing.T) {
	oldKey, newKey := genKey(t), genKey(t)
	tc := newKeyringTestCluster(t, oldKey, "a", "b", "c")
	for _, n := range []string{"a", "b", "c"} {
		tc.local[n].keys = append(tc.local[n].keys, newKey)
	}
	resp, err := tc.svc.Use(context.Background(), &pb.KeyringKeyRequest{Key: " " + newKey + "\n"})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range resp.Agents {
		if !r.Ok || tc.local[r.Agent].primary != newKey {
			t.Errorf("use on %s: ok %v, error %q, primary %s", r.Agent, r.Ok, r.Error, gossip.KeyFingerprint(tc.local[r.Agent].primary))
		}
	}
}

func TestKeyringAnswersBeforeTheCallersDeadlineWhenAPeerHangs(t *testing.T) {
	key := genKey(t)
	tc := newKeyringTestCluster(t, key, "a", "b")
	tc.svc.cfg.PeerTimeout = time.Hour
	tc.peers["b"].hung = true
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	resp, err := tc.svc.Install(ctx, &pb.KeyringKeyRequest{Key: genKey(t)})
	if err != nil || ctx.Err() != nil {
		t.Fatalf("Install with a hung peer: %v (caller's context: %v); want an answer in time", err, ctx.Err())
	}
	if r := agentResults(resp)["b"]; r.Ok || !strings.Contains(r.Error, "no answer within") {
		t.Fatalf("hung agent b: ok %v, error %q", r.Ok, r.Error)
	}
}

func TestKeyringListCountsAgentsPerKey(t *testing.T) {
	k1, k2 := genKey(t), genKey(t)
	tc := newKeyringTestCluster(t, k1, "a", "b", "c")
	tc.local["b"].keys = append(tc.local["b"].keys, k2)
	tc.local["c"].primary, tc.local["c"].keys = k2, []string{k2, k1}
	tc.peers["a"].down = true // a answers locally, never through its peer client

	resp, err := tc.svc.List(context.Background(), &pb.KeyringListRequest{})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][2]uint32{k1: {3, 2}, k2: {2, 1}}
	if len(resp.Keys) != 2 {
		t.Fatalf("List counted %d keys, want 2", len(resp.Keys))
	}
	for _, c := range resp.Keys {
		if w := want[c.Key]; c.Agents != w[0] || c.Primary != w[1] {
			t.Errorf("key %s: %d agents, %d primary; want %d, %d", gossip.KeyFingerprint(c.Key), c.Agents, c.Primary, w[0], w[1])
		}
	}
	if r := agentResults(resp)["c"]; r.PrimaryKey != k2 || !slices.Equal(r.Keys, []string{k2, k1}) {
		t.Errorf("c's keys %v, primary %s", r.Keys, r.PrimaryKey)
	}
}

func TestKeyringRefusesBadKeysBeforeAskingAnyAgent(t *testing.T) {
	tc := newKeyringTestCluster(t, genKey(t), "a", "b")
	for _, key := range []string{"", "not base64!", "c2hvcnQ="} {
		for name, call := range map[string]func(context.Context, *pb.KeyringKeyRequest) (*pb.KeyringResponse, error){
			"install": tc.svc.Install, "use": tc.svc.Use, "remove": tc.svc.Remove,
		} {
			_, err := call(context.Background(), &pb.KeyringKeyRequest{Key: key})
			if !errors.Is(err, apierr.ErrInvalidArgument) || !strings.Contains(err.Error(), "key:") {
				t.Errorf("%s %q: %v, want InvalidArgument naming the key", name, key, err)
			}
		}
	}
	for n, f := range tc.local {
		if f.calls != 0 {
			t.Errorf("agent %s was asked %d times", n, f.calls)
		}
	}
}

func TestKeyringPeerServesOnlyAgentsOfTheCluster(t *testing.T) {
	secret := []byte("cluster secret")
	key := genKey(t)
	local := &keyringFake{primary: key, keys: []string{key}}
	svc := NewKeyring(KeyringConfig{Agent: "a", Local: local, Cluster: &keyringClusterFake{}})

	var self atomic.Pointer[string] // the agent's address, once it listens
	addr := grpctest.Serve(t, func(s *grpc.Server) { pb.RegisterKeyringPeerServer(s, svc.Peer()) },
		Interceptors(ServerConfig{Metrics: keyringNoMetrics{}, Proofs: AgentProofs{
			Secret: func() []byte { return secret },
			Self:   func() string { return *self.Load() },
		}})...)
	self.Store(&addr)
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	c := pb.NewKeyringPeerClient(conn)

	_, err = c.Install(context.Background(), &pb.KeyringKeyRequest{Key: genKey(t)})
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("KeyringPeer.Install without the cluster's proof: %v, want PermissionDenied", err)
	}
	if local.calls != 0 {
		t.Fatal("the keyring was changed by a caller that is not an agent")
	}
	method := pb.KeyringPeer_List_FullMethodName
	ctx := metadata.AppendToOutgoingContext(context.Background(), AgentProofKey, AgentProof(secret, method, addr))
	res, err := c.List(ctx, &pb.KeyringListRequest{})
	if err != nil || !res.Ok || res.PrimaryKey != key {
		t.Fatalf("KeyringPeer.List from an agent: %v, %v", res, err)
	}
}

type keyringNoMetrics struct{}

func (keyringNoMetrics) ObserveRPC(string, codes.Code, time.Time) {}
func (keyringNoMetrics) ObservePanic(string)                      {}
func (keyringNoMetrics) WatchStarted()                            {}
func (keyringNoMetrics) WatchEnded()                              {}
func (keyringNoMetrics) WatchTooSlow()                            {}
func (keyringNoMetrics) StreamRefused(string)                     {}

// TestKeyringWaitsForAnAgentStillJoining: an agent that has not yet
// received the cluster's secret answers the agent-to-agent API with
// Unavailable, not PermissionDenied, and a keyring rotation asks it again
// until it can answer, within the call's time.
func TestKeyringWaitsForAnAgentStillJoining(t *testing.T) {
	key := genKey(t)
	secret := []byte("cluster secret")
	var joined atomic.Bool
	joining := NewKeyring(KeyringConfig{Agent: "b", Local: &keyringFake{primary: key, keys: []string{key}}, Cluster: &keyringClusterFake{}})
	var self atomic.Pointer[string] // the agent's address, once it listens
	addr := grpctest.Serve(t, func(s *grpc.Server) { pb.RegisterKeyringPeerServer(s, joining.Peer()) },
		Interceptors(ServerConfig{Metrics: keyringNoMetrics{}, Proofs: AgentProofs{
			Secret: func() []byte {
				if joined.Load() {
					return secret
				}
				return nil
			},
			Self: func() string { return *self.Load() },
		}})...)
	self.Store(&addr)
	withProof := func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		ctx = metadata.AppendToOutgoingContext(ctx, AgentProofKey, AgentProof(secret, method, addr))
		return invoker(ctx, method, req, reply, cc, opts...)
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithUnaryInterceptor(withProof))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })

	_, err = pb.NewKeyringPeerClient(conn).List(context.Background(), &pb.KeyringListRequest{})
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("KeyringPeer.List on an agent without the secret: %v, want Unavailable", err)
	}

	cl := &keyringClusterFake{
		members: []gossip.Member{{Name: "b", Status: gossip.StatusAlive, Meta: gossip.Meta{Name: "b", GRPCAddr: addr}}},
		peers:   map[string]*keyringPeerFake{},
	}
	svc := NewKeyring(KeyringConfig{Agent: "a", Local: &keyringFake{primary: key, keys: []string{key}}, Cluster: keyringConn{cl, pb.NewKeyringPeerClient(conn)}, PeerTimeout: 10 * time.Second})
	time.AfterFunc(300*time.Millisecond, func() { joined.Store(true) })
	resp, err := svc.Install(context.Background(), &pb.KeyringKeyRequest{Key: genKey(t)})
	if err != nil {
		t.Fatal(err)
	}
	if r := agentResults(resp)["b"]; r == nil || !r.Ok {
		t.Fatalf("install on the joining agent: %v, want ok once it has the secret", r)
	}
}

// keyringConn is a cluster whose every agent is reached through one
// connection.
type keyringConn struct {
	*keyringClusterFake
	c pb.KeyringPeerClient
}

func (k keyringConn) KeyringPeer(string) (pb.KeyringPeerClient, error) { return k.c, nil }
