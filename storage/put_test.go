package storage

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/zrpcio/zrpc/api/apierr"
	pb "github.com/zrpcio/zrpc/api/zrpcpb"
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
