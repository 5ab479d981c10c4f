package node_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/zrpcio/zrpc/api/apierr"
	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/client"
	"github.com/zrpcio/zrpc/node"
	"github.com/zrpcio/zrpc/raftstore"
	"github.com/zrpcio/zrpc/snapshot"
	"github.com/zrpcio/zrpc/testcluster"
)

// The round trip's cluster: instances of manyServices services and blobs, of which
// shardedBlobs are sharded across the agents and the rest small enough to
// be stored inline in their metadata. By default it is 20,000 instances
// and 50 blobs, megabytes and many chunks, which a loaded machine fills in
// seconds; with ZRPC_SNAPSHOT_BIG=1 (make snapshot-big) it is the full
// size, 100,000 instances and 1,000 blobs, which takes minutes under
// -race on a loaded 2-core machine.
const (
	shardedBlobs = 3
	// manyServices is how many services the instances are spread over,
	// 100 each at full size.
	manyServices = 1000
)

func roundTripSize() (instances, blobs int) {
	if os.Getenv("ZRPC_SNAPSHOT_BIG") != "" {
		return 100000, 1000
	}
	return 20000, 50
}

// parallel runs do(i) for i in [0, n) on workers goroutines and fails t
// with the first error.
func parallel(t testing.TB, n, workers int, do func(i int) error) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += workers {
				if err := do(i); err != nil {
					errs <- fmt.Errorf("item %d: %w", i, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		t.Fatal(err)
	}
}

// manyInstance is instance i of registerMany and fillRegistry.
func manyInstance(i int) *pb.Instance {
	return &pb.Instance{Service: fmt.Sprintf("svc%03d.rpc", i%manyServices), Id: fmt.Sprint("i", i),
		Address: fmt.Sprintf("10.%d.%d.%d:8080", i>>16, (i>>8)&255, i&255), Zone: "z1", Tags: []string{"v2"}}
}

// registerMany registers n instances of manyServices services through c's API.
func registerMany(t *testing.T, c *testcluster.Cluster, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	parallel(t, n, 32, func(i int) error {
		_, err := c.Registry(i%c.Size()).Register(ctx, &pb.RegisterRequest{Instance: manyInstance(i)})
		return err
	})
}

// fillRegistry registers n instances of manyServices services, owned by the leader,
// by applying register entries straight through the leader's Raft store:
// the API's per-request cost would make 100,000 take minutes on a loaded
// machine, and what is under test is the state, not how it got there.
func fillRegistry(t testing.TB, c *testcluster.Cluster, n int) {
	t.Helper()
	leader := c.Leader()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	parallel(t, n, 256, func(i int) error {
		inst := manyInstance(i)
		inst.Node, inst.Health, inst.Weight = leader.Name(), pb.Health_PASSING, 100
		_, err := leader.Store().Apply(ctx, &pb.Command{Kind: &pb.Command_Register{Register: inst}})
		return err
	})
}

// putBlobs stores n blobs through the API: the first
// shardedBlobs large enough to be sharded across the agents, the rest a
// few bytes each.
func putBlobs(t *testing.T, c *client.Client, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	parallel(t, n, 16, func(i int) error {
		size := 100 + i
		if i < shardedBlobs {
			size = (i + 1) * 200 << 10
		}
		data := bytes.Repeat([]byte{byte(i + 1)}, size)
		_, err := c.PutBlob(ctx, fmt.Sprintf("models/m%04d", i), bytes.NewReader(data), client.PutOptions{Size: int64(size)})
		return err
	})
}

func newClient(t testing.TB, addr string) *client.Client {
	t.Helper()
	c, err := client.New(client.Config{Endpoints: []string{addr}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// registryOf is what a replica holds that a restore must carry over.
type registryOf struct {
	instances []*pb.Instance
	blobs     []*pb.Blob
}

func replicaState(f *raftstore.FSM) registryOf {
	insts, _ := f.AllInstances()
	blobs, _ := f.Blobs("")
	return registryOf{insts, blobs}
}

// withoutHealth is r with each instance's health, and the revision its
// changes bump, cleared: an agent that gossip briefly suspected on a
// loaded machine has its instances' health flap, which is not what a
// refused restore would change.
func (r registryOf) withoutHealth() registryOf {
	out := registryOf{blobs: r.blobs}
	for _, in := range r.instances {
		c := proto.Clone(in).(*pb.Instance)
		c.Health, c.HealthOutput, c.HealthSince, c.ModRevision = 0, "", 0, 0
		out.instances = append(out.instances, c)
	}
	return out
}

func (r registryOf) diff(o registryOf) string {
	if len(r.instances) != len(o.instances) || len(r.blobs) != len(o.blobs) {
		return fmt.Sprintf("%d instances and %d blobs, want %d and %d", len(o.instances), len(o.blobs), len(r.instances), len(r.blobs))
	}
	for i := range r.instances {
		if !proto.Equal(r.instances[i], o.instances[i]) {
			return fmt.Sprintf("instance %d is %v, want %v", i, o.instances[i], r.instances[i])
		}
	}
	for i := range r.blobs {
		if !proto.Equal(r.blobs[i], o.blobs[i]) {
			return fmt.Sprintf("blob %d is %v, want %v", i, o.blobs[i], r.blobs[i])
		}
	}
	return ""
}

// saveFile saves a snapshot of the cluster behind c into a verified file.
func saveFile(t testing.TB, c *client.Client, path string) *snapshot.Info {
	t.Helper()
	var info *snapshot.Info
	err := snapshot.WriteFile(path,
		func(w io.Writer) error {
			_, err := c.SaveSnapshot(context.Background(), w, client.SnapshotOptions{})
			return err
		},
		func(tmp string) (err error) { info, err = snapshot.InspectFile(tmp); return err })
	if err != nil {
		t.Fatalf("save snapshot: %v", err)
	}
	return info
}

// patientRaft gives the round trip's clusters Raft timers that ride out a
// loaded machine: a restore that loses its leader half way fails (and is
// run again by the operator), which would make the test fail for the
// machine's load rather than for zrpc.
var patientRaft = testcluster.WithConfig(func(c *node.Config) {
	c.RaftHeartbeatTimeout, c.RaftElectionTimeout, c.RaftLeaderLease = time.Second, time.Second, time.Second
})

// TestSnapshotRoundTripBetweenClusters: a snapshot saved from cluster A
// and restored into a fresh cluster B gives every agent of B exactly A's
// instances and blob metadata, at a revision past B's own, which an open
// watch receives as a new state; damaged files are refused, leaving B as
// it was.
func TestSnapshotRoundTripBetweenClusters(t *testing.T) {
	snapshotInstances, snapshotBlobs := roundTripSize()
	a := testcluster.New(t, 3, patientRaft)
	start := time.Now()
	fillRegistry(t, a, snapshotInstances)
	t.Logf("registered %d instances in %v", snapshotInstances, time.Since(start))
	ca := newClient(t, a.GRPCAddr(1)) // a follower relays the leader's snapshot, most likely
	start = time.Now()
	putBlobs(t, ca, snapshotBlobs)
	t.Logf("stored %d blobs in %v", snapshotBlobs, time.Since(start))
	leaderA := a.Leader().Store().FSM()
	want := replicaState(leaderA)

	path := filepath.Join(t.TempDir(), "a.snap")
	info := saveFile(t, ca, path)
	if info.Instances != uint64(snapshotInstances) || info.Services != manyServices || info.Blobs != uint64(snapshotBlobs) {
		t.Fatalf("snapshot holds %d instances of %d services and %d blobs, want %d of %d and %d",
			info.Instances, info.Services, info.Blobs, snapshotInstances, manyServices, snapshotBlobs)
	}
	good, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}

	b := testcluster.New(t, 3, patientRaft)
	registerMany(t, b, 50) // B's own instances, which the restore replaces
	cb := newClient(t, b.GRPCAddr(2))
	bID := b.Leader().Store().FSM().ClusterID()
	before := replicaState(b.Leader().Store().FSM())

	for _, c := range damagedSnapshots(good) {
		_, err := cb.RestoreSnapshot(ctxT(t), bytes.NewReader(c.file), client.SnapshotOptions{})
		if !errors.Is(err, apierr.ErrInvalidArgument) || !strings.Contains(err.Error(), c.text) {
			t.Errorf("restore of a %s file: %v; want InvalidArgument mentioning %q", c.name, err, c.text)
		}
	}
	for i := range b.Size() {
		if d := before.withoutHealth().diff(replicaState(b.Node(i).Store().FSM()).withoutHealth()); d != "" {
			t.Fatalf("a refused restore changed agent %d of B: %s", i, d)
		}
	}

	watchFrom := b.Node(1).Store().FSM().Revision()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	watch, err := b.Registry(1).Watch(ctx, &pb.WatchRequest{FromRevision: watchFrom})
	if err != nil {
		t.Fatal(err)
	}

	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	resp, err := cb.RestoreSnapshot(ctxT(t), f, client.SnapshotOptions{})
	if err != nil {
		t.Fatalf("restore: %v", err)
	}
	rev := resp.GetHeader().GetRevision()
	if rev <= watchFrom || resp.FileRevision != info.Revision {
		t.Fatalf("restore answered revision %d (file revision %d); want past B's %d, file revision %d", rev, resp.FileRevision, watchFrom, info.Revision)
	}
	b.WaitFor(time.Minute, "every agent of B to apply the restore", func() bool {
		for i := range b.Size() {
			if b.Node(i).Store().FSM().Revision() < rev {
				return false
			}
		}
		return true
	})
	for i := range b.Size() {
		fsm := b.Node(i).Store().FSM()
		if d := want.diff(replicaState(fsm)); d != "" {
			t.Fatalf("agent %s of B after the restore: %s", b.Name(i), d)
		}
		if fsm.ClusterID() != bID {
			t.Fatalf("agent %s of B has cluster id %q after the restore, want B's own %q", b.Name(i), fsm.ClusterID(), bID)
		}
	}
	checkWatchSeesRestore(t, watch, rev, snapshotInstances)
}

// checkWatchSeesRestore reads the watch, opened before the restore, until
// a snapshot arrives, and checks that it is at rev or later and holds n
// instances.
func checkWatchSeesRestore(t *testing.T, watch pb.Registry_WatchClient, rev uint64, n int) {
	t.Helper()
	got := -1
	for {
		resp, err := watch.Recv()
		if err != nil {
			t.Fatalf("the watch ended before it saw the restored state: %v", err)
		}
		if resp.Snapshot {
			if resp.Header.Revision < rev {
				t.Fatalf("the watch's snapshot is at revision %d, before the restore's %d", resp.Header.Revision, rev)
			}
			got = 0
		}
		if got < 0 {
			continue
		}
		got += len(resp.Events)
		if !resp.More {
			break
		}
	}
	if got != n {
		t.Fatalf("the watch's snapshot after the restore held %d instances, want %d", got, n)
	}
}

type damagedSnapshot struct {
	name string
	file []byte
	text string // the error names this
}

// damagedSnapshots are copies of good damaged in the ways a file is.
func damagedSnapshots(good []byte) []damagedSnapshot {
	flipped := bytes.Clone(good)
	flipped[len(flipped)/2] ^= 0x40
	magic := bytes.Clone(good)
	copy(magic, "ZRPCSNAQ")
	future := bytes.Clone(good)
	future[9] = snapshot.FormatVersion + 1
	return []damagedSnapshot{
		{"truncated", good[:len(good)/3], "truncated"},
		{"flipped byte", flipped, "SHA-256"},
		{"wrong magic", magic, "not a zrpc snapshot"},
		{"future format", future, "unsupported snapshot format"},
	}
}

// TestSnapshotRestoreLeavesMissingShardsToRepair: a restore brings blob
// metadata back, not bytes. Restored into the cluster it came from, a
// snapshot brings back a blob deleted since, whose shards are gone: the
// scrubbers report them and the blob is unreadable (blob stat says so);
// and a blob that lost one shard file meanwhile has it rebuilt by repair
// and reads back whole.
func TestSnapshotRestoreLeavesMissingShardsToRepair(t *testing.T) {
	c := testcluster.New(t, 3, patientRaft)
	cl := newClient(t, c.GRPCAddr(0))
	data := bytes.Repeat([]byte("zrpc snapshot "), 30<<10) // 420 KiB: 2+1 shards, one per agent
	for _, name := range []string{"models/deleted", "models/kept"} {
		if _, err := cl.PutBlob(ctxT(t), name, bytes.NewReader(data), client.PutOptions{Size: int64(len(data))}); err != nil {
			t.Fatal(err)
		}
	}
	path := filepath.Join(t.TempDir(), "x.snap")
	saveFile(t, cl, path)

	if _, err := cl.DeleteBlob(ctxT(t), "models/deleted"); err != nil {
		t.Fatal(err)
	}
	c.WaitFor(time.Minute, "the deleted blob's shard files to go", func() bool {
		return len(c.ShardFiles(0)) == 1 && len(c.ShardFiles(1)) == 1 && len(c.ShardFiles(2)) == 1
	})
	lost := c.ShardFiles(0)[0] // the kept blob's shard on agent 0
	if err := os.Remove(lost); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := cl.RestoreSnapshot(ctxT(t), f, client.SnapshotOptions{}); err != nil {
		t.Fatalf("restore: %v", err)
	}
	c.WaitFor(time.Minute, "every agent to have the deleted blob back", func() bool {
		for i := range c.Size() {
			if c.Node(i).Store().FSM().Blob("models/deleted") == nil {
				return false
			}
		}
		return true
	})
	reported := 0
	for i := range c.Size() {
		reported += c.Node(i).Blobs().ScrubOnce(ctxT(t), 0)
	}
	if reported != 4 {
		t.Fatalf("the scrubbers reported %d missing shards, want 4 (the deleted blob's 3, the kept blob's 1)", reported)
	}
	c.WaitFor(time.Minute, "repair to rebuild the kept blob's lost shard", func() bool {
		_, err := os.Stat(lost)
		return err == nil
	})
	r, err := cl.GetBlob(ctxT(t), "models/kept", client.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	got, err := io.ReadAll(r)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("the kept blob reads back %d bytes (%v), want its %d", len(got), err, len(data))
	}
	c.WaitFor(time.Minute, "blob stat to call the deleted blob unreadable", func() bool {
		st, err := cl.StatBlob(ctxT(t), "models/deleted")
		return err == nil && st.Health == "unreadable"
	})
}

// TestSnapshotRestoreDropsSessionsNoProcessHolds: a session in a restored
// snapshot whose process is gone (its stream ended after the save) is
// destroyed with its instances by the owning agent's session scan, as
// after an agent restart.
func TestSnapshotRestoreDropsSessionsNoProcessHolds(t *testing.T) {
	c := testcluster.New(t, 1)
	cl := newClient(t, c.GRPCAddr(0))
	sess, err := cl.Session(ctxT(t), "billing")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sess.Register(ctxT(t), &pb.Instance{Service: "billing.rpc", Id: "b1", Address: "127.0.0.1:9100"}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := cl.Register(ctxT(t), &pb.Instance{Service: "static.rpc", Id: "s1", Address: "127.0.0.1:9200"}); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "s.snap")
	if info := saveFile(t, cl, path); info.Sessions != 1 || info.Instances != 2 {
		t.Fatalf("snapshot holds %d sessions and %d instances, want 1 and 2", info.Sessions, info.Instances)
	}
	sess.Close()
	if _, err := cl.Deregister(ctxT(t), "static.rpc", "s1"); err != nil {
		t.Fatal(err)
	}
	fsm := c.Node(0).Store().FSM()
	c.WaitFor(10*time.Second, "the closed session's instance to go", func() bool { return fsm.Instance("billing.rpc", "b1") == nil })

	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := cl.RestoreSnapshot(ctxT(t), f, client.SnapshotOptions{}); err != nil {
		t.Fatal(err)
	}
	c.WaitFor(10*time.Second, "the restored session nobody holds to be destroyed with its instance", func() bool {
		return len(fsm.Sessions()) == 0 && fsm.Instance("billing.rpc", "b1") == nil
	})
	if fsm.Instance("static.rpc", "s1") == nil {
		t.Fatal("the restore did not bring back the instance deregistered after the save")
	}
}

// TestSnapshotRestoreRefusesAStateOverTheRegistryLimits: a snapshot
// whose instances together pass the restoring cluster's registry limits
// is refused, ResourceExhausted naming the limit, before anything
// changes: restored, it would hold every replica past the memory the
// limits bound.
func TestSnapshotRestoreRefusesAStateOverTheRegistryLimits(t *testing.T) {
	a := testcluster.New(t, 1)
	fillRegistry(t, a, 1000)
	path := filepath.Join(t.TempDir(), "a.snap")
	saveFile(t, newClient(t, a.GRPCAddr(0)), path)

	b := testcluster.New(t, 1, testcluster.WithConfig(func(c *node.Config) { c.MaxRegistryBytes = 64 << 10 }))
	registerMany(t, b, 5)
	before := replicaState(b.Leader().Store().FSM())
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	_, err = newClient(t, b.GRPCAddr(0)).RestoreSnapshot(ctxT(t), f, client.SnapshotOptions{})
	if !errors.Is(err, apierr.ErrQuotaExceeded) || !strings.Contains(err.Error(), "max_registry_bytes") {
		t.Fatalf("restore of 1,000 instances into a registry limited to 64 KiB: %v; want ResourceExhausted naming max_registry_bytes", err)
	}
	if d := before.withoutHealth().diff(replicaState(b.Leader().Store().FSM()).withoutHealth()); d != "" {
		t.Fatalf("the refused restore changed the registry: %s", d)
	}
}
