package registry

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/zrpcio/zrpc/bench/internal/proc"
)

// Failover timing: writes run failoverPre before the failure, and at most
// failoverPost after it; once a write after it has succeeded they go on
// for failoverTail.
const (
	failoverRate  = 100
	failoverPre   = 2 * time.Second
	failoverPost  = 20 * time.Second
	failoverTail  = time.Second
	failoverWrite = 5 * time.Second // one write's bound
)

// failover fails the leader of a 3-node cluster under a steady writer
// (failoverRate writes/s, each in its own call so a write stuck on the
// failed leader holds none back) and measures the time from the failure
// to the first acknowledged write sent after it, and how many writes
// failed. Two failures: the leader killed with SIGKILL (the writer's
// client knows every member and fails over between them; the member is
// restarted after), then the leader stopped with SIGSTOP, as a hung
// machine, a paused VM or a partition that drops its packets, whose
// connections stay open, with the writer on one follower only, as a
// service writes through its local agent (the member is resumed after).
func (r *runner) failover(ctx context.Context) error {
	return r.eachRound(ctx, r.cfg.Reps, 3, nil, nil, func(ctx context.Context, s slot, c cluster) error {
		for k := range r.cfg.FailoverKills {
			res, killed, err := failoverTrial(ctx, c, fmt.Sprintf("r%dk%d", s.rep, k), false)
			if err != nil {
				return fmt.Errorf("kill %d: %w", k+1, err)
			}
			res.Scenario, res.Topology, res.Case, res.System, res.Rep = "failover", topology(3), "leader kill -9", s.system, s.rep
			if err := r.record(res); err != nil {
				return err
			}
			if err := c.restart(ctx, killed); err != nil {
				return fmt.Errorf("restart the killed member: %w", err)
			}
			if err := r.settle(ctx, c); err != nil {
				return err
			}
			res, stopped, err := failoverTrial(ctx, c, fmt.Sprintf("r%ds%d", s.rep, k), true)
			if stopped >= 0 {
				if rerr := c.process(stopped).Resume(); rerr != nil && err == nil {
					err = rerr
				}
			}
			if err != nil {
				return fmt.Errorf("stop %d: %w", k+1, err)
			}
			res.Scenario, res.Topology, res.Case, res.System, res.Rep = "failover", topology(3), "leader SIGSTOP, writer on a follower", s.system, s.rep
			if err := r.record(res); err != nil {
				return err
			}
			if err := r.settle(ctx, c); err != nil {
				return err
			}
		}
		return nil
	})
}

// settle waits for a write to succeed, then for the settle time.
func (r *runner) settle(ctx context.Context, c cluster) error {
	if err := probeWrite(ctx, c); err != nil {
		return err
	}
	return proc.Sleep(ctx, r.cfg.Settle)
}

// writeLog is what the failover writer saw.
type writeLog struct {
	mu        sync.Mutex
	killed    time.Time     // zero until the failure
	recovered time.Time     // first ack of a write sent after the failure
	failed    int           // writes that failed after the failure
	acked     int           // writes sent after the failure and acknowledged
	slowest   time.Duration // the longest write that ended after the failure, failed or not
}

func (l *writeLog) done(sent time.Time, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.killed.IsZero() {
		return
	}
	l.slowest = max(l.slowest, time.Since(sent))
	if err != nil {
		l.failed++
		return
	}
	if sent.After(l.killed) {
		l.acked++
		if l.recovered.IsZero() {
			l.recovered = time.Now()
		}
	}
}

func (l *writeLog) snapshot() (killed, recovered time.Time, failed int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.killed, l.recovered, l.failed
}

// writeThroughFailure writes through w at failoverRate, each write in its
// own call bounded by failoverWrite (so a write stuck on a failed member
// holds none back), keys tag-N. failoverPre after the start it calls
// fail, which calls now just before it fails a member, so the failure's
// time is noted; it sends until stop, given the failure's time and
// the first ack of a write sent after it (zero until then), says to end,
// then waits for the writes in flight (one held by the failed member
// counts, as failed or as slow) and returns what the writer saw.
func writeThroughFailure(ctx context.Context, w writer, tag string, fail func(now func()) error,
	stop func(failed, recovered time.Time) bool) (*writeLog, error) {
	var (
		log writeLog
		wg  sync.WaitGroup
	)
	defer wg.Wait()
	tick := time.NewTicker(time.Second / failoverRate)
	defer tick.Stop()
	start := time.Now()
	for i := 0; ; i++ {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-tick.C:
		}
		sent := time.Now()
		wg.Go(func() {
			cctx, cancel := context.WithTimeout(ctx, failoverWrite)
			defer cancel()
			err := w.put(cctx, "failover.rpc", fmt.Sprintf("%s-%06d", tag, i), stampNow())
			log.done(sent, err)
		})
		killed, recovered, _ := log.snapshot()
		switch {
		case killed.IsZero() && time.Since(start) >= failoverPre:
			now := func() {
				log.mu.Lock()
				log.killed = time.Now()
				log.mu.Unlock()
			}
			if err := fail(now); err != nil {
				return nil, err
			}
			if killed, _, _ = log.snapshot(); killed.IsZero() {
				return nil, errors.New("the failure was not timed")
			}
		case !killed.IsZero() && stop(killed, recovered):
			wg.Wait()
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			return &log, nil
		}
	}
}

// results are a failure's metrics: the time from the failure to the
// first acknowledged write sent after it, the writes that failed, and the
// slowest write.
func (l *writeLog) results() Result {
	var res Result
	res.metric("unavailable s", l.recovered.Sub(l.killed).Seconds())
	res.metric("failed writes", float64(l.failed))
	res.metric("slowest write s", l.slowest.Seconds())
	return res
}

// failoverTrial runs one failure of the leader under the writer: SIGKILL,
// the writer's client knowing every member, or, with pause, SIGSTOP, the
// writer on one follower. It returns the failed member's index (-1 before
// the failure).
func failoverTrial(ctx context.Context, c cluster, tag string, pause bool) (Result, int, error) {
	members := []int{0, 1, 2}
	var follower int
	if pause {
		l, err := c.leader(ctx)
		if err != nil {
			return Result{}, -1, err
		}
		follower = (l + 1) % 3
		members = []int{follower}
	}
	w, err := c.newWriter(ctx, members...)
	if err != nil {
		return Result{}, -1, err
	}
	defer w.close()
	killedAt := -1
	log, err := writeThroughFailure(ctx, w, tag, func(now func()) error {
		l, err := c.leader(ctx)
		if err != nil {
			return err
		}
		if pause && l == follower {
			return fmt.Errorf("leadership moved to the writer's member %d before the stop", l)
		}
		now()
		if pause {
			err = c.process(l).Pause()
		} else {
			err = c.kill(l)
		}
		if err == nil {
			killedAt = l
		}
		return err
	}, func(killed, recovered time.Time) bool {
		return !recovered.IsZero() && time.Since(recovered) >= failoverTail || time.Since(killed) >= failoverPost
	})
	if err != nil {
		return Result{}, killedAt, err
	}
	if log.recovered.IsZero() {
		return Result{}, killedAt, fmt.Errorf("no write succeeded within %s of the failure", failoverPost)
	}
	return log.results(), killedAt, nil
}
