package storage

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/zrpcio/zrpc/api/apierr"
	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/internal/testlog"
	"github.com/zrpcio/zrpc/storage/codec"
	"github.com/zrpcio/zrpc/storage/shardstore"
)

// agentMessageLimit is the largest request an agent's gRPC server takes
// (grpcapi.MaxRecvMessage, which this package cannot import): a larger
// Referenced request to a remote leader fails with ResourceExhausted.
const agentMessageLimit = MaxBlockSize + 1<<20

// leaderCluster is an agent's fakeCluster whose leader's API is another
// than its own store's: another agent's store, whose replica is ahead of
// this agent's, or a stub.
type leaderCluster struct {
	*fakeCluster
	leader LeaderAPI
}

func (c leaderCluster) Leader() LeaderAPI { return c.leader }

// ledBy makes s, a newTestStore over fc not started yet, ask leader what
// only the leader answers.
func ledBy(s *Store, fc *fakeCluster, leader LeaderAPI) { s.cluster = leaderCluster{fc, leader} }

// referencedStub is the leader's API with its Referenced requests
// recorded, and answered by answer (nil: passed on to the leader).
type referencedStub struct {
	LeaderAPI
	// answer gets the call's number (from 1) and the request, and may
	// ask the leader with ask.
	answer func(call int, req *pb.ReferencedRequest, ask func() ([]bool, error)) ([]bool, error)
	asked  []*pb.ReferencedRequest
}

func (l *referencedStub) Referenced(ctx context.Context, req *pb.ReferencedRequest) ([]bool, error) {
	l.asked = append(l.asked, req)
	ask := func() ([]bool, error) { return l.LeaderAPI.Referenced(ctx, req) }
	if l.answer == nil {
		return ask()
	}
	return l.answer(len(l.asked), req, ask)
}

// stageOrphans stores, as one part file per blob, blocks orphan shards
// (index 0, no parity, tiny) of each of blobs, which no blob's metadata
// refers to.
func stageOrphans(t testing.TB, s *Store, blocks int, blobs ...string) {
	t.Helper()
	const k, blockLen = 200, MinBlockSize
	payload := make([]byte, codec.ShardLen(blockLen, k))
	sum := codec.Checksum(payload)
	for _, id := range blobs {
		for b := range uint32(blocks) {
			h := shardstore.Header{ID: shardstore.ID{Blob: id, Block: b}, K: k, BlockLen: blockLen, ShardLen: uint32(len(payload)), Sum: sum, BlockSize: blockLen}
			if err := s.shards.StageSummed(h, payload); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := s.shards.CommitStaged(id); err != nil {
			t.Fatal(err)
		}
	}
}

// heldShards lists the shards s's part files hold.
func heldShards(t testing.TB, s *Store) map[shardstore.ID]bool {
	t.Helper()
	held := make(map[shardstore.ID]bool)
	if err := s.shards.WalkStamped(func(id shardstore.ID, _ shardstore.Stamp) error {
		held[id] = true
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return held
}

// TestOrphanCollectionCollectsMoreOrphansThanOneRequestCanName: an agent
// back after repair moved its shards away holds 250,000 orphan shards,
// more than one Referenced request to the leader can name within the
// agents' message limit. One pass asks in requests below it and collects
// them all.
func TestOrphanCollectionCollectsMoreOrphansThanOneRequestCanName(t *testing.T) {
	s, fc := newTestStore(t, Config{OrphanGrace: time.Minute}, "n1", "n1", "n2")
	leader := &referencedStub{LeaderAPI: fc.Leader(), answer: func(_ int, req *pb.ReferencedRequest, ask func() ([]bool, error)) ([]bool, error) {
		if n := proto.Size(req); n > agentMessageLimit {
			return nil, status.Errorf(codes.ResourceExhausted, "grpc: received message larger than max (%d vs. %d)", n, agentMessageLimit)
		}
		return ask()
	}}
	ledBy(s, fc, leader)
	const blocks = 125_000
	blobs := []string{strings.Repeat("ab", 16), strings.Repeat("cd", 16)}
	stageOrphans(t, s, blocks, blobs...)
	all := &pb.ReferencedRequest{Node: "n1"}
	for id := range heldShards(t, s) {
		all.Shards = append(all.Shards, shardRef(id))
	}
	if n := proto.Size(all); n <= agentMessageLimit {
		t.Fatalf("one request naming every orphan has %d bytes, within the %d-byte limit: the test needs more orphans", n, agentMessageLimit)
	}

	if n := s.CollectOrphans(context.Background(), time.Now().Add(time.Hour)); n != len(blobs)*blocks {
		t.Errorf("orphan collection deleted %d shards in one pass, want all %d", n, len(blobs)*blocks)
	}
	if _, left := s.shards.Usage(); left != 0 {
		t.Errorf("%d orphan shards left after the pass", left)
	}
	for i, req := range leader.asked {
		if len(req.Shards) > maxReferencedShards {
			t.Errorf("request %d to the leader named %d shards, more than %d", i+1, len(req.Shards), maxReferencedShards)
		}
	}
}

// TestReferencedRequestsStayFarBelowTheMessageLimit: a full Referenced
// request of the longest blob ids and the largest block and index
// numbers, with the probe of bad part files, is at most an eighth of the
// agents' message limit.
func TestReferencedRequestsStayFarBelowTheMessageLimit(t *testing.T) {
	req := &pb.ReferencedRequest{Node: strings.Repeat("n", 255), Shards: []*pb.ShardRef{{Block: anyBlock}}}
	for range maxReferencedShards {
		req.Shards = append(req.Shards, &pb.ShardRef{BlobId: strings.Repeat("f", 64), Block: anyBlock, Index: 255})
	}
	if n := proto.Size(req); n > agentMessageLimit/8 {
		t.Fatalf("a Referenced request of %d shards has %d bytes, more than an eighth of the %d-byte message limit", len(req.Shards), n, agentMessageLimit)
	}
}

// TestOrphanCollectionKeepsTheShardsOfARequestTheLeaderDidNotAnswer: the
// leader is asked about 10,341 orphans in three requests, the part files
// across their bounds. A request it does not answer, or answers for
// fewer shards than asked, keeps exactly the shards it named; the others'
// go. With no leader answering, the pass stops asking after two requests
// and keeps everything. The log says how many were kept and why, and a
// later pass collects them.
func TestOrphanCollectionKeepsTheShardsOfARequestTheLeaderDidNotAnswer(t *testing.T) {
	refused := func(call int) ([]bool, error) {
		return nil, status.Errorf(codes.Unavailable, "request %d refused by the test", call)
	}
	cases := []struct {
		name  string
		fails func(call int) bool
		// answer is what a failing call gets.
		answer    func(call int, ask func() ([]bool, error)) ([]bool, error)
		wantCalls int
		wantErr   string // in the log
	}{
		{"the second request refused", func(call int) bool { return call == 2 },
			func(call int, _ func() ([]bool, error)) ([]bool, error) { return refused(call) },
			3, "request 2 refused by the test"},
		{"the first request answered for fewer shards", func(call int) bool { return call == 1 },
			func(_ int, ask func() ([]bool, error)) ([]bool, error) {
				out, err := ask()
				return out[:len(out)-1], err
			},
			3, fmt.Sprintf("the leader answered for %d shards, not %d", maxReferencedShards-1, maxReferencedShards)},
		{"no leader answering", func(int) bool { return true },
			func(int, func() ([]bool, error)) ([]bool, error) {
				return nil, fmt.Errorf("%w: the test has none", apierr.ErrNoLeader)
			},
			maxReferencedFailures, "the test has none"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var logs testlog.Buffer
			s, fc := newTestStoreLog(t, Config{OrphanGrace: time.Minute}, slog.New(slog.NewTextHandler(&logs, nil)), "n1", "n1", "n2")
			failing := true
			leader := &referencedStub{LeaderAPI: fc.Leader(), answer: func(call int, _ *pb.ReferencedRequest, ask func() ([]bool, error)) ([]bool, error) {
				if failing && tc.fails(call) {
					return tc.answer(call, ask)
				}
				return ask()
			}}
			ledBy(s, fc, leader)
			const blocks = 3447 // each part file's blocks span two requests
			stageOrphans(t, s, blocks, strings.Repeat("ab", 16), strings.Repeat("cd", 16), strings.Repeat("ef", 16))
			orphans := heldShards(t, s)

			n := s.CollectOrphans(context.Background(), time.Now().Add(time.Hour))
			if len(leader.asked) != tc.wantCalls {
				t.Fatalf("the pass made %d requests to the leader, want %d", len(leader.asked), tc.wantCalls)
			}
			confirmed := make(map[shardstore.ID]bool)
			for i, req := range leader.asked {
				if tc.fails(i + 1) {
					continue
				}
				for _, ref := range req.Shards {
					confirmed[shardID(ref)] = true
				}
			}
			held := heldShards(t, s)
			for id := range orphans {
				switch {
				case confirmed[id] && held[id]:
					t.Fatalf("shard %s, confirmed an orphan by the leader, was not deleted", id)
				case !confirmed[id] && !held[id]:
					t.Fatalf("shard %s, not confirmed an orphan by the leader, was deleted", id)
				}
			}
			kept := len(orphans) - len(confirmed)
			if n != len(confirmed) {
				t.Errorf("the pass says it deleted %d shards; the leader confirmed %d", n, len(confirmed))
			}
			if want := fmt.Sprintf("kept=%d ", kept); !strings.Contains(logs.String(), want) || !strings.Contains(logs.String(), tc.wantErr) {
				t.Errorf("the log does not say %q and why (%q):\n%s", want, tc.wantErr, logs.String())
			}

			failing = false
			if n := s.CollectOrphans(context.Background(), time.Now().Add(time.Hour)); n != kept {
				t.Errorf("the next pass, the leader answering, deleted %d shards; want the %d kept", n, kept)
			}
			if _, left := s.shards.Usage(); left != 0 {
				t.Errorf("%d orphan shards left after the next pass", left)
			}
		})
	}
}
