package raftstore

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"runtime"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/zrpcio/zrpc/api/apierr"
	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/snapshot"
)

// restoreShape is a snapshot made of n records of one kind: the many
// short unique records whose heap a restore must bound, and instances
// and blobs for comparison.
type restoreShape struct {
	name string
	// write writes the stream's header (at revision 5) and n records.
	write func(w io.Writer, n int) error
}

// oneKind is the shape of n records rec(i) counted in the header by count.
func oneKind(name string, count func(h *pb.SnapshotHeader, n uint64), rec func(i int) proto.Message) restoreShape {
	return restoreShape{name, func(w io.Writer, n int) error {
		hdr := &pb.SnapshotHeader{Revision: 5}
		count(hdr, uint64(n))
		sw := snapshot.NewStateWriter(w, hdr)
		for i := range n {
			sw.Write(rec(i))
		}
		return sw.Close()
	}}
}

var restoreShapes = []restoreShape{
	// The shortest unique names and ids: the most records per byte.
	oneKind("nodes", func(h *pb.SnapshotHeader, n uint64) { h.Nodes = n },
		func(i int) proto.Message { return &pb.Node{Name: fmt.Sprintf("%x", i)} }),
	oneKind("sessions", func(h *pb.SnapshotHeader, n uint64) { h.Sessions = n },
		func(i int) proto.Message { return &pb.Session{Id: fmt.Sprintf("%x", i), Node: "n1"} }),
	oneKind("requests", func(h *pb.SnapshotHeader, n uint64) { h.Requests = n },
		func(i int) proto.Message { return &pb.RequestRecord{Id: fmt.Sprintf("%x", i), Revision: 1} }),
	oneKind("tokens", func(h *pb.SnapshotHeader, n uint64) { h.AclTokens = n },
		func(i int) proto.Message {
			hash := sha256.Sum256(fmt.Append(nil, i))
			return &pb.ACLToken{AccessorId: fmt.Sprintf("%x", i), SecretHash: hash[:]}
		}),
	oneKind("policies", func(h *pb.SnapshotHeader, n uint64) { h.AclPolicies = n },
		func(i int) proto.Message { return &pb.ACLPolicy{Name: fmt.Sprintf("%x", i)} }),
	oneKind("pending blobs", func(h *pb.SnapshotHeader, n uint64) { h.PendingBlobs = n },
		func(i int) proto.Message { return &pb.BlobPending{Id: fmt.Sprintf("%x", i), Node: "n1"} }),
	oneKind("instances", func(h *pb.SnapshotHeader, n uint64) { h.Instances = n },
		func(i int) proto.Message {
			inst := benchInstance(fmt.Sprintf("svc%03d.rpc", i%100), int64(i))
			inst.CreateRevision, inst.ModRevision = 1, 1
			return inst
		}),
	oneKind("small instances", func(h *pb.SnapshotHeader, n uint64) { h.Instances = n },
		func(i int) proto.Message {
			return &pb.Instance{Service: "s", Id: fmt.Sprintf("%x", i), CreateRevision: 1, ModRevision: 1}
		}),
	{"blobs", func(w io.Writer, n int) error {
		// Blobs of one block each, on one agent: one short record each
		// for the blob and for its block.
		sw := snapshot.NewStateWriter(w, &pb.SnapshotHeader{Revision: 5, Blobs: uint64(n / 2)})
		for i := range n / 2 {
			sw.WriteBlob(&pb.Blob{Name: fmt.Sprintf("%x", i), Id: fmt.Sprintf("%x", i), Size: 1, DataShards: 1,
				Nodes: []string{"n1"}, Blocks: []*pb.BlobBlock{{Holders: []uint32{1}, Sums: []uint32{7}, Len: 1}}})
		}
		return sw.Close()
	}},
}

// shapeState is the state stream of n records of shape s.
func shapeState(tb testing.TB, s restoreShape, n int) []byte {
	tb.Helper()
	var state bytes.Buffer
	if err := s.write(&state, n); err != nil {
		tb.Fatal(err)
	}
	return state.Bytes()
}

// heapInUse is the heap in use after a collection.
func heapInUse() int64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapAlloc)
}

// heapAtEOF reads r and, when r has been read to its end, measures the
// heap in use: what a restore holds once it has read the whole snapshot.
// It counts the bytes read.
type heapAtEOF struct {
	r    io.Reader
	read int
	heap int64
}

func (h *heapAtEOF) Read(p []byte) (int, error) {
	n, err := h.r.Read(p)
	h.read += n
	if err == io.EOF && h.heap == 0 {
		h.heap = heapInUse()
	}
	return n, err
}

// measureRestore restores state into f and returns the heap (bytes more
// than before) it held once it had read the whole state, and the heap f
// holds more after it.
func measureRestore(tb testing.TB, f *FSM, state []byte) (reading, kept int64) {
	tb.Helper()
	base := heapInUse()
	r := &heapAtEOF{r: bytes.NewReader(state)}
	if err := f.Restore(io.NopCloser(r)); err != nil {
		tb.Fatal(err)
	}
	kept = heapInUse() - base
	runtime.KeepAlive(f)
	return r.heap - base, kept
}

// estimatedHeap is the heap restoreHeap estimates for state.
func estimatedHeap(tb testing.TB, state []byte) int64 {
	tb.Helper()
	var heap int64
	err := snapshot.ReadState(bytes.NewReader(state), snapshot.StateRecords{
		Node:        func(*pb.Node) error { return nil },
		Session:     func(*pb.Session) error { return nil },
		Instance:    func(*pb.Instance) error { return nil },
		Request:     func(*pb.RequestRecord) error { return nil },
		Blob:        func(*pb.Blob) error { return nil },
		PendingBlob: func(*pb.BlobPending) error { return nil },
		ACLPolicy:   func(*pb.ACLPolicy) error { return nil },
		ACLToken:    func(*pb.ACLToken) error { return nil },
		Sized: func(size int) error {
			heap += restoreHeap(size)
			return nil
		},
	})
	if err != nil {
		tb.Fatal(err)
	}
	return heap
}

// TestRestoreHeapEstimate measures, for snapshots of one kind of record
// each, the heap a restore holds per byte of snapshot once it has read
// the whole snapshot and once it is done, and checks that restoreHeap,
// which RestoreLimits.HeapBytes is counted in, is no less than either
// (and not far more than the heap kept). Run with -v to see the figures.
func TestRestoreHeapEstimate(t *testing.T) {
	if testing.Short() {
		t.Skip("restores snapshots of 100,000 records")
	}
	const n = 100_000
	for _, s := range restoreShapes {
		t.Run(s.name, func(t *testing.T) {
			state := shapeState(t, s, n)
			reading, kept := measureRestore(t, NewFSM(1), state)
			est := estimatedHeap(t, state)
			t.Logf("%d bytes of snapshot: %.1f bytes of heap per byte while reading, %.1f kept, %.1f estimated",
				len(state), float64(reading)/float64(len(state)), float64(kept)/float64(len(state)), float64(est)/float64(len(state)))
			if est < max(reading, kept) {
				t.Errorf("restoreHeap estimates %d bytes of heap, the restore held %d while reading and kept %d", est, reading, kept)
			}
			if est > 4*kept {
				t.Errorf("restoreHeap estimates %d bytes of heap, more than 4 times the %d the restore kept", est, kept)
			}
		})
	}
}

// A snapshot holds the request log's records oldest first, and may hold
// more than the log keeps (a file not written by an agent): a
// restore holds only the newest the log keeps while it reads, not all of
// them until the end.
func TestRestoreHoldsOnlyTheRequestsTheLogKeeps(t *testing.T) {
	const keep, n = 1000, 200_000
	state := shapeState(t, restoreShapes[2], n)
	f := NewFSM(1)
	f.requests = newRequestLog(DedupWindow, keep)
	reading, _ := measureRestore(t, f, state)
	// 200,000 records held take about 20 MiB, 1,000 about 100 KiB.
	if reading > 4<<20 {
		t.Errorf("the restore held %d bytes of heap once it had read %d request records, with %d kept", reading, n, keep)
	}
	recs := f.requests.records()
	if len(recs) != keep || recs[0].Id != fmt.Sprintf("%x", n-keep) || recs[keep-1].Id != fmt.Sprintf("%x", n-1) {
		t.Fatalf("the restored log holds %d records, want the newest %d", len(recs), keep)
	}
}

// replicaState is what a replica holds, for comparing before and after a
// restore that must not change it.
func replicaState(f *FSM) string {
	return fmt.Sprintf("%s\nrequests %v\nacl %v %v %v", fullState(f), f.requests.records(), f.ACLBootstrapped(), f.ACLPolicies(), f.ACLTokens())
}

// brokenAfter reads r and fails once n bytes have been read.
type brokenAfter struct {
	r io.Reader
	n int
}

var errBroken = errors.New("the stream broke")

func (b *brokenAfter) Read(p []byte) (int, error) {
	if b.n <= 0 {
		return 0, errBroken
	}
	n, err := b.r.Read(p[:min(len(p), b.n)])
	b.n -= n
	return n, err
}

// A restore that is refused or whose stream breaks after most of the
// snapshot was loaded leaves the replica as it was: its registry, request
// log and ACL state.
func TestRestoreRefusedOrBrokenHalfwayKeepsTheState(t *testing.T) {
	src := randomFSM(t, 7, 300)
	state := snapshotBytes(t, src)
	for _, c := range []struct {
		name  string
		r     io.Reader
		limit RestoreLimits
		want  error
	}{
		{"stream broken", &brokenAfter{bytes.NewReader(state), len(state) * 3 / 4}, RestoreLimits{}, errBroken},
		{"over the heap limit", bytes.NewReader(state), RestoreLimits{HeapBytes: estimatedHeap(t, state) / 2}, ErrRestoreTooLarge},
		{"over a quota", bytes.NewReader(state), RestoreLimits{Quota: &pb.Quota{MaxInstancesPerService: 1}}, ErrQuotaExceeded},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := replicaWithACL(t)
			before := replicaState(f)
			err := f.RestoreWithin(io.NopCloser(c.r), c.limit)
			if !errors.Is(err, c.want) {
				t.Fatalf("RestoreWithin = %v, want %v", err, c.want)
			}
			if after := replicaState(f); after != before {
				t.Fatalf("a failed restore changed the replica:\nbefore:\n%s\nafter:\n%s", before, after)
			}
		})
	}
}

// replicaWithACL is a replica of 200 random commands and an ACL state.
func replicaWithACL(t *testing.T) *FSM {
	d := newFSMDriver(t, 16)
	rng := rand.New(rand.NewPCG(1, 1))
	for range 200 {
		d.fsm.Apply(d.nextLog(randomCommand(rng)))
	}
	d.mustApply(aclBootstrapCmd(aclToken("root", "secret", ManagementPolicy)))
	d.mustApply(aclPolicyCmd("ops", `service "" { read }`))
	d.mustApply(aclTokenCmd(aclToken("ops-token", "ops-secret", "ops")))
	return d.fsm
}

// A restore held to a heap limit refuses a snapshot of more state than
// it, naming the limit, as soon as its records pass it: it does not read,
// nor hold, the rest.
func TestRestoreWithinHeapLimitStopsEarly(t *testing.T) {
	state := shapeState(t, restoreShapes[0], 100_000)
	limit := estimatedHeap(t, state) / 10
	f := NewFSM(1)
	r := &heapAtEOF{r: bytes.NewReader(state)}
	err := f.RestoreWithin(io.NopCloser(r), RestoreLimits{HeapBytes: limit})
	if !errors.Is(err, ErrRestoreTooLarge) || !strings.Contains(err.Error(), fmt.Sprint(limit)) {
		t.Fatalf("RestoreWithin = %v, want ErrRestoreTooLarge naming the limit %d", err, limit)
	}
	if r.read > len(state)/5 {
		t.Errorf("the refused restore read %d of the snapshot's %d bytes", r.read, len(state))
	}
	if len(f.Nodes()) != 0 {
		t.Errorf("the refused restore left %d nodes", len(f.Nodes()))
	}
}

// A snapshot whose instances are each valid but together pass the
// registry's limits is refused by a restore held to them (one through the
// API), naming the limit; Restore, which installs the leader's state on a
// follower, takes it: the leader's state is the cluster's.
func TestRestoreQuotaTotals(t *testing.T) {
	d := newFSMDriver(t, 16)
	for i := range 5 {
		inst := testInstance("api", fmt.Sprint(i), "n1")
		inst.Metadata = map[string]string{"k": strings.Repeat("v", 100)}
		d.mustApply(registerCmd(inst))
	}
	state := snapshotBytes(t, d.fsm)
	for _, c := range []struct {
		quota *pb.Quota
		want  string
	}{
		{&pb.Quota{MaxInstancesPerService: 4}, "max_instances_per_service"},
		{&pb.Quota{MaxInstanceMetadataBytes: 50}, "max_instance_metadata_bytes"},
		{&pb.Quota{MaxRegistryBytes: 300}, "max_registry_bytes"},
	} {
		t.Run(c.want, func(t *testing.T) {
			f := NewFSM(1)
			err := f.RestoreWithin(io.NopCloser(bytes.NewReader(state)), RestoreLimits{Quota: c.quota})
			if !errors.Is(err, ErrQuotaExceeded) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("RestoreWithin = %v, want ErrQuotaExceeded naming %s", err, c.want)
			}
			if f.InstanceCount() != 0 {
				t.Fatalf("the refused restore left %d instances", f.InstanceCount())
			}
		})
	}
	f := NewFSM(1)
	restoreBytes(t, f, state)
	if f.InstanceCount() != 5 {
		t.Fatalf("Restore of the leader's state holds %d instances, want 5", f.InstanceCount())
	}
}

// BenchmarkRestoreHeap reports, for snapshots of 100,000 records of one
// kind each, the heap a restore holds per byte of snapshot once it has
// read it all (heap/snapshot-B) and what restoreHeap estimates
// (estimate/snapshot-B).
func BenchmarkRestoreHeap(b *testing.B) {
	for _, s := range restoreShapes {
		b.Run(s.name, func(b *testing.B) {
			state := shapeState(b, s, 100_000)
			b.SetBytes(int64(len(state)))
			var reading int64
			for b.Loop() {
				reading, _ = measureRestore(b, NewFSM(1), state)
			}
			b.ReportMetric(float64(reading)/float64(len(state)), "heap/snapshot-B")
			b.ReportMetric(float64(estimatedHeap(b, state))/float64(len(state)), "estimate/snapshot-B")
		})
	}
}

// TestRestoreWithACLsRefusesAStateWithoutThem: an agent enforcing ACLs
// refuses a snapshot saved before ACLs were bootstrapped, which would
// leave the first caller of ACL.Bootstrap holding the cluster; a state
// with bootstrapped ACLs passes, and so does any state where ACLs are off.
func TestRestoreWithACLsRefusesAStateWithoutThem(t *testing.T) {
	d := newFSMDriver(t, 16)
	d.mustApply(registerCmd(testInstance("api", "1", "n1")))
	open := snapshotBytes(t, d.fsm)
	f := NewFSM(1)
	err := f.RestoreWithin(io.NopCloser(bytes.NewReader(open)), RestoreLimits{ACL: true})
	if !errors.Is(err, ErrRestoreWithoutACL) || !errors.Is(err, apierr.ErrFailedPrecondition) {
		t.Fatalf("restore of a state without ACLs on an agent with them: %v, want ErrRestoreWithoutACL (FailedPrecondition)", err)
	}
	if f.InstanceCount() != 0 {
		t.Fatalf("the refused restore left %d instances", f.InstanceCount())
	}
	if err := NewFSM(1).RestoreWithin(io.NopCloser(bytes.NewReader(open)), RestoreLimits{}); err != nil {
		t.Fatalf("the same state where ACLs are off: %v", err)
	}
	d.mustApply(aclBootstrapCmd(aclToken("mgmt", "secret", "management")))
	if err := NewFSM(1).RestoreWithin(io.NopCloser(bytes.NewReader(snapshotBytes(t, d.fsm))), RestoreLimits{ACL: true}); err != nil {
		t.Fatalf("a state with bootstrapped ACLs on an agent with them: %v", err)
	}
}
