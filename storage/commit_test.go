package storage

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
)

// errNoAnswer is a proposal's failure that says nothing about whether it
// was applied: the connection to the leader broke, the leader changed.
var errNoAnswer = errors.New("connection to the leader reset")

// TestPutReportsWhatHappenedToItsCommit: whatever happens to the answer to
// a put's commit, the put never says it failed while the blob is stored:
// it waits for the outcome past its caller's end, asks again, settles it
// by aborting the put, or says the outcome is unknown and stat shows the
// put as unfinished.
func TestPutReportsWhatHappenedToItsCommit(t *testing.T) {
	data := bytes.Repeat([]byte("zrpc"), 40<<10) // 160 KiB: not inline
	isCommit := func(cmd *pb.Command) bool { return cmd.GetBlobCommit() != nil }
	cases := []struct {
		name string
		// propose is the fake leader: it may apply the command or not,
		// answer or not. cancel ends the put's caller.
		propose     func(ctx context.Context, cmd *pb.Command, apply func() (uint64, error), cancel func(), calls int) (uint64, error)
		wantStored  bool
		wantUnknown bool
	}{{
		name: "caller goes away once the commit is proposed",
		propose: func(ctx context.Context, cmd *pb.Command, apply func() (uint64, error), cancel func(), _ int) (uint64, error) {
			if isCommit(cmd) {
				cancel()
			}
			rev, err := apply()
			if ctx.Err() != nil {
				return 0, ctx.Err()
			}
			return rev, err
		},
		wantStored: true,
	}, {
		name: "first answer to the commit lost",
		propose: func(_ context.Context, cmd *pb.Command, apply func() (uint64, error), _ func(), calls int) (uint64, error) {
			rev, err := apply()
			if isCommit(cmd) && calls == 1 {
				return 0, errNoAnswer
			}
			return rev, err
		},
		wantStored: true,
	}, {
		name: "every answer to the commit lost, commit applied",
		propose: func(_ context.Context, cmd *pb.Command, apply func() (uint64, error), _ func(), _ int) (uint64, error) {
			rev, err := apply()
			if isCommit(cmd) {
				return 0, errNoAnswer
			}
			return rev, err
		},
		wantStored: true,
	}, {
		name: "commit never applied, never answered",
		propose: func(_ context.Context, cmd *pb.Command, apply func() (uint64, error), _ func(), _ int) (uint64, error) {
			if isCommit(cmd) {
				return 0, errNoAnswer
			}
			return apply()
		},
	}, {
		name: "neither commit nor abort answered",
		propose: func(_ context.Context, cmd *pb.Command, apply func() (uint64, error), _ func(), _ int) (uint64, error) {
			if isCommit(cmd) || cmd.GetBlobAbort() != nil {
				return 0, errNoAnswer
			}
			return apply()
		},
		wantUnknown: true,
	}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s, fc := newTestStore(t, Config{}, "n1", "n1")
			s.commitWait = 300 * time.Millisecond
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			calls := 0
			fc.intercept = func(pctx context.Context, cmd *pb.Command, apply func() (uint64, error)) (uint64, error) {
				if isCommit(cmd) {
					calls++
				}
				return tc.propose(pctx, cmd, apply, cancel, calls)
			}
			res, err := s.Put(ctx, &pb.BlobPutHeader{Name: "answer"}, bytes.NewReader(data))
			stored := fc.fsm.Blob("answer") != nil
			switch {
			case tc.wantUnknown:
				if !errors.Is(err, ErrOutcomeUnknown) {
					t.Fatalf("put: %v; want ErrOutcomeUnknown", err)
				}
				fc.intercept = nil
				if _, serr := s.Stat(context.Background(), "answer", 0, pb.Consistency_DEFAULT); !errors.Is(serr, ErrNotFound) || !strings.Contains(serr.Error(), "has not finished") {
					t.Fatalf("stat after an unknown outcome: %v; want NotFound saying the put has not finished", serr)
				}
			case tc.wantStored:
				if err != nil || !stored {
					t.Fatalf("put: %v, blob stored: %v; want success and the blob stored", err, stored)
				}
				if res.Blob.GetId() != fc.fsm.Blob("answer").Id {
					t.Fatalf("put answered blob %v, the registry holds %v", res.Blob, fc.fsm.Blob("answer"))
				}
				var got []byte
				if err := s.Get(context.Background(), &pb.BlobGetRequest{Name: "answer"}, func(r *pb.BlobGetResponse) error {
					got = append(got, r.Chunk...)
					return nil
				}); err != nil || !bytes.Equal(got, data) {
					t.Fatalf("get of the stored blob: %d bytes, %v", len(got), err)
				}
			default:
				if err == nil || errors.Is(err, ErrOutcomeUnknown) || stored {
					t.Fatalf("put: %v, blob stored: %v; want a plain failure and no blob", err, stored)
				}
				if len(fc.fsm.PendingBlobs()) != 0 {
					t.Fatal("a failed put is still pending")
				}
				if _, n := s.shards.Usage(); n != 0 {
					t.Fatalf("a failed put left %d shards", n)
				}
			}
		})
	}
}

// TestInlinePutAsksAgainWhenItsCommitsAnswerIsLost: a small blob's commit
// whose answer was lost is proposed again under the same request id, and
// the registry's answer (it was applied once) makes the put succeed.
func TestInlinePutAsksAgainWhenItsCommitsAnswerIsLost(t *testing.T) {
	s, fc := newTestStore(t, Config{}, "n1", "n1")
	lost := false
	fc.intercept = func(_ context.Context, cmd *pb.Command, apply func() (uint64, error)) (uint64, error) {
		rev, err := apply()
		if cmd.GetBlobCommit() != nil && !lost {
			lost = true
			return 0, errNoAnswer
		}
		return rev, err
	}
	res, err := s.Put(context.Background(), &pb.BlobPutHeader{Name: "small"}, strings.NewReader("tiny"))
	if err != nil || fc.fsm.Blob("small") == nil || res.Blob.GetId() != fc.fsm.Blob("small").Id {
		t.Fatalf("put: %v, stored %v; want success", err, fc.fsm.Blob("small"))
	}
}

// TestPutCommitRetryNotRecognisedStillSucceeds: when the registry no longer
// recognises a retried commit by its request id, the retry is refused as
// already committed; the put sees its own blob and succeeds.
func TestPutCommitRetryNotRecognisedStillSucceeds(t *testing.T) {
	s, fc := newTestStore(t, Config{}, "n1", "n1")
	calls := 0
	fc.intercept = func(_ context.Context, cmd *pb.Command, apply func() (uint64, error)) (uint64, error) {
		if cmd.GetBlobCommit() == nil {
			return apply()
		}
		calls++
		if calls == 1 {
			apply()
			return 0, errNoAnswer
		}
		retry := proto.Clone(cmd).(*pb.Command)
		retry.RequestId = "forgotten"
		return fc.apply(retry)
	}
	res, err := s.Put(context.Background(), &pb.BlobPutHeader{Name: "twice"}, bytes.NewReader(bytes.Repeat([]byte{1}, 100<<10)))
	b := fc.fsm.Blob("twice")
	if err != nil || b == nil || res.Revision != b.CreateRevision {
		t.Fatalf("put: %v, stored %v; want success at the commit's revision", err, b)
	}
}

// TestPutAnswersWhenItsReplicaHasNotAppliedTheCommit: the leader applied
// the commit but this agent's replica has not (a slow disk, a lagging
// follower): the put succeeds and describes the blob it committed.
func TestPutAnswersWhenItsReplicaHasNotAppliedTheCommit(t *testing.T) {
	s, fc := newTestStore(t, Config{}, "n1", "n1")
	const leaderRev = 1000
	fc.intercept = func(_ context.Context, cmd *pb.Command, apply func() (uint64, error)) (uint64, error) {
		if cmd.GetBlobCommit() != nil {
			return leaderRev, nil // committed elsewhere; not here yet
		}
		return apply()
	}
	res, err := s.Put(context.Background(), &pb.BlobPutHeader{Name: "lagging"}, strings.NewReader("tiny"))
	if err != nil {
		t.Fatalf("put: %v", err)
	}
	if res.Blob == nil || res.Blob.Name != "lagging" || res.Blob.CreateRevision != leaderRev || res.Revision != leaderRev {
		t.Fatalf("put answered blob %v at revision %d; want blob lagging created at %d", res.Blob, res.Revision, leaderRev)
	}
}
