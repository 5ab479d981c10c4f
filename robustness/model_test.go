package robustness

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/anishathalye/porcupine"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/internal/regmodel"
)

// The registry model. Clients register and deregister instances i0..i3 of
// one service, each registration with a unique metadata value "v", and read
// the service back with each consistency mode. What each mode promises, and
// how it is checked:
//
//   - consistent: linearizable. porcupine checks the writes and the
//     consistent reads against the sequential registry regmodel.Model.
//   - stale: the state the read returns existed: it is the state the
//     registry had at the revision the answer carries. Watches rebuild the
//     registry's state at every revision (and are themselves checked
//     against each other and against every acknowledged write), so each
//     read is compared with the state a watch built at its revision.
//   - default: as stale, and not older than stale_read_bound +
//     defaultSlack: its revision is at least that of every write
//     acknowledged that long before the read was sent.
//
// Besides: every read answered at one revision shows one state (across
// agents and modes), and a client's stale and default reads sent to one
// agent never go back in revision while that agent keeps running; a
// default read does not go back across a restart of the agent either.
const (
	linService   = "rb.lin"
	defaultSlack = 2 * time.Second
)

// write is one acknowledged write that changed the registry.
type write struct {
	in       regmodel.Input
	rev      uint64
	returned time.Duration
}

// read is one successful read, for the checks outside porcupine.
type read struct {
	client      int
	agent       int
	incarnation int // of the agent when the read was sent and answered
	mode        pb.Consistency
	rev         uint64
	seen        regmodel.State
	call, at    time.Duration
}

// history collects the registry operations of every client.
type history struct {
	start   time.Time
	counter int64 // unique values; guarded by mu
	mu      sync.Mutex
	ops     []porcupine.Operation
	reads   []read
	writes  []write
	vizDir  string // where a failed check writes porcupine's visualization; "" for none
	failed  map[string]int
	errs    []string
}

func newHistory(start time.Time) *history {
	return &history{start: start, failed: map[string]int{}, vizDir: os.TempDir()}
}

func (h *history) now() int64 { return int64(time.Since(h.start)) }

func (h *history) nextValue() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.counter++
	return strconv.FormatInt(h.counter, 10)
}

func (h *history) add(op porcupine.Operation, r *read, w *write, failure string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if op.Output != nil {
		h.ops = append(h.ops, op)
	}
	if w != nil {
		h.writes = append(h.writes, *w)
	}
	if r != nil {
		h.reads = append(h.reads, *r)
	}
	if failure != "" {
		h.failed[failure]++
		if len(h.errs) < 10 {
			h.errs = append(h.errs, fmt.Sprint(op.Metadata))
		}
	}
}

// checkRegistry runs every registry check; it reports failures with
// errorf and returns a summary for the log.
func (h *history) checkRegistry(errorf func(string, ...any), logf func(string, ...any)) {
	h.mu.Lock()
	defer h.mu.Unlock()
	done := map[string]int{}
	for _, op := range h.ops {
		in, out := op.Input.(regmodel.Input), op.Output.(regmodel.Output)
		switch {
		case out.Result == regmodel.Unknown:
			done["unknown writes"]++
		case in.Kind == regmodel.Get:
			done["get "+in.Mode.String()]++
		case in.Kind == regmodel.Register:
			done["register"]++
		default:
			done["deregister "+out.Result.String()]++
		}
	}
	logf("registry: %d operations: %v; failed calls %v", len(h.ops), done, h.failed)
	for _, e := range h.errs {
		logf("registry: a failed call: %s", e)
	}
	if done["register"] < 5 || done["get CONSISTENT"] < 3 {
		errorf("registry: too few completed operations (%v) for the check to mean anything", done)
	}
	h.checkRevisions(errorf)
	h.checkMonotonic(errorf)
	h.checkFreshness(errorf)
	h.checkLinearizable(errorf, logf)
}

// checkFreshness: a default read's revision is at least that of every
// write acknowledged stale_read_bound + defaultSlack before it was sent.
func (h *history) checkFreshness(errorf func(string, ...any)) {
	writes := slices.Clone(h.writes)
	slices.SortFunc(writes, func(a, b write) int { return int(a.returned - b.returned) })
	for _, r := range h.reads {
		if r.mode != pb.Consistency_DEFAULT {
			continue
		}
		before := r.call - staleBound - defaultSlack
		var newest *write
		for i := range writes {
			if writes[i].returned >= before {
				break
			}
			if newest == nil || writes[i].rev > newest.rev {
				newest = &writes[i]
			}
		}
		if newest != nil && r.rev < newest.rev {
			errorf("registry: default read via n%d sent at %s answered at revision %d (%s), older than %s acknowledged at revision %d at %s, more than %s before",
				r.agent+1, r.call, r.rev, r.seen, regmodel.Model.DescribeOperation(newest.in, regmodel.Output{}), newest.rev, newest.returned, staleBound+defaultSlack)
		}
	}
}

// checkRevisions: reads answered at the same revision saw the same state.
func (h *history) checkRevisions(errorf func(string, ...any)) {
	at := map[uint64]read{}
	for _, r := range h.reads {
		if prev, ok := at[r.rev]; ok && prev.seen != r.seen {
			errorf("registry: two reads at revision %d saw different states: %s (%s via n%d at %s) and %s (%s via n%d at %s)",
				r.rev, prev.seen, prev.mode, prev.agent+1, prev.at, r.seen, r.mode, r.agent+1, r.at)
			continue
		}
		at[r.rev] = r
	}
}

// checkMonotonic: a client's local reads from one agent never go back.
func (h *history) checkMonotonic(errorf func(string, ...any)) {
	type key struct{ client, agent int }
	last := map[key]read{}
	for _, r := range h.reads { // in the order each client completed them
		if r.mode == pb.Consistency_CONSISTENT {
			continue
		}
		k := key{r.client, r.agent}
		prev, ok := last[k]
		last[k] = r
		if !ok || r.rev >= prev.rev {
			continue
		}
		if r.mode == pb.Consistency_STALE && (prev.incarnation != r.incarnation || r.incarnation < 0) {
			continue // a restarted replica may start from its last snapshot
		}
		errorf("registry: client %d's %s read via n%d at %s went back to revision %d (%s) after %s read at revision %d (%s) at %s",
			r.client, r.mode, r.agent+1, r.at, r.rev, r.seen, prev.mode, prev.rev, prev.seen, prev.at)
	}
}

// checkLinearizable runs porcupine on the writes and the consistent reads,
// one instance id at a time (regmodel.ByInstance): a run's hundreds of
// writes of unknown outcome make one search over every id run out of time,
// and the atomicity of a read across ids is checked by checkRevisions and
// the watches.
func (h *history) checkLinearizable(errorf func(string, ...any), logf func(string, ...any)) {
	var ops []porcupine.Operation
	for _, op := range h.ops {
		if in := op.Input.(regmodel.Input); in.Kind != regmodel.Get || in.Mode == pb.Consistency_CONSISTENT {
			ops = append(ops, op)
		}
	}
	for id, part := range regmodel.ByInstance(ops) {
		h.porcupine(fmt.Sprintf("writes and consistent reads of %s", regmodel.ID(id)), part, errorf, logf)
	}
}

// porcupine checks one history and explains a failure.
func (h *history) porcupine(what string, ops []porcupine.Operation, errorf func(string, ...any), logf func(string, ...any)) bool {
	begin := time.Now()
	res, info := porcupine.CheckOperationsVerbose(regmodel.Model, ops, 60*time.Second)
	logf("registry: porcupine says %s for %s (%d operations) after %s", res, what, len(ops), time.Since(begin).Round(time.Millisecond))
	switch res {
	case porcupine.Ok:
		return true
	case porcupine.Unknown:
		errorf("registry: porcupine timed out checking %s (%d operations)", what, len(ops))
		return false
	}
	path := "none written"
	if h.vizDir != "" {
		if f, err := os.CreateTemp(h.vizDir, "zrpc-robustness-registry-*.html"); err == nil {
			f.Close()
			if porcupine.VisualizePath(regmodel.Model, info, f.Name()) == nil {
				path = f.Name()
			}
		}
	}
	for _, line := range regmodel.Explain(ops, info) {
		logf("registry: %s", line)
	}
	errorf("registry: %s (%d operations) do not fit the model (writes and consistent reads linearizable); visualization: %s",
		what, len(ops), path)
	return false
}
