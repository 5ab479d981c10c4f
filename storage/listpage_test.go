package storage

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/internal/testlog"
	"github.com/zrpcio/zrpc/storage/shardstore"
)

// askingCluster is a fakeCluster that records the blob ids each question
// to the leader's repair status names.
type askingCluster struct {
	*fakeCluster
	mu    sync.Mutex
	asked [][]string
}

func (c *askingCluster) Leader() LeaderAPI { return askingLeader{c.fakeCluster.Leader(), c} }

func (c *askingCluster) questions() [][]string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.asked)
}

type askingLeader struct {
	LeaderAPI
	c *askingCluster
}

func (l askingLeader) RepairStatus(ctx context.Context, req *pb.RepairStatusRequest) (*pb.RepairStatusResponse, error) {
	l.c.mu.Lock()
	l.c.asked = append(l.c.asked, append(slices.Clone(req.BlobIds), req.BlobId))
	l.c.mu.Unlock()
	return l.LeaderAPI.RepairStatus(ctx, req)
}

// A page of the blob list judges the health of its own blobs only, and
// asks the leader about their corrupt shards only: listing a page of a
// large store costs the page, not the store. total counts every blob
// under the prefix that keep accepts.
func TestListPageJudgesOnlyItsBlobs(t *testing.T) {
	fc := &askingCluster{fakeCluster: newFakeCluster("n1")}
	fc.setNodes(t, true, "n1", "n2", "n3")
	shards, err := shardstore.Open(t.TempDir(), shardstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	s := New(Config{}, fc, shards, nil, testlog.New(t, "n1"))
	fc.store = s
	t.Cleanup(s.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	ids := map[string]string{}
	for i := range 40 {
		name, id := fmt.Sprintf("p/%03d", i), fmt.Sprintf("%032x", i+1)
		b := &pb.Blob{Name: name, Id: id, Size: 100, DataShards: 2, ParityShards: 1, BlockSize: 4096}
		b.Blocks = []*pb.BlobBlock{{Len: 100, Sums: make([]uint32, 3), Holders: []uint32{b.HolderRef("n1"), b.HolderRef("n2"), b.HolderRef("n3")}}}
		for _, cmd := range []*pb.Command{
			{Kind: &pb.Command_BlobPending{BlobPending: &pb.BlobPending{Id: id, Name: name, Node: "n1"}}},
			{Kind: &pb.Command_BlobCommit{BlobCommit: &pb.BlobCommit{Blob: b}}},
		} {
			if _, err := fc.apply(cmd); err != nil {
				t.Fatal(err)
			}
		}
		ids[name] = id
	}
	if _, err := fc.apply(&pb.Command{Kind: &pb.Command_BlobCommit{BlobCommit: &pb.BlobCommit{Blob: &pb.Blob{Name: "q", Id: "inline", Size: 1, Inline: []byte{1}}}}}); err != nil {
		t.Fatal(err)
	}
	// Shard 1 of p/013 is corrupt on n2.
	if err := s.LocalLeader().ReportShards(ctx, &pb.ReportShardsRequest{Corrupt: []*pb.ShardRef{{BlobId: ids["p/013"], Index: 1, Node: "n2"}}}); err != nil {
		t.Fatal(err)
	}

	odd := func(name string) bool { return name[len(name)-1]%2 == 1 }
	page, total, rev, err := s.ListPage(ctx, "p/", "p/010", 3, odd, pb.Consistency_STALE)
	if err != nil {
		t.Fatal(err)
	}
	var names, health []string
	for _, b := range page {
		names, health = append(names, b.Name), append(health, b.Health)
	}
	if !slices.Equal(names, []string{"p/011", "p/013", "p/015"}) || total != 20 || rev != fc.fsm.Revision() {
		t.Fatalf("page %v, total %d, rev %d; want p/011, p/013, p/015 of 20 at %d", names, total, rev, fc.fsm.Revision())
	}
	if !slices.Equal(health, []string{HealthHealthy, HealthDegraded, HealthHealthy}) {
		t.Errorf("healths %v, want p/013 degraded (a corrupt shard), the others healthy", health)
	}
	asked := fc.questions()
	if len(asked) != 1 || !slices.Equal(asked[0], []string{ids["p/011"], ids["p/013"], ids["p/015"], ""}) {
		t.Errorf("the leader was asked about %v, want the page's 3 blobs in one question", asked)
	}

	// List, for the gRPC API, still summarises every blob under the prefix.
	all, _, err := s.List(ctx, "", pb.Consistency_STALE)
	if err != nil || len(all) != 41 || all[13].Health != HealthDegraded || !all[40].Inline {
		t.Errorf("List: %d blobs (%v), want 41 with p/013 degraded and q inline", len(all), err)
	}

	if _, _, _, err := s.ListPage(ctx, "", "", 10, nil, -1); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("ListPage with consistency -1: %v, want InvalidArgument", err)
	}
	fc.leaderless.Store(true)
	noRead := fmt.Errorf("%w: this agent is still replaying its Raft log after a restart", ErrStaleRead)
	fc.readCheck.Store(&noRead)
	if _, _, _, err := s.ListPage(ctx, "", "", 10, nil, pb.Consistency_DEFAULT); !errors.Is(err, ErrStaleRead) {
		t.Error("ListPage DEFAULT from a replica that fails the read check, without a leader: no error")
	}
	if page, total, _, err := s.ListPage(ctx, "", "p/038", 10, nil, pb.Consistency_STALE); err != nil || len(page) != 2 || total != 41 {
		t.Errorf("ListPage STALE without a leader: %d blobs of %d (%v), want p/039 and q of 41", len(page), total, err)
	}
}
