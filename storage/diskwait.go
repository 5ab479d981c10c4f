package storage

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
)

// The calls of this agent's shard store on the put, get, delete and
// repair paths, and those peers make, are waited for within a bound
// (aside): the shard store does not heed a context, and a disk that hangs
// (NFS gone, a dying drive) would otherwise hold each caller, and a
// goroutine, for as long as it hangs.

// maxStuckDiskCalls bounds the calls of this agent's shard store that
// their callers stopped waiting for and that have not ended: each holds a
// goroutine, and a write's its payload, for as long as the disk hangs.
// Past it, calls are refused at once (diskHungError) until some end, so
// that callers retrying on a hung disk, a peer's or a stranger's, cannot
// pile up goroutines without bound.
const maxStuckDiskCalls = 64

// diskHungError refuses a call of this agent's shard store while
// maxStuckDiskCalls earlier calls, waited for no longer, have not ended:
// the disk hangs. It is Unavailable to gRPC: the caller goes to another
// agent.
type diskHungError struct {
	Dir   string // the shard directory
	Stuck int64  // calls not ended
}

func (e *diskHungError) Error() string {
	return fmt.Sprintf("this agent's shard disk (%s) has not ended %d calls that their callers stopped waiting for; it hangs, and takes no more calls until they end: "+
		"check that disk (dmesg, iostat), and restart the agent if it stays stuck", e.Dir, e.Stuck)
}

// GRPCStatus makes the error Unavailable.
func (e *diskHungError) GRPCStatus() *status.Status { return status.New(codes.Unavailable, e.Error()) }

// diskHung is a *diskHungError when maxStuckDiskCalls calls of the shard
// store waited for no longer have not ended, else nil.
func (s *Store) diskHung() error {
	if n := s.stuck.Load(); n >= maxStuckDiskCalls {
		return &diskHungError{Dir: s.shards.Dir(), Stuck: n}
	}
	return nil
}

// errCommitAbandoned: a caller stopped waiting for this agent's own
// shard store to make shards durable (its disk may hang in fsync). The
// commit, which cannot be called off, goes on aside.
var errCommitAbandoned = errors.New("stopped waiting for this agent's shard disk to make shards durable")

// commitAside runs commit, a commit of this agent's staged shards (the
// shard store does not heed a context), aside and waits for it until ctx
// ends. One waited for no longer fails with errCommitAbandoned wrapping
// ctx's error; late, when not nil, then runs with the commit's outcome
// once it returns. The store's Close waits for the commit.
func (s *Store) commitAside(ctx context.Context, commit func() (int, error), late func(int, error)) (int, error) {
	return s.aside(ctx, errCommitAbandoned, commit, late)
}

// aside runs work, a call of this agent's shard store, aside and waits
// for it until ctx ends. One waited for no longer fails with abandoned
// wrapping ctx's error, and is counted when ctx's deadline passed (its
// caller going away says nothing of the disk); late, when not nil, then
// runs with work's outcome once it returns. The store's Close waits for
// work. While maxStuckDiskCalls calls waited for no longer have not
// ended, work is not started: aside fails at once with a
// *diskHungError.
func (s *Store) aside(ctx context.Context, abandoned error, work func() (int, error), late func(int, error)) (int, error) {
	type result struct {
		n   int
		err error
	}
	done := make(chan result)
	gaveUp := make(chan struct{})
	if err := s.diskHung(); err != nil {
		return 0, err
	}
	if !s.track() {
		return 0, errClosed
	}
	go func() {
		defer s.wg.Done()
		n, err := work()
		select {
		case done <- result{n, err}:
		case <-gaveUp:
			s.stuck.Add(-1)
			if late != nil {
				late(n, err)
			}
		}
	}()
	select {
	case r := <-done:
		return r.n, r.err
	case <-ctx.Done():
		s.stuck.Add(1)
		close(gaveUp)
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			s.metrics.abandonedDiskWait(abandoned)
		}
		return 0, fmt.Errorf("%w: %w", abandoned, ctx.Err())
	}
}

// syncWithin is how long an agent is given to make size bytes of staged
// shards durable: ShardTimeout, and a second for every syncMinRate bytes.
func (s *Store) syncWithin(size int64) time.Duration {
	return s.cfg.ShardTimeout + time.Duration(float64(size)/syncMinRate*float64(time.Second))
}

// syncBounded makes the staged shards refs of blob id, size bytes in all,
// durable on node within syncWithin(size) and returns how many of them
// were staged there: on this agent through commitAside (late, when set,
// runs once a commit it stopped waiting for ends), on a peer through
// syncShards. hung reports that the bound, not ctx, ended it; err then
// wraps the wait's error, and diskHangs says what to check.
func (s *Store) syncBounded(ctx context.Context, node, id string, refs []*pb.ShardRef, size int64, late func(int, error)) (n int, bound time.Duration, hung bool, err error) {
	bound = s.syncWithin(size)
	sctx, cancel := context.WithTimeout(ctx, bound)
	defer cancel()
	if node == s.cluster.Self() {
		n, err = s.commitAside(sctx, func() (int, error) { return s.commitStaged(id, refs) }, late)
		if !errors.Is(err, errCommitAbandoned) {
			err = mapShardErr(err)
		}
	} else {
		n, err = s.syncShards(sctx, node, id, refs)
	}
	hung = err != nil && ctx.Err() == nil && errors.Is(sctx.Err(), context.DeadlineExceeded)
	return n, bound, hung, err
}

// diskHangs says that node did not make size bytes of what durable within
// bound, and what to check: this agent's shard disk, or the disk of an
// agent that still answers.
func (s *Store) diskHangs(node, what string, size int64, bound time.Duration) string {
	within := fmt.Sprintf("%s of %s durable within %s (%s, and a second per %s)",
		sizeString(uint64(size)), what, bound, s.cfg.ShardTimeout, sizeString(syncMinRate))
	if node == s.cluster.Self() {
		return fmt.Sprintf("this agent's shard disk (%s) did not make %s: it may hang in fsync; check that disk (dmesg, iostat), and restart the agent if it stays stuck",
			s.shards.Dir(), within)
	}
	return fmt.Sprintf("agent %s did not make %s: its disk may hang in fsync while the agent still answers; check the disk of %s (dmesg, iostat), and restart the agent if it stays stuck",
		node, within, node)
}
