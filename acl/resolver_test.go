package acl

import (
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/internal/testwait"
)

type fakeStore struct {
	tokens   map[string]*pb.ACLToken
	policies map[string]*pb.ACLPolicy
}

func (s fakeStore) ACLTokenByHash(h []byte) *pb.ACLToken { return s.tokens[string(h)] }
func (s fakeStore) ACLPolicy(name string) *pb.ACLPolicy  { return s.policies[name] }

func TestReplicaResolverAuthorizesByTheTokensPolicies(t *testing.T) {
	user, mgmt := HashSecret("u"), HashSecret("m")
	store := fakeStore{
		tokens: map[string]*pb.ACLToken{
			string(user[:]): {AccessorId: "a1", Policies: []string{"svc-user", "gone"}},
			string(mgmt[:]): {AccessorId: "a2", Policies: []string{ManagementPolicyName}},
		},
		policies: map[string]*pb.ACLPolicy{"svc-user": {Name: "svc-user", Rules: `service "user." { write }`, ModifyRevision: 3}},
	}
	r := NewReplicaResolver(store)
	a, id, err := r.Resolve(user)
	if err != nil || id != "a1" {
		t.Fatalf("Resolve(user) = %q, %v", id, err)
	}
	if a.Allow(Service, "user.rpc", Write) != nil || a.Allow(Service, "order.rpc", Write) == nil {
		t.Fatal("user token: want user.* writable, order.rpc not")
	}
	a, _, _ = r.Resolve(mgmt)
	if a.Allow(ACL, "", Write) != nil {
		t.Fatal("management token refused acl:write")
	}
	if _, _, err := r.Resolve(HashSecret("nobody")); !errors.Is(err, ErrTokenNotFound) {
		t.Fatalf("unknown secret: %v", err)
	}
}

// TestReplicaResolverFollowsPolicyChanges: a token's compiled rules are
// reused while its policies are unchanged, and recompiled when one of
// them changes, appears or goes.
func TestReplicaResolverFollowsPolicyChanges(t *testing.T) {
	user := HashSecret("u")
	store := fakeStore{
		tokens:   map[string]*pb.ACLToken{string(user[:]): {AccessorId: "a1", Policies: []string{"svc", "extra"}, CreateRevision: 2}},
		policies: map[string]*pb.ACLPolicy{"svc": {Name: "svc", Rules: `service "user." { write }`, ModifyRevision: 3}},
	}
	r := NewReplicaResolver(store)
	resolve := func() Authorizer {
		t.Helper()
		a, _, err := r.Resolve(user)
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	first := resolve()
	if again := resolve(); again != first {
		t.Error("an unchanged token was compiled again")
	}
	store.policies["svc"] = &pb.ACLPolicy{Name: "svc", Rules: `service "order." { write }`, ModifyRevision: 5}
	a := resolve()
	if a.Allow(Service, "order.rpc", Write) != nil || a.Allow(Service, "user.rpc", Write) == nil {
		t.Fatal("after the policy changed: want order.* writable and user.* not")
	}
	store.policies["extra"] = &pb.ACLPolicy{Name: "extra", Rules: `blob "models/" { read }`, ModifyRevision: 6}
	if resolve().Allow(Blob, "models/a", Read) != nil {
		t.Fatal("a policy created after the token was resolved grants nothing")
	}
	delete(store.policies, "extra")
	if resolve().Allow(Blob, "models/a", Read) == nil {
		t.Fatal("a removed policy still grants")
	}
}

// TestReplicaResolverFollowsARestoredState: a snapshot restored from
// another cluster replaces the tokens and policies with its own, whose
// names and revisions may be those of other rules here. A token resolves
// to the rules its policies hold now, whether it was resolved before the
// restore or only its policy was.
func TestReplicaResolverFollowsARestoredState(t *testing.T) {
	resolved, fresh := HashSecret("resolved"), HashSecret("fresh")
	store := fakeStore{
		tokens: map[string]*pb.ACLToken{
			string(resolved[:]): {AccessorId: "a1", Policies: []string{"svc"}, CreateRevision: 4},
			string(fresh[:]):    {AccessorId: "a2", Policies: []string{"svc"}, CreateRevision: 5},
		},
		policies: map[string]*pb.ACLPolicy{"svc": {Name: "svc", Rules: `service "user." { write }`, CreateRevision: 3, ModifyRevision: 3}},
	}
	r := NewReplicaResolver(store)
	if a, _, err := r.Resolve(resolved); err != nil || a.Allow(Service, "user.rpc", Write) != nil {
		t.Fatalf("before the restore: %v; want user.* writable", err)
	}

	// The restored file's policy svc, at the same revisions, grants
	// order.* only; its tokens are at the same revisions too.
	store.policies["svc"] = &pb.ACLPolicy{Name: "svc", Rules: `service "order." { write }`, CreateRevision: 3, ModifyRevision: 3}
	for name, hash := range map[string][32]byte{"the token resolved before": resolved, "a token first resolved after": fresh} {
		a, _, err := r.Resolve(hash)
		if err != nil {
			t.Fatalf("%s the restore: %v", name, err)
		}
		if a.Allow(Service, "user.rpc", Write) == nil {
			t.Errorf("%s the restore keeps user.* writable, which the restored policy no longer grants", name)
		}
		if err := a.Allow(Service, "order.rpc", Write); err != nil {
			t.Errorf("%s the restore: %v; want order.* writable, as the restored policy grants", name, err)
		}
	}
}

// bigPolicyStore holds policies of 64 KiB of rules each and tokens that
// each name all of them: what a token holder with acl:write may store.
func bigPolicyStore(tokens, policies int) (fakeStore, [][32]byte) {
	store := fakeStore{tokens: map[string]*pb.ACLToken{}, policies: map[string]*pb.ACLPolicy{}}
	var names []string
	for p := range policies {
		var b strings.Builder
		for i := 0; b.Len()+24 < maxRulesBytes; i++ {
			fmt.Fprintf(&b, "blob\"%d/%x\"{read}", p, i)
		}
		name := fmt.Sprintf("big-%d", p)
		store.policies[name] = &pb.ACLPolicy{Name: name, Rules: b.String()}
		names = append(names, name)
	}
	var hashes [][32]byte
	for i := range tokens {
		h := HashSecret(fmt.Sprintf("secret-%d", i))
		store.tokens[string(h[:])] = &pb.ACLToken{AccessorId: fmt.Sprintf("a%d", i), Policies: names}
		hashes = append(hashes, h)
	}
	return store, hashes
}

// TestReplicaResolverBoundsTheMemoryOfCompiledTokens: tokens naming many
// large policies compile to many rules each; the resolver keeps what its
// budget holds, not every token it resolved.
func TestReplicaResolverBoundsTheMemoryOfCompiledTokens(t *testing.T) {
	store, hashes := bigPolicyStore(40, 32)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	r := NewReplicaResolver(store)
	for _, h := range hashes {
		a, _, err := r.Resolve(h)
		if err != nil {
			t.Fatal(err)
		}
		if err := a.Allow(Blob, "3/1f", Read); err != nil {
			t.Fatal(err)
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	runtime.KeepAlive(r)
	// The compiled tokens' budget (64 MiB), the parsed policies' (16
	// MiB) and some room for what the test's own calls left.
	const limit = 96 << 20
	grew := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	t.Logf("the resolver holds %d MiB", grew>>20)
	if grew > limit {
		t.Fatalf("the resolver holds %d MiB after resolving %d tokens of 32 policies of 64 KiB, want at most %d MiB",
			grew>>20, len(hashes), limit>>20)
	}
}

// TestLRUEvictsTheLeastRecentlyUsedPastItsBounds: the caches keep what
// was used last, within their entries and bytes.
func TestLRUEvictsTheLeastRecentlyUsedPastItsBounds(t *testing.T) {
	c := newLRU[string, int](3, 100)
	c.put("a", 1, 10)
	c.put("b", 2, 10)
	c.put("c", 3, 10)
	c.get("a")
	c.put("d", 4, 10) // four entries: b, the least recently used, goes
	if _, ok := c.get("b"); ok {
		t.Error("b kept past the entry bound")
	}
	for _, k := range []string{"a", "c", "d"} {
		if _, ok := c.get(k); !ok {
			t.Errorf("%s evicted, want b evicted", k)
		}
	}
	c.put("e", 5, 75) // 105 bytes: a, now the least recently used, goes
	if _, ok := c.get("a"); ok || c.bytes > 100 || c.order.Len() != len(c.byKey) {
		t.Errorf("after putting 75 bytes: a kept %v, %d bytes in %d entries (%d keys), want a gone and at most 100 bytes", ok, c.bytes, c.order.Len(), len(c.byKey))
	}
	c.put("huge", 6, 101)
	if _, ok := c.get("huge"); ok {
		t.Error("a value over the byte bound was kept")
	}
	c.put("c", 7, 5) // replaced: its old size no longer counts
	if v, _ := c.get("c"); v != 7 || c.bytes != 5+10+75 {
		t.Errorf("after replacing c: c = %d, %d bytes; want 7 and 90", v, c.bytes)
	}
}

// TestReplicaResolverKeepsPoliciesOverTodaysBounds: a stored policy
// written where the rule count was not bounded still grants.
func TestReplicaResolverKeepsPoliciesOverTodaysBounds(t *testing.T) {
	h := HashSecret("u")
	store := fakeStore{
		tokens:   map[string]*pb.ACLToken{string(h[:]): {AccessorId: "a1", Policies: []string{"many"}}},
		policies: map[string]*pb.ACLPolicy{"many": {Name: "many", Rules: strings.Repeat(`blob "a" { read } `, maxRules) + `service "user." { write }`}},
	}
	a, _, err := NewReplicaResolver(store).Resolve(h)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Allow(Service, "user.rpc", Write); err != nil {
		t.Fatal(err)
	}
}

// gatedStore is a fakeStore whose token lookups wait until the test
// opens its gate, so that calls miss the resolver's cache together.
type gatedStore struct {
	fakeStore
	arrived atomic.Int64
	gate    chan struct{}
}

func (s *gatedStore) ACLTokenByHash(h []byte) *pb.ACLToken {
	s.arrived.Add(1)
	<-s.gate
	return s.fakeStore.ACLTokenByHash(h)
}

// resolveTogether resolves hash from calls goroutines that all look the
// token up before any of them goes on, and returns what each got.
func resolveTogether(t *testing.T, store *gatedStore, r Resolver, hash [32]byte, calls int) ([]Authorizer, []error) {
	t.Helper()
	auths, errs := make([]Authorizer, calls), make([]error, calls)
	var wg sync.WaitGroup
	for i := range calls {
		wg.Go(func() { auths[i], _, errs[i] = r.Resolve(hash) })
	}
	testwait.For(t, 10*time.Second, fmt.Sprintf("%d calls to look the token up", calls), func() bool { return store.arrived.Load() == int64(calls) })
	close(store.gate)
	wg.Wait()
	return auths, errs
}

// TestReplicaResolverCompilesConcurrentMissesOnce: calls that arrive
// together with a token not yet cached share one compile of it.
func TestReplicaResolverCompilesConcurrentMissesOnce(t *testing.T) {
	big, hashes := bigPolicyStore(1, 32)
	store := &gatedStore{fakeStore: big, gate: make(chan struct{})}
	r := NewReplicaResolver(store)
	auths, errs := resolveTogether(t, store, r, hashes[0], 8)
	for i := range auths {
		if errs[i] != nil {
			t.Fatalf("call %d: %v", i, errs[i])
		}
		if auths[i] != auths[0] {
			t.Fatalf("calls 0 and %d got authorizers compiled apart, want one compile for all", i)
		}
	}
	if n := len(r.(*replicaResolver).flights); n != 0 {
		t.Fatalf("%d compiles still registered after every call returned", n)
	}
}

// TestReplicaResolverCachesAFailedCompile: calls that share a compile
// that fails all get its error, and so do later calls, without compiling
// the token again (a stranger repeating a token whose policy this agent
// cannot parse would have it parsed each time); once the policy is fixed,
// the token is compiled again.
func TestReplicaResolverCachesAFailedCompile(t *testing.T) {
	h := HashSecret("u")
	store := &gatedStore{gate: make(chan struct{}), fakeStore: fakeStore{
		tokens:   map[string]*pb.ACLToken{string(h[:]): {AccessorId: "a1", Policies: []string{"bad"}}},
		policies: map[string]*pb.ACLPolicy{"bad": {Name: "bad", Rules: `service "user." { sudo }`}},
	}}
	r := NewReplicaResolver(store)
	_, errs := resolveTogether(t, store, r, h, 8)
	for i, err := range errs {
		if err == nil || !strings.Contains(err.Error(), "stored policy bad") {
			t.Fatalf("call %d: %v, want the stored policy's parse error", i, err)
		}
	}
	if n := len(r.(*replicaResolver).flights); n != 0 {
		t.Fatalf("%d failed compiles still registered", n)
	}
	for i := range 100 {
		if _, _, err := r.Resolve(h); err == nil || !strings.Contains(err.Error(), "stored policy bad") {
			t.Fatalf("call %d after the failed compile: %v, want the stored policy's parse error", i, err)
		}
	}
	if n := r.(*replicaResolver).compiles.Load(); n != 1 {
		t.Fatalf("108 calls with a token whose policy fails to parse compiled it %d times, want once", n)
	}
	store.policies["bad"] = &pb.ACLPolicy{Name: "bad", Rules: `service "user." { write }`}
	a, _, err := r.Resolve(h)
	if err != nil || a.Allow(Service, "user.rpc", Write) != nil {
		t.Fatalf("after the policy was fixed: %v; want user.* writable", err)
	}
	if n := r.(*replicaResolver).compiles.Load(); n != 2 {
		t.Fatalf("the token was compiled %d times in all, want twice: once more after its policy was fixed", n)
	}
}
