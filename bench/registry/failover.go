package registry

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/zrpcio/zrpc/bench/internal/proc"
)

// Failover timing: writes run failoverPre before the kill, and at most
// failoverPost after it; once a write after the kill has succeeded they
// go on for failoverTail.
const (
	failoverRate  = 100
	failoverPre   = 2 * time.Second
	failoverPost  = 20 * time.Second
	failoverTail  = time.Second
	failoverWrite = 5 * time.Second // one write's bound
)

// failover kills the leader of a 3-node cluster with SIGKILL under a
// steady writer (failoverRate writes/s, each in its own call so a write
// stuck on the dead leader holds none back) and measures the time from
// the kill to the first acknowledged write sent after it, and how many
// writes failed. The killed member is restarted between kills.
func (r *runner) failover(ctx context.Context) error {
	return r.eachRound(ctx, r.cfg.Reps, 3, nil, nil, func(ctx context.Context, s slot, c cluster) error {
		for k := range r.cfg.FailoverKills {
			res, killed, err := failoverTrial(ctx, c, fmt.Sprintf("r%dk%d", s.rep, k))
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
			if err := probeWrite(ctx, c); err != nil {
				return err
			}
			if err := proc.Sleep(ctx, r.cfg.Settle); err != nil {
				return err
			}
		}
		return nil
	})
}

// writeLog is what the failover writer saw.
type writeLog struct {
	mu        sync.Mutex
	killed    time.Time // zero until the kill
	recovered time.Time // first ack of a write sent after the kill
	failed    int       // writes that failed after the kill was sent
}

func (l *writeLog) done(sent time.Time, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.killed.IsZero() {
		return
	}
	if err != nil {
		l.failed++
		return
	}
	if sent.After(l.killed) && l.recovered.IsZero() {
		l.recovered = time.Now()
	}
}

func (l *writeLog) snapshot() (killed, recovered time.Time, failed int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.killed, l.recovered, l.failed
}

func failoverTrial(ctx context.Context, c cluster, tag string) (Result, int, error) {
	w, err := c.newWriter(ctx, 0, 1, 2)
	if err != nil {
		return Result{}, 0, err
	}
	defer w.close()
	var (
		log writeLog
		wg  sync.WaitGroup
	)
	defer wg.Wait()
	wctx, stop := context.WithCancel(ctx)
	defer stop()
	tick := time.NewTicker(time.Second / failoverRate)
	defer tick.Stop()
	start := time.Now()
	killedAt := -1
	for i := 0; ; i++ {
		select {
		case <-ctx.Done():
			return Result{}, 0, ctx.Err()
		case <-tick.C:
		}
		sent := time.Now()
		wg.Go(func() {
			cctx, cancel := context.WithTimeout(wctx, failoverWrite)
			defer cancel()
			err := w.put(cctx, "failover.rpc", fmt.Sprintf("%s-%06d", tag, i), sent.UnixNano())
			if wctx.Err() == nil { // not cut short by the trial's end
				log.done(sent, err)
			}
		})
		killed, recovered, _ := log.snapshot()
		switch {
		case killedAt < 0 && time.Since(start) >= failoverPre:
			l, err := c.leader(ctx)
			if err != nil {
				return Result{}, 0, err
			}
			log.mu.Lock()
			log.killed = time.Now()
			log.mu.Unlock()
			if err := c.kill(l); err != nil {
				return Result{}, 0, err
			}
			killedAt = l
		case killedAt >= 0 && !recovered.IsZero() && time.Since(recovered) >= failoverTail,
			killedAt >= 0 && time.Since(killed) >= failoverPost:
			stop()
			wg.Wait()
			killed, recovered, failed := log.snapshot()
			if recovered.IsZero() {
				return Result{}, killedAt, fmt.Errorf("no write succeeded within %s of the kill", failoverPost)
			}
			var res Result
			res.metric("unavailable s", recovered.Sub(killed).Seconds())
			res.metric("failed writes", float64(failed))
			return res, killedAt, nil
		}
	}
}
