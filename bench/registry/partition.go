package registry

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/zrpcio/zrpc/bench/internal/proc"
	"github.com/zrpcio/zrpc/internal/netlab"
)

// partition runs each 3-member cluster on a network of its own (a netlab
// lab: one network namespace per member, and one for this process's
// connections) and cuts one member off, as a pulled cable or a dropping
// firewall would: packets vanish, nothing is refused, sockets learn it
// only by their own timeouts. Each cut lasts Config.PartitionHold under a
// steady writer (failoverRate writes/s) whose client knows every member,
// the cut one first, as a service configured with its local agent first;
// each system's own client does what it does with that list. Four cuts
// per cluster (partitionCases): the leader, then a follower, from the
// others and the writer; the same from the other members only, the
// writer still reaching it. Each reports the time from the cut to the
// first acknowledged write sent after it, the writes that failed and
// that were acknowledged during the cut, and the slowest write.
//
// Needs root and iproute2 (the lab's namespaces).
func (r *runner) partition(ctx context.Context) error {
	lab, err := netlab.New(4)
	if err != nil {
		return err
	}
	defer lab.Close()
	nw := labNet{lab: lab, client: 3}
	return r.eachRoundOn(ctx, nw, r.cfg.Reps, 3, nil, nil, func(ctx context.Context, s slot, c cluster) error {
		for _, cut := range partitionCases {
			res, err := partitionTrial(ctx, c, lab, fmt.Sprintf("r%d-%d", s.rep, cut.index), cut, r.cfg.PartitionHold)
			if herr := lab.Heal(); herr != nil && err == nil {
				err = herr
			}
			if err != nil {
				return fmt.Errorf("%s: %w", cut.name, err)
			}
			res.Scenario, res.Topology, res.Case, res.System, res.Rep = "partition", topology(3), cut.name, s.system, s.rep
			if err := r.record(res); err != nil {
				return err
			}
			if err := r.settleAll(ctx, c); err != nil {
				return fmt.Errorf("after the %s: %w", cut.name, err)
			}
		}
		return nil
	})
}

// partitionCase is one cut of the partition scenario: of the leader or of
// a follower, from the other members and the writer or from the other
// members only.
type partitionCase struct {
	index     int
	name      string
	leader    bool
	writerCut bool // the writer is on the majority's side
}

var partitionCases = []partitionCase{
	{0, "leader cut off, writer given it first", true, true},
	{1, "follower cut off, writer given it first", false, true},
	{2, "leader cut off from the members only, writer given it first", true, false},
	{3, "follower cut off from the members only, writer given it first", false, false},
}

// partitionTrial cuts the leader (or a follower) of c off for hold under
// the writer, the cut member first in its client's list. The caller heals
// the lab.
func partitionTrial(ctx context.Context, c cluster, lab *netlab.Lab, tag string, cut partitionCase, hold time.Duration) (Result, error) {
	leader := cut.leader
	l, err := c.leader(ctx)
	if err != nil {
		return Result{}, err
	}
	target := l
	if !leader {
		target = (l + 1) % 3
	}
	others := slices.DeleteFunc([]int{0, 1, 2}, func(i int) bool { return i == target })
	w, err := c.newWriter(ctx, append([]int{target}, others...)...)
	if err != nil {
		return Result{}, err
	}
	defer w.close()
	log, err := writeThroughFailure(ctx, w, tag, func(now func()) error {
		if leader {
			if l2, err := c.leader(ctx); err != nil {
				return err
			} else if l2 != target {
				return fmt.Errorf("leadership moved from member %d to %d before the cut", target, l2)
			}
		}
		now()
		if cut.writerCut {
			// The load generator's host (3) stays with the majority.
			return lab.Partition([]int{target}, append(others, 3))
		}
		return lab.Partition([]int{target}, others)
	}, func(cut, _ time.Time) bool { return time.Since(cut) >= hold })
	if err != nil {
		return Result{}, err
	}
	if log.recovered.IsZero() {
		return Result{}, fmt.Errorf("no write succeeded in the %s the member was cut off", hold)
	}
	res := log.results()
	res.metric("acked writes", float64(log.acked))
	return res, nil
}

// settleAll waits until a write through each member succeeds (a member
// that was cut off has rejoined), then for the settle time.
func (r *runner) settleAll(ctx context.Context, c cluster) error {
	for i := range c.members() {
		if err := probeWriteThrough(ctx, c, i); err != nil {
			return fmt.Errorf("member %d: %w", i, err)
		}
	}
	return proc.Sleep(ctx, r.cfg.Settle)
}
