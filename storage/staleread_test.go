package storage

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
)

// TestBlobReadsDoNotCallAMissingBlobGoneFromAReplicaThatCannotTell: with
// no leader to ask and a replica that fails the registry's DEFAULT read
// check (a restarted agent still replaying its log), a blob the replica
// lacks is not "not found" but a stale read, and so is a list; STALE
// answers from the replica as it is; a blob the replica holds is served
// either way; CONSISTENT needs a leader; an unknown consistency is refused.
func TestBlobReadsDoNotCallAMissingBlobGoneFromAReplicaThatCannotTell(t *testing.T) {
	s, fc := newTestStore(t, Config{}, "n1", "n1", "n2", "n3")
	commitBlob(t, fc, "known", 2, 1, "n1", "n2", "n3")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	const (
		dflt   = pb.Consistency_DEFAULT
		stale  = pb.Consistency_STALE
		strict = pb.Consistency_CONSISTENT
	)

	// With a leader, a missing blob is simply not found.
	if _, err := s.Stat(ctx, "missing", 0, dflt); !errors.Is(err, ErrNotFound) {
		t.Fatalf("stat of a missing blob with a leader: %v, want NotFound", err)
	}

	fc.leaderless.Store(true)
	replaying := fmt.Errorf("%w: this agent is still replaying its Raft log after a restart", ErrStaleRead)
	fc.readCheck.Store(&replaying)
	for _, c := range []pb.Consistency{dflt, strict} {
		if _, err := s.Stat(ctx, "missing", 0, c); errors.Is(err, ErrNotFound) || err == nil {
			t.Errorf("stat %v of a blob the replica lacks, no leader: %v; want an error other than NotFound", c, err)
		}
		if _, _, err := s.Locate(ctx, "missing", 0, c); errors.Is(err, ErrNotFound) || err == nil {
			t.Errorf("locate %v of a blob the replica lacks, no leader: %v; want an error other than NotFound", c, err)
		}
		if list, _, err := s.List(ctx, "", c); err == nil {
			t.Errorf("list %v, no leader, replica failing its read check: %v, want an error", c, list)
		}
	}
	if _, err := s.Stat(ctx, "missing", 0, dflt); !errors.Is(err, ErrStaleRead) {
		t.Errorf("stat of a blob the replica lacks, replica replaying: %v, want the read check's stale read", err)
	}
	if _, err := s.Stat(ctx, "missing", 0, stale); !errors.Is(err, ErrNotFound) {
		t.Errorf("STALE stat of a blob the replica lacks: %v, want NotFound", err)
	}
	if list, _, err := s.List(ctx, "", stale); err != nil || len(list) != 1 || list[0].Name != "known" {
		t.Errorf("STALE list: %v (%v), want the replica's one blob", list, err)
	}
	if st, err := s.Stat(ctx, "known", 0, dflt); err != nil || st.Blob.GetName() != "known" {
		t.Errorf("stat of a blob the replica holds, no leader: %v (%v), want it", st, err)
	}
	if _, err := s.Stat(ctx, "known", 0, strict); err == nil {
		t.Error("CONSISTENT stat with no leader succeeded; want an error")
	}

	// No leader, but a replica the read check vouches for (it heard from
	// a leader lately): a missing blob is not found again.
	fc.readCheck.Store(nil)
	if _, err := s.Stat(ctx, "missing", 0, dflt); !errors.Is(err, ErrNotFound) {
		t.Errorf("stat of a missing blob, no leader, recent replica: %v, want NotFound", err)
	}
	if list, _, err := s.List(ctx, "", dflt); err != nil || len(list) != 1 {
		t.Errorf("list, no leader, recent replica: %v (%v), want the one blob", list, err)
	}

	for _, call := range []func() error{
		func() error { _, err := s.Stat(ctx, "known", 0, 7); return err },
		func() error { _, _, err := s.List(ctx, "", -1); return err },
		func() error { _, _, err := s.Locate(ctx, "known", 0, 3); return err },
	} {
		if err := call(); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("a read with an unknown consistency: %v, want InvalidArgument", err)
		}
	}
}
