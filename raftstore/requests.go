package raftstore

import (
	"time"

	"github.com/zrpcio/zrpc/api/apierr"
	pb "github.com/zrpcio/zrpc/api/zrpcpb"
)

// DedupWindow is how long, on the leader clock carried in every command,
// the state machine remembers a request id and answers a retry of it with
// the first result. A retry arriving later is applied again. It must cover
// a client's retries across a leader change (leader_wait plus an
// election); it is a constant because every replica must forget an id at
// the same entry, or they would answer one retried entry differently.
const DedupWindow = 2 * time.Minute

// maxClockStep is the most one clock_step entry moves the request clock:
// within a leader's term entries follow each other by milliseconds, and a
// larger gap is an idle spell (after which an id remembered a little
// longer does no harm) or another leader's clock.
const maxClockStep = time.Second

// maxRequestIDs bounds the remembered ids, so memory stays bounded
// whatever the write rate; past it the oldest are forgotten first, even
// inside the window.
const maxRequestIDs = 1 << 20

// Duplicate is what Apply returns for a request id it has applied before:
// the first application's revision and result.
type Duplicate struct {
	Revision uint64
	Err      error
}

// requestLog remembers request ids in the order they were applied, each
// with the leader clock at that time. It depends only on the applied
// entries (never on the replica's own clock), so every replica forgets
// the same ids at the same entry.
type requestLog struct {
	results map[string]Duplicate
	queue   []requestEntry // oldest first, from head on
	head    int
	// clock ages the remembered ids. A command without clock_step moves
	// it to its time if that is later (it never goes back, even when a
	// new leader's clock is behind); one with clock_step moves it by the
	// command's time minus last, between 0 and maxClockStep, so that
	// neither a leader whose clock runs ahead nor one that runs behind
	// ages the ids by more than the time that passed on its own clock.
	clock int64
	// last is the time of the last command applied.
	last   int64
	window int64 // nanoseconds
	max    int
}

type requestEntry struct {
	id string
	at int64 // clock when applied; 0 for an entry restored without a time
}

func newRequestLog(window time.Duration, max int) *requestLog {
	return &requestLog{results: make(map[string]Duplicate), window: int64(window), max: max}
}

// advance moves the clock for a command of time now (with clock_step:
// step) and forgets the ids whose window has passed. Call it for every
// command before looking its id up.
func (r *requestLog) advance(now int64, step bool) {
	switch {
	case step:
		if d := now - r.last; d > 0 && r.last != 0 {
			r.clock += min(d, int64(maxClockStep))
		} else if r.clock == 0 {
			r.clock = now // the first command of a log or of an old snapshot
		}
	case now > r.clock:
		r.clock = now
	}
	r.last = now
	if r.clock == 0 {
		return
	}
	// Entries restored from a snapshot that kept no times start their
	// window at the first clock seen after the restore.
	for i := r.head; i < len(r.queue) && r.queue[i].at == 0; i++ {
		r.queue[i].at = r.clock
	}
	for r.len() > 0 && r.clock-r.queue[r.head].at > r.window {
		r.evictOldest()
	}
}

func (r *requestLog) len() int { return len(r.queue) - r.head }

func (r *requestLog) evictOldest() {
	delete(r.results, r.queue[r.head].id)
	r.queue[r.head] = requestEntry{}
	r.head++
	if r.head > len(r.queue)/2 && r.head > 1024 {
		r.queue = append(r.queue[:0], r.queue[r.head:]...)
		r.head = 0
	}
}

func (r *requestLog) get(id string) (Duplicate, bool) {
	if id == "" {
		return Duplicate{}, false
	}
	d, ok := r.results[id]
	return d, ok
}

// put remembers the result of id, applied at the current clock.
func (r *requestLog) put(id string, d Duplicate) { r.putAt(id, d, r.clock) }

func (r *requestLog) putAt(id string, d Duplicate, at int64) {
	if id == "" {
		return
	}
	if _, ok := r.results[id]; ok {
		return // a duplicate is answered, never stored again
	}
	for r.len() >= r.max {
		r.evictOldest()
	}
	r.queue = append(r.queue, requestEntry{id: id, at: at})
	r.results[id] = d
}

// rememberedResult is a remembered result as a snapshot captures it.
type rememberedResult struct {
	requestEntry
	d Duplicate
}

// remembered returns the remembered results oldest first, for a
// snapshot: one slice, made under the state machine's lock, which
// Persist turns into records one at a time off it (a record each here
// would allocate a million messages while every write waits).
func (r *requestLog) remembered() []rememberedResult {
	out := make([]rememberedResult, 0, r.len())
	for _, e := range r.queue[r.head:] {
		out = append(out, rememberedResult{e, r.results[e.id]})
	}
	return out
}

// record fills rec with r.
func (r rememberedResult) record(rec *pb.RequestRecord) {
	*rec = pb.RequestRecord{Id: r.id, Revision: r.d.Revision, Time: r.at}
	if r.d.Err != nil {
		rec.ErrorReason, rec.ErrorMessage = apierr.Code(r.d.Err), r.d.Err.Error()
	}
}

// requestErr rebuilds the error of a remembered result. Its ErrorReason is
// an apierr reason code, or, in snapshots written before reason codes, the
// sentinel's text; apierr.FromCode reads both.
func requestErr(r *pb.RequestRecord) error {
	if r.ErrorMessage == "" && r.ErrorReason == "" {
		return nil
	}
	return apierr.FromCode(r.ErrorReason, r.ErrorMessage)
}
