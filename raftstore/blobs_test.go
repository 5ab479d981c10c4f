package raftstore

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"

	"google.golang.org/protobuf/encoding/protodelim"
	"google.golang.org/protobuf/proto"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/snapshot"
)

func blobPendingCmd(id, node string) *pb.Command {
	return &pb.Command{Kind: &pb.Command_BlobPending{BlobPending: &pb.BlobPending{Id: id, Name: "n-" + id, Node: node}}}
}

func blobCommitCmd(b *pb.Blob, overwrite bool) *pb.Command {
	return &pb.Command{Kind: &pb.Command_BlobCommit{BlobCommit: &pb.BlobCommit{Blob: b, Overwrite: overwrite}}}
}

// testBlob is a 2+1 blob of two blocks on agents a, b and c.
func testBlob(name, id string) *pb.Blob {
	return &pb.Blob{
		Name: name, Id: id, Size: 150, DataShards: 2, ParityShards: 1, BlockSize: 100,
		Sha256: []byte{1, 2, 3}, Nodes: []string{"a", "b", "c"},
		Blocks: []*pb.BlobBlock{
			{Len: 100, Holders: []uint32{1, 2, 3}, Sums: []uint32{11, 12, 13}},
			{Len: 50, Holders: []uint32{2, 0, 1}, Sums: []uint32{21, 22, 23}},
		},
	}
}

func TestFSMBlobLifecycle(t *testing.T) {
	d := newFSMDriver(t, 64)
	d.mustApply(blobPendingCmd("aa01", "a"))
	if p := d.fsm.PendingBlob("aa01"); p == nil || p.Node != "a" {
		t.Fatalf("PendingBlob(aa01) = %v", p)
	}
	rev := d.mustApply(blobCommitCmd(testBlob("models/v1", "aa01"), false))
	b := d.fsm.Blob("models/v1")
	if b == nil || b.CreateRevision != rev || b.ModRevision != rev || b.Created == 0 {
		t.Fatalf("Blob after commit = %v, want revisions %d and a creation time", b, rev)
	}
	if d.fsm.PendingBlob("aa01") != nil {
		t.Error("commit left the put pending")
	}
	if d.fsm.BlobByID("aa01") != b {
		t.Error("BlobByID does not find the committed blob")
	}

	// A second put under the same name needs overwrite.
	d.mustApply(blobPendingCmd("bb02", "b"))
	if _, err := d.apply(blobCommitCmd(testBlob("models/v1", "bb02"), false)); !errors.Is(err, ErrAlreadyExists) {
		t.Fatalf("commit over an existing name: %v, want ErrAlreadyExists", err)
	}
	if d.fsm.Blob("models/v1").Id != "aa01" {
		t.Fatal("rejected overwrite changed the blob")
	}
	d.mustApply(blobCommitCmd(testBlob("models/v1", "bb02"), true))
	if d.fsm.Blob("models/v1").Id != "bb02" || d.fsm.BlobByID("aa01") != nil {
		t.Fatal("overwrite did not replace the old version")
	}

	// Repair records a shard on a new agent d.
	srev := d.mustApply(&pb.Command{Kind: &pb.Command_BlobShards{BlobShards: &pb.BlobShards{
		Id: "bb02", Shards: []*pb.ShardPlacement{{Block: 1, Index: 1, Node: "d", Sum: 99}},
	}}})
	b = d.fsm.Blob("models/v1")
	if got := b.Blocks[1].Holders[1]; got == 0 || b.Nodes[got-1] != "d" || b.Blocks[1].Sums[1] != 99 || b.ModRevision != srev {
		t.Fatalf("after BlobShards: block 1 = %v, nodes %v", b.Blocks[1], b.Nodes)
	}
	if _, err := d.apply(&pb.Command{Kind: &pb.Command_BlobShards{BlobShards: &pb.BlobShards{
		Id: "bb02", Shards: []*pb.ShardPlacement{{Block: 7, Index: 0, Node: "d"}},
	}}}); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("BlobShards for a block that does not exist: %v, want ErrInvalidArgument", err)
	}
	if _, err := d.apply(&pb.Command{Kind: &pb.Command_BlobShards{BlobShards: &pb.BlobShards{
		Id: "aa01", Shards: []*pb.ShardPlacement{{Block: 0, Index: 0, Node: "d"}},
	}}}); !errors.Is(err, ErrNotFound) {
		t.Errorf("BlobShards for an overwritten version: %v, want ErrNotFound", err)
	}

	d.mustApply(&pb.Command{Kind: &pb.Command_BlobDelete{BlobDelete: &pb.BlobDelete{Name: "models/v1"}}})
	if d.fsm.Blob("models/v1") != nil || d.fsm.BlobByID("bb02") != nil {
		t.Fatal("delete left the blob")
	}
	if _, err := d.apply(&pb.Command{Kind: &pb.Command_BlobDelete{BlobDelete: &pb.BlobDelete{Name: "models/v1"}}}); !errors.Is(err, ErrNotFound) {
		t.Errorf("second delete: %v, want ErrNotFound", err)
	}
}

func TestFSMBlobCommitNeedsPendingPut(t *testing.T) {
	d := newFSMDriver(t, 16)
	d.mustApply(blobPendingCmd("aa01", "a"))
	d.mustApply(&pb.Command{Kind: &pb.Command_BlobAbort{BlobAbort: &pb.BlobAbort{Ids: []string{"aa01"}}}})
	if _, err := d.apply(blobCommitCmd(testBlob("late", "aa01"), false)); !errors.Is(err, ErrNotFound) {
		t.Fatalf("commit of an aborted put: %v, want ErrNotFound", err)
	}
	if d.fsm.Blob("late") != nil {
		t.Fatal("aborted put became visible")
	}
	// Inline blobs have no shards and no pending put.
	d.mustApply(blobCommitCmd(&pb.Blob{Name: "tiny", Id: "bb02", Size: 1, Inline: []byte{1}}, false))
}

func TestFSMBlobRejectsBadShape(t *testing.T) {
	for name, mutate := range map[string]func(b *pb.Blob){
		"holders short":   func(b *pb.Blob) { b.Blocks[0].Holders = b.Blocks[0].Holders[:2] },
		"sums long":       func(b *pb.Blob) { b.Blocks[1].Sums = append(b.Blocks[1].Sums, 1) },
		"unknown node":    func(b *pb.Blob) { b.Blocks[0].Holders[0] = 9 },
		"size mismatch":   func(b *pb.Blob) { b.Size = 151 },
		"no data shards":  func(b *pb.Blob) { b.DataShards = 0 },
		"inline mismatch": func(b *pb.Blob) { b.Blocks = nil; b.Inline = []byte("abc") },
		"no id":           func(b *pb.Blob) { b.Id = "" },
		// 2^32-1 + 3 shards wrap around to 2 in 32 bits.
		"shard count wraps": func(b *pb.Blob) {
			b.DataShards, b.ParityShards = math.MaxUint32, 3
			for _, blk := range b.Blocks {
				blk.Holders, blk.Sums = blk.Holders[:2], blk.Sums[:2]
			}
		},
	} {
		t.Run(name, func(t *testing.T) {
			d := newFSMDriver(t, 16)
			d.mustApply(blobPendingCmd("cc03", "a"))
			b := testBlob("x", "cc03")
			mutate(b)
			if _, err := d.apply(blobCommitCmd(b, false)); !errors.Is(err, ErrInvalidArgument) {
				t.Fatalf("commit: %v, want ErrInvalidArgument", err)
			}
			if d.fsm.Blob("x") != nil {
				t.Fatal("a rejected commit stored the blob")
			}
		})
	}
}

func TestFSMBlobListAndAbort(t *testing.T) {
	d := newFSMDriver(t, 16)
	for _, n := range []string{"b/2", "a/1", "b/1", "c"} {
		blob := &pb.Blob{Name: n, Id: "id" + n, Size: 1, Inline: []byte{'x'}}
		d.mustApply(blobCommitCmd(blob, false))
	}
	if n := d.fsm.BlobCount(); n != 4 {
		t.Fatalf("BlobCount = %d, want 4", n)
	}
	got, _ := d.fsm.Blobs("b/")
	if len(got) != 2 || got[0].Name != "b/1" || got[1].Name != "b/2" {
		t.Fatalf("Blobs(b/) = %v", got)
	}
	d.mustApply(blobPendingCmd("p1", "a"))
	d.mustApply(blobPendingCmd("p2", "b"))
	d.mustApply(&pb.Command{Kind: &pb.Command_BlobAbort{BlobAbort: &pb.BlobAbort{Ids: []string{"p1", "nope"}}}})
	if ps := d.fsm.PendingBlobs(); len(ps) != 1 || ps[0].Id != "p2" {
		t.Fatalf("PendingBlobs after abort = %v", ps)
	}
}

func TestFSMBlobSnapshotRoundTrip(t *testing.T) {
	d := populatedFSM(t)
	d.mustApply(blobPendingCmd("aa01", "n1"))
	d.mustApply(blobCommitCmd(testBlob("big", "aa01"), false))
	d.mustApply(blobCommitCmd(&pb.Blob{Name: "small", Id: "bb02", Size: 3, Inline: []byte("abc")}, false))
	d.mustApply(blobPendingCmd("cc03", "n1"))
	data := snapshotBytes(t, d.fsm)

	f := NewFSM(16)
	if err := f.Restore(io.NopCloser(bytes.NewReader(data))); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	for _, name := range []string{"big", "small"} {
		if !proto.Equal(f.Blob(name), d.fsm.Blob(name)) {
			t.Errorf("restored %s = %v, want %v", name, f.Blob(name), d.fsm.Blob(name))
		}
	}
	if f.BlobByID("aa01") == nil || f.PendingBlob("cc03") == nil {
		t.Error("restore lost the id index or the pending put")
	}
	if got, want := stateOf(f), stateOf(d.fsm); diffStates(want, got) != "" {
		t.Errorf("registry state differs after restore: %s", diffStates(want, got))
	}
}

func TestBlobHolders(t *testing.T) {
	b := testBlob("h", "dd04")
	if got := b.Holder(b.Blocks[1], 1); got != "" {
		t.Errorf("missing shard: Holder = %q, want \"\"", got)
	}
	if got := b.Holder(b.Blocks[0], 2); got != "c" {
		t.Errorf("Holder(block 0, 2) = %q, want c", got)
	}
	if got := b.Holder(b.Blocks[0], 7); got != "" {
		t.Errorf("index out of range: Holder = %q, want \"\"", got)
	}
	if ref := b.HolderRef("b"); ref != 2 {
		t.Errorf("HolderRef(b) = %d, want 2", ref)
	}
	if ref := b.HolderRef("z"); ref != 4 || b.Nodes[3] != "z" {
		t.Errorf("HolderRef(z) = %d with nodes %v, want 4 and z appended", ref, b.Nodes)
	}
}

func blobShardsCmd(id string, shards ...*pb.ShardPlacement) *pb.Command {
	return &pb.Command{Kind: &pb.Command_BlobShards{BlobShards: &pb.BlobShards{Id: id, Shards: shards}}}
}

// TestFSMBlobRefusesTwoShardsOfABlockOnOneAgent: a commit or a repair that
// would put two shards of one block on the same agent is refused with an
// error naming the block, and the state does not change.
func TestFSMBlobRefusesTwoShardsOfABlockOnOneAgent(t *testing.T) {
	t.Run("commit", func(t *testing.T) {
		for name, mutate := range map[string]func(b *pb.Blob){
			"same holder twice":             func(b *pb.Blob) { b.Blocks[1].Holders = []uint32{2, 0, 2} },
			"one agent under two refs":      func(b *pb.Blob) { b.Nodes = append(b.Nodes, "a"); b.Blocks[1].Holders = []uint32{4, 0, 1} },
			"missing shards are not agents": nil,
		} {
			t.Run(name, func(t *testing.T) {
				d := newFSMDriver(t, 16)
				d.mustApply(blobPendingCmd("cc03", "a"))
				b := testBlob("x", "cc03")
				b.Blocks[0].Holders = []uint32{1, 0, 0}
				if mutate == nil {
					d.mustApply(blobCommitCmd(b, false))
					return
				}
				mutate(b)
				_, err := d.apply(blobCommitCmd(b, false))
				if !errors.Is(err, ErrInvalidArgument) || !strings.Contains(err.Error(), "block 1") {
					t.Fatalf("commit: %v, want ErrInvalidArgument naming block 1", err)
				}
				if d.fsm.Blob("x") != nil || d.fsm.PendingBlob("cc03") == nil {
					t.Fatal("a rejected commit stored the blob or ended its put")
				}
			})
		}
	})

	t.Run("repair", func(t *testing.T) {
		d := newFSMDriver(t, 16)
		d.mustApply(blobPendingCmd("cc03", "a"))
		d.mustApply(blobCommitCmd(testBlob("x", "cc03"), false)) // block 1: b, -, a
		for name, shards := range map[string][]*pb.ShardPlacement{
			"onto an agent holding another shard": {{Block: 1, Index: 1, Node: "a"}},
			"two workers, one agent":              {{Block: 1, Index: 1, Node: "d"}, {Block: 0, Index: 0, Node: "d"}, {Block: 1, Index: 2, Node: "d"}},
		} {
			stored := d.fsm.Blob("x")
			want := proto.Clone(stored)
			_, err := d.apply(blobShardsCmd("cc03", shards...))
			if !errors.Is(err, ErrInvalidArgument) || !strings.Contains(err.Error(), "block 1") {
				t.Errorf("%s: %v, want ErrInvalidArgument naming block 1", name, err)
			}
			if got := d.fsm.Blob("x"); got != stored || !proto.Equal(got, want) {
				t.Errorf("%s: a rejected repair changed the blob to %v", name, got)
			}
		}
		// An agent that holds no shard of the block may take one.
		d.mustApply(blobShardsCmd("cc03", &pb.ShardPlacement{Block: 1, Index: 1, Node: "d"}))
	})
}

// hugeBlob is the metadata of a 64 GiB blob of 1 MiB blocks at 8+4 shards
// per block: 65,536 blocks, about 4.6 MB encoded.
func hugeBlob(name, id string) *pb.Blob {
	const k, m, blocks = 8, 4, 1 << 16
	b := &pb.Blob{Name: name, Id: id, DataShards: k, ParityShards: m, BlockSize: 1 << 20, Sha256: bytes.Repeat([]byte{7}, 32)}
	for i := range 16 {
		b.Nodes = append(b.Nodes, fmt.Sprintf("agent-%02d", i))
	}
	for i := range blocks {
		blk := &pb.BlobBlock{Len: 1 << 20}
		for j := range k + m {
			blk.Holders = append(blk.Holders, uint32(1+(i+j)%len(b.Nodes)))
			blk.Sums = append(blk.Sums, uint32(i*31+j)|0x80000000)
		}
		b.Blocks = append(b.Blocks, blk)
		b.Size += uint64(blk.Len)
	}
	return b
}

// TestFSMSnapshotOfAHugeBlobRestores: a blob whose metadata is larger than
// a snapshot record may be survives Snapshot and Restore into a fresh FSM.
func TestFSMSnapshotOfAHugeBlobRestores(t *testing.T) {
	d := populatedFSM(t)
	d.mustApply(blobPendingCmd("ee05", "n1"))
	big := hugeBlob("models/huge", "ee05")
	if size := proto.Size(big); size <= snapshot.MaxStateRecord {
		t.Fatalf("test blob has %d bytes of metadata, want more than a record's %d", size, snapshot.MaxStateRecord)
	}
	d.mustApply(blobCommitCmd(big, false))
	d.mustApply(blobCommitCmd(&pb.Blob{Name: "small", Id: "bb02", Size: 3, Inline: []byte("abc")}, false))
	d.mustApply(blobPendingCmd("ff06", "n2"))
	data := snapshotBytes(t, d.fsm)

	f := NewFSM(16)
	if err := f.Restore(io.NopCloser(bytes.NewReader(data))); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	for _, name := range []string{"models/huge", "small"} {
		if !proto.Equal(f.Blob(name), d.fsm.Blob(name)) {
			t.Errorf("restored blob %s differs from the snapshotted one", name)
		}
	}
	if f.BlobByID("ee05") == nil || f.PendingBlob("ff06") == nil {
		t.Error("restore lost the id index or the pending put")
	}
	if diff := diffStates(stateOf(d.fsm), stateOf(f)); diff != "" {
		t.Errorf("registry state differs after restore:\n%s", diff)
	}
	// The stored blob is untouched by writing it out in pieces.
	if got := d.fsm.Blob("models/huge"); len(got.Blocks) != len(big.Blocks) {
		t.Errorf("snapshot changed the stored blob: %d blocks, want %d", len(got.Blocks), len(big.Blocks))
	}
}

// TestFSMRestoresFormat1Snapshot: snapshots written before blobs were
// split into block records (one record per blob, even above the record
// bound) still restore.
func TestFSMRestoresFormat1Snapshot(t *testing.T) {
	d := newFSMDriver(t, 16)
	d.mustApply(nodeUpsertCmd(&pb.Node{Name: "n1"}))
	d.mustApply(blobPendingCmd("ee05", "n1"))
	d.mustApply(blobCommitCmd(hugeBlob("models/huge", "ee05"), false))
	d.mustApply(blobPendingCmd("aa01", "n1"))
	d.mustApply(blobCommitCmd(testBlob("small", "aa01"), false))
	d.mustApply(blobPendingCmd("ff06", "n1"))

	blobs, _ := d.fsm.Blobs("")
	pending := d.fsm.PendingBlobs()
	var b bytes.Buffer
	b.WriteString(snapshot.StateMagic)
	msgs := []proto.Message{&pb.SnapshotHeader{
		Format: 1, Revision: d.fsm.Revision(), Nodes: 1, Blobs: uint64(len(blobs)), PendingBlobs: uint64(len(pending)),
	}}
	msgs = append(msgs, d.fsm.Node("n1"))
	for _, bl := range blobs {
		msgs = append(msgs, bl)
	}
	for _, p := range pending {
		msgs = append(msgs, p)
	}
	for _, m := range msgs {
		if _, err := protodelim.MarshalTo(&b, m); err != nil {
			t.Fatal(err)
		}
	}

	f := NewFSM(16)
	if err := f.Restore(io.NopCloser(&b)); err != nil {
		t.Fatalf("Restore of a format 1 snapshot: %v", err)
	}
	for _, name := range []string{"models/huge", "small"} {
		if !proto.Equal(f.Blob(name), d.fsm.Blob(name)) {
			t.Errorf("restored blob %s differs", name)
		}
	}
	if f.PendingBlob("ff06") == nil || f.Node("n1") == nil || f.Revision() != d.fsm.Revision() {
		t.Error("format 1 restore lost the pending put, the node or the revision")
	}
}

// TestFSMSnapshotRefusesOversizedRecord: a record the reader would refuse
// is not written; Persist fails and cancels the sink instead.
func TestFSMSnapshotRefusesOversizedRecord(t *testing.T) {
	d := newFSMDriver(t, 16)
	inst := testInstance("api", "1", "n1")
	inst.Metadata = map[string]string{"blob": strings.Repeat("x", snapshot.MaxStateRecord)}
	d.mustApply(registerCmd(inst))
	snap, err := d.fsm.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Release()
	sink := &memSink{}
	if err := snap.Persist(sink); err == nil || !strings.Contains(err.Error(), "Instance") {
		t.Fatalf("Persist: %v, want an error naming the oversized Instance record", err)
	}
	if !sink.cancelled {
		t.Error("Persist did not cancel the sink")
	}
}

func leasedPendingCmd(id, name string, at, ttl int64) *pb.Command {
	return &pb.Command{Time: at, Kind: &pb.Command_BlobPending{BlobPending: &pb.BlobPending{
		Id: id, Name: name, Node: "a", Started: 1, LeaseTtl: ttl,
		// What the proposer thinks: the state machine ignores it.
		LeaseExpires: 42,
	}}}
}

func renewCmd(id, name string, at, ttl int64) *pb.Command {
	return &pb.Command{Time: at, Kind: &pb.Command_BlobRenew{BlobRenew: &pb.BlobRenew{Id: id, Name: name, LeaseTtl: ttl}}}
}

func TestFSMPutLeaseRunsFromTheLeadersCommandTime(t *testing.T) {
	const sec = int64(1e9)
	d := newFSMDriver(t, 64)
	d.mustApply(leasedPendingCmd("aa01", "models/v1", 1000*sec, 30*sec))
	if got := d.fsm.PendingBlob("aa01").LeaseExpires; got != 1030*sec {
		t.Fatalf("lease expires at %d, want the command's time + the lease = %d", got, 1030*sec)
	}

	// A renewal runs from its own command's time.
	d.mustApply(renewCmd("aa01", "models/v1", 1020*sec, 30*sec))
	if got := d.fsm.PendingBlob("aa01").LeaseExpires; got != 1050*sec {
		t.Fatalf("renewed lease expires at %d, want %d", got, 1050*sec)
	}
	// A renewal never shortens a lease.
	d.mustApply(renewCmd("aa01", "models/v1", 1010*sec, 10*sec))
	if got := d.fsm.PendingBlob("aa01").LeaseExpires; got != 1050*sec {
		t.Fatalf("a shorter renewal moved the lease to %d, want it kept at %d", got, 1050*sec)
	}

	// Every replica computes the same deadline whatever its own clock:
	// a second state machine fed the same entries agrees.
	d2 := newFSMDriver(t, 64)
	d2.mustApply(leasedPendingCmd("aa01", "models/v1", 1000*sec, 30*sec))
	d2.mustApply(renewCmd("aa01", "models/v1", 1020*sec, 30*sec))
	if a, b := d.fsm.PendingBlob("aa01").LeaseExpires, d2.fsm.PendingBlob("aa01").LeaseExpires; a != b {
		t.Fatalf("replicas disagree on the lease: %d and %d", a, b)
	}
}

func TestFSMPutRenewalRefusals(t *testing.T) {
	const sec = int64(1e9)
	d := newFSMDriver(t, 64)
	d.mustApply(leasedPendingCmd("aa01", "models/v1", 1000*sec, 30*sec))
	d.mustApply(blobPendingCmd("bb02", "a")) // a coordinated put: no lease
	for _, tc := range []struct {
		what string
		cmd  *pb.Command
		want error
	}{
		{"another name", renewCmd("aa01", "models/v2", 1001*sec, 30*sec), ErrNotFound},
		{"unknown put", renewCmd("cc03", "models/v1", 1001*sec, 30*sec), ErrNotFound},
		{"no lease", renewCmd("bb02", "n-bb02", 1001*sec, 30*sec), ErrInvalidArgument},
		{"zero length", renewCmd("aa01", "models/v1", 1001*sec, 0), ErrInvalidArgument},
	} {
		if _, err := d.apply(tc.cmd); !errors.Is(err, tc.want) {
			t.Errorf("renew with %s: %v, want %v", tc.what, err, tc.want)
		}
	}
	if got := d.fsm.PendingBlob("aa01").LeaseExpires; got != 1030*sec {
		t.Fatalf("refused renewals moved the lease to %d", got)
	}
	d.mustApply(&pb.Command{Kind: &pb.Command_BlobAbort{BlobAbort: &pb.BlobAbort{Ids: []string{"aa01"}}}})
	_, err := d.apply(renewCmd("aa01", "models/v1", 1002*sec, 30*sec))
	if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "retry the put") {
		t.Fatalf("renew of an aborted put: %v, want ErrNotFound saying to retry the put", err)
	}
}

func TestFSMLeasedPutCommitsOnlyUnderItsName(t *testing.T) {
	d := newFSMDriver(t, 64)
	d.mustApply(leasedPendingCmd("aa01", "models/v1", 1e12, 30e9))
	if _, err := d.apply(blobCommitCmd(testBlob("other/name", "aa01"), false)); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("commit of a leased put under another name: %v, want ErrInvalidArgument", err)
	}
	if d.fsm.Blob("other/name") != nil || d.fsm.PendingBlob("aa01") == nil {
		t.Fatal("the refused commit changed the state")
	}
	d.mustApply(blobCommitCmd(testBlob("models/v1", "aa01"), false))
}

// wantBlobsPage is BlobsPage worked out from the names of the stored
// blobs, one by one.
func wantBlobsPage(names []string, prefix, after string, limit int, keep func(string) bool) (page []string, total int) {
	slices.Sort(names)
	for _, n := range names {
		if !strings.HasPrefix(n, prefix) || (keep != nil && !keep(n)) {
			continue
		}
		total++
		if n > after && len(page) < limit {
			page = append(page, n)
		}
	}
	return page, total
}

// checkBlobsPages compares every page BlobsPage answers with what the
// stored blobs, listed one by one, say it should be.
func checkBlobsPages(t *testing.T, f *FSM, stage string) {
	t.Helper()
	var names []string
	all, _ := f.Blobs("")
	for _, b := range all {
		names = append(names, b.Name)
	}
	if len(all) != f.BlobCount() || !slices.IsSorted(names) {
		t.Fatalf("%s: Blobs(\"\") lists %d blobs, out of order or not all %d: %v", stage, len(all), f.BlobCount(), names)
	}
	if x := f.blobs.names; x.built {
		var indexed []string
		for _, ch := range x.chunks {
			if len(ch) == 0 || len(ch) > chunkNames {
				t.Fatalf("%s: the name index has a chunk of %d names, want 1 to %d", stage, len(ch), chunkNames)
			}
			indexed = append(indexed, ch...)
		}
		if !slices.Equal(indexed, names) {
			t.Fatalf("%s: the name index holds %d names, not the %d stored in order", stage, len(indexed), len(names))
		}
	}
	odd := func(n string) bool { return len(n)%2 == 1 }
	for _, prefix := range []string{"", "b/", "b/x", "c", "z"} {
		for _, after := range []string{"", "a", "b/", "b/x/0040", "b/x/0041x", "c", "zz"} {
			for _, limit := range []int{0, 1, 7, 1000} {
				for _, keep := range []func(string) bool{nil, odd} {
					var asked []string
					ask := keep
					if keep != nil {
						ask = func(n string) bool { asked = append(asked, n); return keep(n) }
					}
					page, total, rev := f.BlobsPage(prefix, after, limit, ask)
					var got []string
					for _, b := range page {
						if f.Blob(b.Name) != b {
							t.Fatalf("%s: page holds %q, not the blob stored under that name", stage, b.Name)
						}
						got = append(got, b.Name)
					}
					want, wantTotal := wantBlobsPage(slices.Clone(names), prefix, after, limit, keep)
					if !slices.Equal(got, want) || total != wantTotal || rev != f.Revision() {
						t.Fatalf("%s: BlobsPage(%q, %q, %d, keep %v) = %v, total %d, rev %d; want %v, %d, %d",
							stage, prefix, after, limit, keep != nil, got, total, rev, want, wantTotal, f.Revision())
					}
					if under, _ := wantBlobsPage(slices.Clone(names), prefix, "", math.MaxInt, nil); keep != nil && !slices.Equal(asked, under) {
						t.Fatalf("%s: BlobsPage(%q) asked keep about %v, want each blob under the prefix once in order: %v", stage, prefix, asked, under)
					}
				}
			}
		}
	}
}

// BlobsPage pages through the blobs in name order whatever order they
// were committed, deleted or overwritten in, before and after its index
// is built, and after a restore.
func TestFSMBlobsPage(t *testing.T) {
	d := newFSMDriver(t, 16)
	commit := func(name, id string, overwrite bool) {
		d.mustApply(blobCommitCmd(&pb.Blob{Name: name, Id: id, Size: 1, Inline: []byte{'x'}}, overwrite))
	}
	del := func(name string) {
		d.mustApply(&pb.Command{Kind: &pb.Command_BlobDelete{BlobDelete: &pb.BlobDelete{Name: name}}})
	}
	var names []string
	for i := range 650 {
		names = append(names, fmt.Sprintf("a/%04d", i), fmt.Sprintf("b/x/%04d", i), fmt.Sprintf("b/%04d", i), fmt.Sprintf("c%d", i))
	}
	rand.New(rand.NewPCG(1, 2)).Shuffle(len(names), func(i, j int) { names[i], names[j] = names[j], names[i] })
	for i, n := range names[:1000] {
		commit(n, fmt.Sprintf("id%d", i), false)
	}
	checkBlobsPages(t, d.fsm, "committed in any order")

	// Enough new names to split chunks of the index, and a run of
	// deleted ones to empty some.
	for i, n := range names[1000:] {
		commit(n, fmt.Sprintf("id%d", 1000+i), false)
	}
	for i, n := range names[:40] {
		commit(n, fmt.Sprintf("again%d", i), true)
	}
	for _, n := range names[40:200] {
		del(n)
	}
	for _, n := range names {
		if strings.HasPrefix(n, "b/") && d.fsm.Blob(n) != nil {
			del(n)
		}
	}
	commit("b/x/0041", "id-new", true)
	commit("b/0007", "id-new2", true)
	checkBlobsPages(t, d.fsm, "committed, overwritten and deleted after a listing")

	f := NewFSM(16)
	if err := f.Restore(io.NopCloser(bytes.NewReader(snapshotBytes(t, d.fsm)))); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	checkBlobsPages(t, f, "restored")
	for _, n := range names[200:300] {
		if d.fsm.Blob(n) != nil {
			del(n)
		}
	}
	if err := f.Restore(io.NopCloser(bytes.NewReader(snapshotBytes(t, d.fsm)))); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	checkBlobsPages(t, f, "restored over a listed replica")
}

// Readers list the blobs while blobs are committed and deleted: the first
// readers build the name index at once (run with -race).
func TestFSMBlobsPageWhileApplying(t *testing.T) {
	d := newFSMDriver(t, 16)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				page, total, _ := d.fsm.BlobsPage("", "n/0100", 10, func(string) bool { return true })
				if len(page) > total || !slices.IsSortedFunc(page, func(a, b *pb.Blob) int { return strings.Compare(a.Name, b.Name) }) {
					panic(fmt.Sprintf("page of %d blobs out of order, or more than the %d counted", len(page), total))
				}
			}
		})
	}
	for i := range 300 {
		name := fmt.Sprintf("n/%04d", (i*7919)%300)
		d.mustApply(blobCommitCmd(&pb.Blob{Name: name, Id: fmt.Sprintf("id%d", i), Size: 1, Inline: []byte{'x'}}, false))
		if i%3 == 0 {
			d.mustApply(&pb.Command{Kind: &pb.Command_BlobDelete{BlobDelete: &pb.BlobDelete{Name: name}}})
		}
	}
	close(stop)
	wg.Wait()
	checkBlobsPages(t, d.fsm, "after concurrent listings")
}

// blobsFSM is a replica holding n inline blobs with names in no order.
func blobsFSM(b *testing.B, n int) *fsmDriver {
	d := newFSMDriver(b, 16)
	for i := range n {
		name := fmt.Sprintf("blobs/%08x", uint32(i)*2654435761)
		d.mustApply(blobCommitCmd(&pb.Blob{Name: name, Id: fmt.Sprintf("id%d", i), Size: 1, Inline: []byte{'x'}}, false))
	}
	return d
}

// The UI asks a page of blobs every few seconds: one page of 500 among
// 100k blobs, with and without an ACL's check of every name.
func BenchmarkBlobsPage100k(b *testing.B) {
	d := blobsFSM(b, 100_000)
	d.fsm.BlobsPage("", "", 1, nil) // the index is built once per replica
	b.Run("all", func(b *testing.B) {
		for b.Loop() {
			d.fsm.BlobsPage("", "blobs/80000000", 500, nil)
		}
	})
	b.Run("keep", func(b *testing.B) {
		for b.Loop() {
			d.fsm.BlobsPage("", "blobs/80000000", 500, func(n string) bool { return n[len(n)-1] != '0' })
		}
	})
	b.Run("list-all", func(b *testing.B) {
		for b.Loop() {
			d.fsm.Blobs("")
		}
	})
	b.Run("first-after-restore", func(b *testing.B) {
		for b.Loop() {
			d.fsm.blobs.names = &nameIndex{}
			d.fsm.BlobsPage("", "", 500, nil)
		}
	})
}

// Committing and deleting a blob among 100k keeps the name index in order.
func BenchmarkBlobCommitDelete100k(b *testing.B) {
	d := blobsFSM(b, 100_000)
	d.fsm.BlobsPage("", "", 1, nil)
	i := 0
	for b.Loop() {
		name := fmt.Sprintf("blobs/%08x-new", uint32(i)*2654435761)
		d.mustApply(blobCommitCmd(&pb.Blob{Name: name, Id: fmt.Sprintf("new%d", i), Size: 1, Inline: []byte{'x'}}, false))
		d.mustApply(&pb.Command{Kind: &pb.Command_BlobDelete{BlobDelete: &pb.BlobDelete{Name: name}}})
		i++
	}
}
