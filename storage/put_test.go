package storage

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/zrpcio/zrpc/api/apierr"
	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/internal/testlog"
	"github.com/zrpcio/zrpc/internal/testwait"
	"github.com/zrpcio/zrpc/storage/codec"
	"github.com/zrpcio/zrpc/storage/shardstore"
)

func TestValidateName(t *testing.T) {
	for _, ok := range []string{"a", "models/v3.bin", "a-b_c.d+e/f", strings.Repeat("x", MaxNameLen)} {
		if err := ValidateName(ok); err != nil {
			t.Errorf("ValidateName(%q) = %v, want nil", ok, err)
		}
	}
	for _, bad := range []string{"", "..", "a/../b", "./a", "/a", "a/", "a//b", "a b", "ä", "a\x00", "a\\b", strings.Repeat("x", MaxNameLen+1)} {
		err := ValidateName(bad)
		if !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("ValidateName(%q) = %v, want ErrInvalidArgument", bad, err)
		}
	}
}

func members(alive, dead int) []Member {
	var out []Member
	for i := range alive + dead {
		out = append(out, Member{Name: string(rune('a' + i)), Alive: i < alive})
	}
	return out
}

func TestChooseScheme(t *testing.T) {
	for _, tc := range []struct {
		name        string
		h           *pb.BlobPutHeader
		alive, dead int
		want        Scheme
		wantErr     error
	}{
		{"default one agent", &pb.BlobPutHeader{}, 1, 0, Scheme{1, 0}, nil},
		{"default three", &pb.BlobPutHeader{}, 3, 0, Scheme{2, 1}, nil},
		{"default five, one down keeps 3+2", &pb.BlobPutHeader{}, 4, 1, Scheme{3, 2}, nil},
		{"default three, one down keeps m with fewer data shards", &pb.BlobPutHeader{}, 2, 1, Scheme{1, 1}, nil},
		{"default five, two down keeps m=2", &pb.BlobPutHeader{}, 3, 2, Scheme{1, 2}, nil},
		{"default six, two down: 4+2 stores k+1", &pb.BlobPutHeader{}, 5, 1, Scheme{4, 2}, nil},
		{"default six, two down keeps m=2", &pb.BlobPutHeader{}, 4, 2, Scheme{2, 2}, nil},
		{"default three, two down cannot keep m", &pb.BlobPutHeader{}, 1, 2, Scheme{2, 1}, ErrNotEnoughShards},
		{"explicit fits", &pb.BlobPutHeader{DataShards: 2, ParityShards: 2}, 4, 0, Scheme{2, 2}, nil},
		{"explicit too wide", &pb.BlobPutHeader{DataShards: 3, ParityShards: 2}, 3, 0, Scheme{3, 2}, ErrNotEnoughShards},
		{"explicit too wide, best effort", &pb.BlobPutHeader{DataShards: 2, ParityShards: 2, BestEffort: true}, 3, 0, Scheme{2, 2}, nil},
		{"best effort still needs k+1", &pb.BlobPutHeader{DataShards: 3, ParityShards: 2, BestEffort: true}, 3, 0, Scheme{3, 2}, ErrNotEnoughShards},
		{"no data shards", &pb.BlobPutHeader{ParityShards: 1}, 3, 0, Scheme{0, 1}, ErrInvalidArgument},
		{"more than 256", &pb.BlobPutHeader{DataShards: 200, ParityShards: 100}, 3, 0, Scheme{200, 100}, ErrInvalidArgument},
		// A part file keeps k in a byte: 256 data shards would store 0.
		{"256 data shards", &pb.BlobPutHeader{DataShards: 256, BestEffort: true}, 3, 0, Scheme{256, 0}, ErrInvalidArgument},
		{"counts whose sum wraps", &pb.BlobPutHeader{DataShards: 258, ParityShards: 0xFFFFFF00, BestEffort: true}, 3, 0, Scheme{258, 0xFFFFFF00}, ErrInvalidArgument},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := chooseScheme(tc.h, members(tc.alive, tc.dead))
			if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil && err != nil) {
				t.Fatalf("chooseScheme: %v, want %v", err, tc.wantErr)
			}
			if got != tc.want {
				t.Fatalf("chooseScheme = %s, want %s", got, tc.want)
			}
		})
	}
}

// TestPutWaitsForTheRegistryToRecordTheAgentsGossipSees: right after a
// cluster forms, gossip sees agents the registry has not recorded yet; a
// put then waits for them instead of failing with "0 of 0 agents alive",
// and says the cluster is still forming when they do not come.
func TestPutWaitsForTheRegistryToRecordTheAgentsGossipSees(t *testing.T) {
	ctx := context.Background()
	data := make([]byte, 100<<10)
	s, fc := newTestStore(t, Config{}, "n1") // the registry knows no agent yet
	fc.gossipAlive.Store(1)
	var once sync.Once
	fc.onGossip = func() { // gossip has found n1; the leader records it a moment later
		once.Do(func() { fc.setNodes(t, true, "n1") })
	}
	res, err := s.Put(ctx, &pb.BlobPutHeader{Name: "early"}, bytes.NewReader(data))
	if err != nil {
		t.Fatalf("put while the registry records the agents: %v", err)
	}
	if res.Blob.DataShards != 1 {
		t.Fatalf("stored %d+%d", res.Blob.DataShards, res.Blob.ParityShards)
	}

	s, fc = newTestStore(t, Config{}, "n1")
	s.formingWait = 200 * time.Millisecond
	fc.gossipAlive.Store(3)
	_, err = s.Put(ctx, &pb.BlobPutHeader{Name: "never"}, bytes.NewReader(data))
	if !errors.Is(err, ErrNotEnoughShards) || !strings.Contains(err.Error(), "still forming") {
		t.Fatalf("put while the registry never records the agents: %v; want ErrNotEnoughShards saying the cluster is still forming", err)
	}
}

// TestPutThroughACutOffAgentSaysSoBeforeItsGossip: an agent cut off from
// the leader (the minority side of a partition) whose gossip has declared
// the others failed refuses a put saying it is cut off, not applied, so
// that the client goes to another agent; it proposes nothing and reads
// no body. Its gossip's view alone would refuse it for too few agents
// alive, which a client does not take to another agent.
func TestPutThroughACutOffAgentSaysSoBeforeItsGossip(t *testing.T) {
	ctx := context.Background()
	data := bytes.Repeat([]byte("zrpc"), 64<<10)
	s, fc := newTestStore(t, Config{}, "n1", "n1", "n2", "n3")
	fc.setGossipDown("n2", true)
	fc.setGossipDown("n3", true)
	cut := apierr.NotApplied(fmt.Errorf("%w: this agent is cut off from the leader: no other voter has answered it for 1.2s", apierr.ErrNoLeader))
	fc.cutOff.Store(&cut)
	rev := fc.fsm.Revision()
	_, err := s.Put(ctx, &pb.BlobPutHeader{Name: "cut", Size: int64(len(data))}, noRead{t})
	if !errors.Is(err, apierr.ErrNoLeader) || !apierr.IsNotApplied(err) || !strings.Contains(err.Error(), "cut off from the leader") {
		t.Fatalf("put through a cut-off agent = %v, want ErrNoLeader saying it is cut off, not applied", err)
	}
	if got := fc.fsm.Revision(); got != rev {
		t.Fatalf("put through a cut-off agent proposed: revision %d -> %d", rev, got)
	}

	// In contact, the same gossip view refuses it for what it is.
	fc.cutOff.Store(nil)
	_, err = s.Put(ctx, &pb.BlobPutHeader{Name: "cut", Size: int64(len(data))}, bytes.NewReader(data))
	if !errors.Is(err, ErrNotEnoughShards) {
		t.Fatalf("put with two of three agents down by gossip = %v, want ErrNotEnoughShards", err)
	}
}

// serverPeer is another agent's Shards API in process: its server's
// SyncShards, which it records, and HeldShards.
type serverPeer struct {
	pb.ShardsClient // only SyncShards and HeldShards are called
	srv             *ShardServer

	mu    sync.Mutex
	syncs [][]*pb.ShardRef // the shards each SyncShards named
}

func (p *serverPeer) SyncShards(ctx context.Context, req *pb.SyncShardsRequest, _ ...grpc.CallOption) (*pb.SyncShardsResponse, error) {
	p.mu.Lock()
	p.syncs = append(p.syncs, req.Shards)
	p.mu.Unlock()
	return p.srv.SyncShards(ctx, req)
}

func (p *serverPeer) HeldShards(ctx context.Context, req *pb.HeldShardsRequest, _ ...grpc.CallOption) (*pb.HeldShardsResponse, error) {
	return p.srv.HeldShards(ctx, req)
}

// syncFixture is a 1+0 put of four 4 KiB blocks coordinated by n1, before
// its sync: the put stored blocks 0 and 1 on target and, their first
// attempts on target having failed, blocks 2 and 3 on spare (n1 and n2,
// one of them over serverPeer). As the answers of those failed attempts
// were lost, not the shards, target has blocks 2 and 3 staged too.
type syncFixture struct {
	put           *put
	target, spare *Store
	peer          *serverPeer  // n2's
	fc            *fakeCluster // n1's
}

func newSyncFixture(t *testing.T, target string) *syncFixture {
	t.Helper()
	return newSyncFixtureConfig(t, target, Config{})
}

// newSyncFixtureConfig is newSyncFixture with n1's store configured by cfg.
func newSyncFixtureConfig(t *testing.T, target string, cfg Config) *syncFixture {
	t.Helper()
	s1, fc := newTestStore(t, cfg, "n1", "n1", "n2")
	s2, _ := newTestStore(t, Config{}, "n2", "n1", "n2")
	peer := &serverPeer{srv: s2.ShardServer()}
	fc.peer = func(node string) (pb.ShardsClient, error) {
		if node != "n2" {
			return nil, fmt.Errorf("agent %s: not in this test", node)
		}
		return peer, nil
	}
	id := newBlobID()
	if _, err := fc.apply(&pb.Command{Kind: &pb.Command_BlobPending{BlobPending: &pb.BlobPending{Id: id, Name: "b", Node: "n1"}}}); err != nil {
		t.Fatal(err)
	}
	f := &syncFixture{target: s1, spare: s2, peer: peer, fc: fc}
	spare := "n2"
	if target == "n2" {
		f.target, f.spare, spare = s2, s1, "n1"
	}
	f.put = &put{s: s1, h: &pb.BlobPutHeader{Name: "b"}, sc: Scheme{K: 1, M: 0}, id: id,
		holder: [][]string{{target}, {target}, {spare}, {spare}}}
	for b := range uint32(4) {
		if b >= 2 {
			f.stage(t, f.spare, b)
		}
		f.stage(t, f.target, b)
	}
	return f
}

// stage stages the put's shard of block on s.
func (f *syncFixture) stage(t *testing.T, s *Store, block uint32) {
	t.Helper()
	const bs = MinBlockSize
	payload := bytes.Repeat([]byte{byte(block + 1)}, bs)
	h := shardstore.Header{ID: shardstore.ID{Blob: f.put.id, Block: block}, K: 1, BlockLen: bs, ShardLen: bs, Sum: codec.Checksum(payload), BlockSize: bs}
	if err := s.shards.Stage(h, payload); err != nil {
		t.Fatal(err)
	}
}

// blocksOf lists the blocks refs name, in order.
func blocksOf(refs []*pb.ShardRef) []uint32 {
	out := make([]uint32, len(refs))
	for i, r := range refs {
		out[i] = r.Block
	}
	return out
}

// durable lists the blocks of the put's shard 0 that s holds durably.
func (f *syncFixture) durable(t *testing.T, s *Store) []uint32 {
	t.Helper()
	held, err := s.shards.Held(f.put.id, 0)
	if err != nil && !errors.Is(err, shardstore.ErrNotFound) {
		t.Fatal(err)
	}
	return held.Blocks
}

// A put's sync makes durable on each agent exactly the shards the put
// stored there: not those staged there by attempts the put saw fail and
// sent to a spare, which stay staged for orphan collection; a peer is
// sent their list.
func TestPutSyncCommitsOnEachAgentExactlyTheShardsThePutStoredThere(t *testing.T) {
	for _, target := range []string{"n1", "n2"} {
		t.Run("target "+target, func(t *testing.T) {
			f := newSyncFixture(t, target)
			if err := f.put.sync(context.Background()); err != nil {
				t.Fatalf("sync: %v", err)
			}
			if got := f.durable(t, f.target); !slices.Equal(got, []uint32{0, 1}) {
				t.Errorf("%s holds blocks %v durably, want 0 and 1, the put's there", target, got)
			}
			if got := f.durable(t, f.spare); !slices.Equal(got, []uint32{2, 3}) {
				t.Errorf("the spare holds blocks %v durably, want 2 and 3", got)
			}
			var staged []uint32
			for _, st := range f.target.shards.Staged() {
				staged = append(staged, st.ID.Block)
			}
			if slices.Sort(staged); !slices.Equal(staged, []uint32{2, 3}) {
				t.Errorf("%s has blocks %v staged, want 2 and 3 still staged", target, staged)
			}
			want := []uint32{2, 3} // n2's blocks
			if target == "n2" {
				want = []uint32{0, 1}
			}
			f.peer.mu.Lock()
			defer f.peer.mu.Unlock()
			if len(f.peer.syncs) != 1 || !slices.Equal(blocksOf(f.peer.syncs[0]), want) {
				t.Fatalf("n2 got syncs of %v, want one naming the put's shards there, blocks %v", f.peer.syncs, want)
			}
		})
	}
}

// A put's sync fails an agent that lacks shards the put stored there (it
// restarted and lost its staged files), however many other shards of the
// put it has staged (those of attempts the put saw fail and sent to a
// spare): the put fails, naming the missing shards, rather than commit
// the agent as their holder.
func TestPutSyncFailsAnAgentMissingShardsThePutStoredThere(t *testing.T) {
	for _, target := range []string{"n1", "n2"} {
		t.Run("target "+target, func(t *testing.T) {
			f := newSyncFixture(t, target)
			f.target.shards.DiscardStagedPart(f.put.id, 0) // the restart
			f.stage(t, f.target, 2)
			f.stage(t, f.target, 3)
			err := f.put.sync(context.Background())
			if !errors.Is(err, ErrNotEnoughShards) || !strings.Contains(err.Error(), "agent "+target) ||
				!strings.Contains(err.Error(), "missing: block 0 shard 0, block 1 shard 0") {
				t.Fatalf("sync: %v, want ErrNotEnoughShards naming %s and its missing shards, blocks 0 and 1 of shard 0", err, target)
			}
		})
	}
}

// A put's sync gives up on an agent that answers gossip but does not
// make its shards durable (its disk hangs in fsync) once ShardTimeout and
// a second per MiB of its shards have passed, even when the put's client
// set no deadline: the put goes on without that agent's shards, and the
// error names the agent and says to check its disk.
func TestPutSyncGivesUpOnAnAgentWhoseDiskHangs(t *testing.T) {
	f := newSyncFixtureConfig(t, "n2", Config{ShardTimeout: 200 * time.Millisecond})
	for range f.put.holder {
		f.put.blocks = append(f.put.blocks, &pb.BlobBlock{Len: MinBlockSize})
	}
	f.fc.peer = func(string) (pb.ShardsClient, error) { return hangingPeer{delay: -1}, nil }
	done := make(chan error, 1)
	go func() { done <- f.put.sync(context.Background()) }()
	var err error
	testwait.For(t, 10*time.Second, "the put's sync to give up on n2, whose disk hangs", func() bool {
		select {
		case err = <-done:
			return true
		default:
			return false
		}
	})
	if !errors.Is(err, ErrNotEnoughShards) || !strings.Contains(err.Error(), "agent n2") || !strings.Contains(err.Error(), "check the disk of n2") {
		t.Fatalf("sync with n2's disk hanging: %v; want ErrNotEnoughShards naming n2 and its disk", err)
	}
}

// A put gives up on its coordinator's own shard disk when it does not
// make the put's shards durable (it hangs in fsync) once ShardTimeout
// and a second per MiB of those shards have passed, even when the put's
// client set no deadline: the put fails, the error naming the disk, and
// commits nothing. Its abort leaves the agent's shards to the commit,
// which holds them (a delete would wait for it too); once the disk
// answers again the commit deletes them: nothing of the put stays.
func TestPutGivesUpOnItsOwnDiskWhenItHangs(t *testing.T) {
	var hung atomic.Bool
	hang := make(chan struct{})
	release := func() {
		if hung.CompareAndSwap(true, false) {
			close(hang)
		}
	}
	opts := shardstore.Options{SyncDelay: func() time.Duration {
		if hung.Load() {
			<-hang
		}
		return 0
	}}
	cfg := Config{ShardTimeout: 200 * time.Millisecond, BlockSize: 64 << 10, InlineMax: 1024}
	s, fc := newTestStoreOpts(t, cfg, testlog.New(t, "n1"), opts, "n1", "n1")
	t.Cleanup(release) // before the store closes, which waits for the commit
	hung.Store(true)
	done := make(chan error, 1)
	go func() {
		_, err := s.Put(context.Background(), &pb.BlobPutHeader{Name: "b"}, bytes.NewReader(make([]byte, 4*cfg.BlockSize)))
		done <- err
	}()
	var err error
	testwait.For(t, 10*time.Second, "the put to give up on this agent's own disk, which hangs", func() bool {
		select {
		case err = <-done:
			return true
		default:
			return false
		}
	})
	dir := s.Shards().Dir()
	if !errors.Is(err, ErrNotEnoughShards) || !strings.Contains(err.Error(), "shard disk ("+dir+")") || !strings.Contains(err.Error(), "check that disk") {
		t.Fatalf("put with this agent's disk hanging: %v; want ErrNotEnoughShards naming %s", err, dir)
	}
	if b := fc.Meta().Blob("b"); b != nil || len(fc.Meta().PendingBlobs()) != 0 {
		t.Fatalf("after the failed put: blob %v, pending %v; want neither", b, fc.Meta().PendingBlobs())
	}
	if _, shards := s.Shards().Usage(); shards == 0 {
		t.Fatal("the put's shards are gone while the commit holding them still hangs")
	}
	release()
	testwait.For(t, 10*time.Second, "the commit that ended after the put failed to delete the put's shards", func() bool {
		bytes, shards := s.Shards().Usage()
		return bytes == 0 && shards == 0
	})
}
