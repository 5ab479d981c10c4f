package raftstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/internal/teststack"
	"github.com/zrpcio/zrpc/internal/testwait"
)

// eventually polls cond until it holds or timeout passes.
var eventually = testwait.For

// goroutinesIn counts goroutines whose stack has every one of funcs and,
// when state is not empty, whose status starts with state ("select",
// "chan receive").
func goroutinesIn(state string, funcs ...string) int {
	return len(teststack.Goroutines(state, funcs...))
}

const watcherNext = "raftstore.(*Watcher).Next("

// waitParkedInNext waits until n goroutines are blocked in Watcher.Next.
func waitParkedInNext(tb testing.TB, n int) {
	tb.Helper()
	eventually(tb, 10*time.Second, fmt.Sprintf("%d goroutines blocked in Watcher.Next", n), func() bool {
		return goroutinesIn("select", watcherNext) >= n
	})
}

type nextResult struct {
	resp *pb.WatchResponse
	err  error
}

// nextAsync calls w.Next(ctx) on a goroutine and delivers its result.
func nextAsync(ctx context.Context, w *Watcher) <-chan nextResult {
	ch := make(chan nextResult, 1)
	go func() {
		resp, err := w.Next(ctx)
		ch <- nextResult{resp, err}
	}()
	return ch
}

func receive(tb testing.TB, ch <-chan nextResult) nextResult {
	tb.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(10 * time.Second):
		tb.Fatal("Watcher.Next did not return within 10s")
	}
	return nextResult{}
}

func filterEvents(evs []*pb.Event, service string, after uint64) []*pb.Event {
	var out []*pb.Event
	for _, e := range evs {
		if e.Revision > after && (service == "" || e.Instance.Service == service) {
			out = append(out, e)
		}
	}
	return out
}

// checkSnapshot checks that resp is a snapshot of service's current state in f.
func checkSnapshot(t *testing.T, f *FSM, service string, resp *pb.WatchResponse) {
	t.Helper()
	if !resp.GetSnapshot() {
		t.Fatalf("got %d events without snapshot=true, want a snapshot", len(resp.GetEvents()))
	}
	want, rev := f.AllInstances()
	if service != "" {
		want, rev = f.Instances(service)
	}
	if resp.Header.GetRevision() != rev {
		t.Errorf("snapshot at revision %d, want the current %d", resp.Header.GetRevision(), rev)
	}
	if len(resp.Events) != len(want) {
		t.Fatalf("snapshot of %q has %d instances, want %d", service, len(resp.Events), len(want))
	}
	for i, e := range resp.Events {
		if e.Type != pb.Event_PUT || !proto.Equal(e.Instance, want[i]) || e.Revision != want[i].ModRevision {
			t.Errorf("snapshot event %d = {%v}, want PUT of {%v} at its mod_revision", i, compactText(e), compactText(want[i]))
		}
	}
}

// watchScenario applies a mix of commands whose events are known: several
// services, revisions without events and revisions with several events.
func watchScenario(d *fsmDriver) {
	d.mustApply(sessionCreateCmd("s1", "n1"))
	d.mustApply(registerCmd(withSession(testInstance("api", "1", "n1"), "s1")))
	d.mustApply(registerCmd(withSession(testInstance("db", "1", "n1"), "s1")))
	d.mustApply(registerCmd(testInstance("api", "2", "n2")))
	d.mustApply(nodeUpsertCmd(&pb.Node{Name: "n2"})) // no event
	d.mustApply(setHealthCmd(pb.Health_CRITICAL, "down", instRef("api", "2"), instRef("db", "1")))
	d.mustApply(registerCmd(testInstance("cache", "1", "n2")))
	d.mustApply(sessionDestroyCmd("s1")) // api/1 and db/1 at one revision
	d.mustApply(registerCmd(testInstance("db", "2", "n2")))
	d.mustApply(deregisterCmd("api", "2"))
}

func TestWatchSnapshotThenEvents(t *testing.T) {
	for _, service := range []string{"", "api", "db", "none"} {
		t.Run("service="+service, func(t *testing.T) {
			d := newFSMDriver(t, 1024)
			d.mustApply(registerCmd(testInstance("api", "0", "n1")))
			d.mustApply(registerCmd(testInstance("db", "0", "n1")))
			d.mustApply(registerCmd(testInstance("api", "9", "n2")))
			all := recordEvents(t, d.fsm)
			w := d.fsm.Watch(service, 0)
			first, err := w.Next(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			checkSnapshot(t, d.fsm, service, first)

			watchScenario(d)
			resps := drainWatcher(t, w)
			lastRev := first.Header.Revision
			for _, r := range resps {
				if r.Snapshot {
					t.Fatal("got a second snapshot")
				}
				for _, e := range r.Events {
					if e.Revision < lastRev || e.Revision > r.Header.GetRevision() {
						t.Fatalf("event at %d after %d in a response at %d", e.Revision, lastRev, r.Header.GetRevision())
					}
					lastRev = e.Revision
				}
			}
			var want []string
			for _, e := range all.next() {
				if service == "" || strings.Contains(e, " "+service+"/") {
					want = append(want, e)
				}
			}
			if got := describeEvents(flattenEvents(resps)); !slices.Equal(got, want) {
				t.Errorf("events:\n got  %v\n want %v", got, want)
			}
			if w.Revision() != d.fsm.Revision() {
				t.Errorf("watcher at revision %d, FSM at %d", w.Revision(), d.fsm.Revision())
			}
		})
	}
}

// TestWatchEventsExact pins the scenario's events, so that the filtered
// comparisons above do not rest on the recorder alone.
func TestWatchEventsExact(t *testing.T) {
	d := newFSMDriver(t, 1024)
	rec := recordEvents(t, d.fsm)
	watchScenario(d)
	want := []string{
		"PUT api/1@2", "PUT db/1@3", "PUT api/2@4",
		"PUT api/2@6", "PUT db/1@6",
		"PUT cache/1@7",
		"DELETE api/1@8", "DELETE db/1@8",
		"PUT db/2@9", "DELETE api/2@10",
	}
	if got := rec.next(); !slices.Equal(got, want) {
		t.Errorf("events:\n got  %v\n want %v", got, want)
	}
}

func TestWatchResume(t *testing.T) {
	d := newFSMDriver(t, 1024)
	all := d.fsm.Watch("", 0)
	drainWatcher(t, all)
	watchScenario(d)
	recorded := watchedEvents(t, all)
	last := d.fsm.Revision()

	// 5 has no event, 6 and 8 have two.
	for _, from := range []uint64{1, 2, 4, 5, 6, 7, 8, last - 1, last, last + 5} {
		for _, service := range []string{"", "api", "db", "cache"} {
			t.Run(fmt.Sprintf("from=%d/service=%s", from, service), func(t *testing.T) {
				w := d.fsm.Watch(service, from)
				resps := drainWatcher(t, w)
				for _, r := range resps {
					if r.Snapshot {
						t.Fatal("resume within the ring sent a snapshot")
					}
				}
				want := describeEvents(filterEvents(recorded, service, from))
				if got := describeEvents(flattenEvents(resps)); !slices.Equal(got, want) {
					t.Errorf("events:\n got  %v\n want %v", got, want)
				}
				if want := max(from, last); w.Revision() != want {
					t.Errorf("watcher revision %d, want %d", w.Revision(), want)
				}
			})
		}
	}

	// A watcher ahead of the FSM waits for revisions past its own.
	w := d.fsm.Watch("", last+2)
	d.mustApply(registerCmd(testInstance("api", "x", "n1"))) // last+1: skipped
	d.mustApply(registerCmd(testInstance("api", "y", "n1"))) // last+2: skipped
	d.mustApply(registerCmd(testInstance("api", "z", "n1")))
	if got, want := describeEvents(flattenEvents(drainWatcher(t, w))), []string{fmt.Sprintf("PUT api/z@%d", last+3)}; !slices.Equal(got, want) {
		t.Errorf("watcher from a future revision got %v, want %v", got, want)
	}
}

func TestWatchCompactedFallsBackToSnapshot(t *testing.T) {
	// setup applies 20 registrations (revisions 1..20, one event each) to an
	// FSM whose ring holds 4 events: 17..20 remain, 16 is compacted.
	setup := func(t *testing.T) *fsmDriver {
		d := newFSMDriver(t, 4)
		for i := range 20 {
			d.mustApply(registerCmd(testInstance([]string{"api", "db"}[i%2], fmt.Sprintf("%02d", i), "n1")))
		}
		return d
	}
	tests := []struct {
		name     string
		service  string
		from     uint64
		snapshot bool
		events   []string // when no snapshot
	}{
		{"from 1", "", 1, true, nil},
		{"from 1 filtered", "db", 1, true, nil},
		{"last compacted revision", "", 15, true, nil},
		{"oldest resumable revision", "", 16, false, []string{"PUT api/16@17", "PUT db/17@18", "PUT api/18@19", "PUT db/19@20"}},
		{"oldest resumable revision filtered", "db", 16, false, []string{"PUT db/17@18", "PUT db/19@20"}},
		{"head", "", 20, false, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := setup(t)
			w := d.fsm.Watch(tc.service, tc.from)
			resps := drainWatcher(t, w)
			if tc.snapshot {
				if len(resps) != 1 {
					t.Fatalf("got %d responses, want one snapshot", len(resps))
				}
				checkSnapshot(t, d.fsm, tc.service, resps[0])
			} else {
				for _, r := range resps {
					if r.Snapshot {
						t.Fatal("got a snapshot, want events")
					}
				}
				if got := describeEvents(flattenEvents(resps)); !slices.Equal(got, tc.events) {
					t.Errorf("events %v, want %v", got, tc.events)
				}
			}
			// Live events follow.
			rev := d.mustApply(registerCmd(testInstance("db", "live", "n1")))
			want := []string{fmt.Sprintf("PUT db/live@%d", rev)}
			if got := describeEvents(flattenEvents(drainWatcher(t, w))); !slices.Equal(got, want) {
				t.Errorf("after catching up: %v, want %v", got, want)
			}
		})
	}

	t.Run("watcher falls behind", func(t *testing.T) {
		d := newFSMDriver(t, 4)
		w := d.fsm.Watch("api", 0)
		drainWatcher(t, w)
		for i := range 20 {
			d.mustApply(registerCmd(testInstance("api", fmt.Sprint(i), "n1")))
		}
		resps := drainWatcher(t, w)
		if len(resps) != 1 {
			t.Fatalf("got %d responses, want one snapshot", len(resps))
		}
		checkSnapshot(t, d.fsm, "api", resps[0])
	})
}

func TestWatchRestoreResets(t *testing.T) {
	src := populatedFSM(t)
	for range 30 {
		src.mustApply(registerCmd(testInstance("api", fmt.Sprint(100+src.next), "n1")))
	}
	snap := snapshotBytes(t, src.fsm)
	srcRev := src.fsm.Revision()

	for _, service := range []string{"", "api"} {
		t.Run("service="+service, func(t *testing.T) {
			d := newFSMDriver(t, 64)
			d.mustApply(registerCmd(testInstance("api", "old", "n1")))
			d.mustApply(registerCmd(testInstance("api", "older", "n1")))
			w := d.fsm.Watch(service, 0)
			drainWatcher(t, w)
			ch := nextAsync(context.Background(), w)
			waitParkedInNext(t, 1)

			if err := d.fsm.Restore(io.NopCloser(bytes.NewReader(snap))); err != nil {
				t.Fatal(err)
			}
			r := receive(t, ch)
			if r.err != nil {
				t.Fatal(r.err)
			}
			checkSnapshot(t, d.fsm, service, r.resp)
			if r.resp.Header.GetRevision() != srcRev {
				t.Errorf("snapshot at %d, want the restored revision %d", r.resp.Header.GetRevision(), srcRev)
			}
			// A watcher resuming from before the restore gets a snapshot too.
			if resps := drainWatcher(t, d.fsm.Watch(service, 1)); len(resps) != 1 || !resps[0].Snapshot {
				t.Errorf("resume from before the restore: %d responses, want one snapshot", len(resps))
			}

			// Then events continue from the restored revision.
			d.next = srcRev + 1
			rev := d.mustApply(deregisterCmd("api", "0"))
			want := []string{fmt.Sprintf("DELETE api/0@%d", rev)}
			if got := describeEvents(flattenEvents(drainWatcher(t, w))); !slices.Equal(got, want) {
				t.Errorf("after restore: %v, want %v", got, want)
			}
		})
	}
}

func TestWatchNextHonoursContext(t *testing.T) {
	tests := []struct {
		name string
		ctx  func() (context.Context, context.CancelFunc)
		want error
	}{
		{"cancel", func() (context.Context, context.CancelFunc) { return context.WithCancel(context.Background()) }, context.Canceled},
		{"deadline", func() (context.Context, context.CancelFunc) {
			return context.WithTimeout(context.Background(), 20*time.Millisecond)
		}, context.DeadlineExceeded},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := newFSMDriver(t, 16)
			d.mustApply(registerCmd(testInstance("api", "1", "n1")))
			w := d.fsm.Watch("api", 0)
			drainWatcher(t, w)
			ctx, cancel := tc.ctx()
			defer cancel()
			ch := nextAsync(ctx, w)
			if tc.want == context.Canceled {
				waitParkedInNext(t, 1)
				// Events of other services do not wake it with nothing.
				d.mustApply(registerCmd(testInstance("db", "1", "n1")))
				cancel()
			}
			r := receive(t, ch)
			if !errors.Is(r.err, tc.want) || r.resp != nil {
				t.Fatalf("Next = %v, %v; want nil, %v", r.resp, r.err, tc.want)
			}
			if n := goroutinesIn("", watcherNext); n != 0 {
				t.Errorf("%d goroutines still in Watcher.Next after it returned", n)
			}
			// The watcher still works.
			rev := d.mustApply(registerCmd(testInstance("api", "2", "n1")))
			resp, err := w.Next(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if got, want := describeEvents(resp.Events), []string{fmt.Sprintf("PUT api/2@%d", rev)}; !slices.Equal(got, want) {
				t.Errorf("after a cancelled Next: %v, want %v", got, want)
			}
		})
	}
}

// TestWatchBatchesKeepRevisionsWhole checks the batching contract of
// eventLog.since: a response never splits one revision's events, passes
// maxWatchBatch only to finish a revision, and is not cut short while more
// events are ready.
func TestWatchBatchesKeepRevisionsWhole(t *testing.T) {
	pad := func(i int) string { return fmt.Sprintf("%05d", i) }
	// sessionGroups registers groups of per instances, each group bound to
	// its own session, then destroys the sessions one entry each. It
	// returns the revision before the first destroy and the expected events
	// from there.
	sessionGroups := func(d *fsmDriver, groups, per int) (uint64, []string) {
		var cmds []*pb.Command
		for g := range groups {
			cmds = append(cmds, sessionCreateCmd(fmt.Sprint("s", g), "n1"))
			for i := range per {
				cmds = append(cmds, registerCmd(withSession(testInstance("api", pad(g*per+i), "n1"), fmt.Sprint("s", g))))
			}
		}
		d.mustApplyBatch(cmds...)
		from := d.fsm.Revision()
		var want []string
		for g := range groups {
			rev := d.mustApply(sessionDestroyCmd(fmt.Sprint("s", g)))
			for i := range per {
				want = append(want, fmt.Sprintf("DELETE api/%s@%d", pad(g*per+i), rev))
			}
		}
		return from, want
	}
	tests := []struct {
		name    string
		service string
		setup   func(d *fsmDriver) (from uint64, want []string)
	}{
		{"one revision of 1500 events", "", func(d *fsmDriver) (uint64, []string) { return sessionGroups(d, 1, 1500) }},
		{"ten revisions of 300 events", "", func(d *fsmDriver) (uint64, []string) { return sessionGroups(d, 10, 300) }},
		{"revisions of 999 events", "", func(d *fsmDriver) (uint64, []string) { return sessionGroups(d, 3, maxWatchBatch-1) }},
		{"single events then a big revision", "", func(d *fsmDriver) (uint64, []string) {
			d.mustApply(sessionCreateCmd("s", "n1"))
			from := d.fsm.Revision()
			var want []string
			for i := range 1500 {
				rev := d.mustApply(registerCmd(withSession(testInstance("api", pad(i), "n1"), "s")))
				want = append(want, fmt.Sprintf("PUT api/%s@%d", pad(i), rev))
			}
			rev := d.mustApply(sessionDestroyCmd("s"))
			for i := range 1500 {
				want = append(want, fmt.Sprintf("DELETE api/%s@%d", pad(i), rev))
			}
			return from, want
		}},
		{"2500 single-event revisions", "", func(d *fsmDriver) (uint64, []string) {
			d.mustApply(nodeUpsertCmd(&pb.Node{Name: "n1"})) // no event
			var want []string
			for i := range 2500 {
				rev := d.mustApply(registerCmd(testInstance("api", pad(i), "n1")))
				want = append(want, fmt.Sprintf("PUT api/%s@%d", pad(i), rev))
			}
			return 1, want
		}},
		{"filtered among other services", "db", func(d *fsmDriver) (uint64, []string) {
			d.mustApply(nodeUpsertCmd(&pb.Node{Name: "n1"})) // no event
			var want []string
			for i := range 3000 {
				service := []string{"api", "db", "cache"}[i%3]
				rev := d.mustApply(registerCmd(testInstance(service, pad(i), "n1")))
				if service == "db" {
					want = append(want, fmt.Sprintf("PUT db/%s@%d", pad(i), rev))
				}
			}
			return 1, want
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := newFSMDriver(t, 1<<14)
			from, want := tc.setup(d)
			w := d.fsm.Watch(tc.service, from)
			resps := drainWatcher(t, w)
			if got := describeEvents(flattenEvents(resps)); !slices.Equal(got, want) {
				t.Fatalf("got %d events, want %d (first difference at %d)", len(got), len(want), firstDifference(got, want))
			}
			var prevLast uint64
			for i, r := range resps {
				if r.Snapshot || len(r.Events) == 0 {
					t.Fatalf("response %d: snapshot=%v with %d events", i, r.Snapshot, len(r.Events))
				}
				first, last := r.Events[0].Revision, r.Events[len(r.Events)-1].Revision
				if i > 0 && first <= prevLast {
					t.Errorf("response %d starts at revision %d, the previous one ended at %d: a revision was split", i, first, prevLast)
				}
				prevLast = last
				lastGroup := 0
				for _, e := range r.Events {
					if e.Revision == last {
						lastGroup++
					}
				}
				if before := len(r.Events) - lastGroup; before >= maxWatchBatch {
					t.Errorf("response %d has %d events before its last revision, the cap is %d", i, before, maxWatchBatch)
				}
				if i < len(resps)-1 && len(r.Events) < maxWatchBatch {
					t.Errorf("response %d has %d events although more were ready (cap %d)", i, len(r.Events), maxWatchBatch)
				}
				if r.Header.GetRevision() < last {
					t.Errorf("response %d: header revision %d before its last event %d", i, r.Header.GetRevision(), last)
				}
			}
			if w.Revision() != d.fsm.Revision() {
				t.Errorf("watcher at %d, FSM at %d", w.Revision(), d.fsm.Revision())
			}
			t.Logf("%d events in %d responses", len(want), len(resps))
		})
	}
}

func firstDifference(a, b []string) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// TestWatchConcurrent applies 5000 random entries while four watchers
// follow; the ring is tiny, so they also fall behind and resynchronise.
// Each watcher's state, rebuilt from what it received, must end equal to
// the FSM's.
func TestWatchConcurrent(t *testing.T) {
	rng := rand.New(rand.NewPCG(42, 42))
	logs := randomLogs(t, rng, 5000)
	f := NewFSM(32)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	type result struct {
		service   string
		state     map[string]*pb.Instance
		rev       uint64
		snapshots int
		err       error
	}
	services := []string{"", "api", "db", ""}
	results := make(chan result, len(services))
	for _, service := range services {
		w := f.Watch(service, 0)
		go func() {
			res := result{service: service, state: make(map[string]*pb.Instance)}
			defer func() { results <- res }()
			var lastHeader, lastEvent uint64
			for {
				resp, err := w.Next(ctx)
				if err != nil {
					if !errors.Is(err, context.Canceled) {
						res.err = err
					}
					res.rev = w.Revision()
					return
				}
				if h := resp.Header.GetRevision(); h < lastHeader {
					res.err = fmt.Errorf("header revision went back from %d to %d", lastHeader, h)
					return
				}
				lastHeader = resp.Header.GetRevision()
				if resp.Snapshot {
					res.snapshots++
					clear(res.state)
					lastEvent = 0
				}
				for _, e := range resp.Events {
					if service != "" && e.Instance.Service != service {
						res.err = fmt.Errorf("got an event of service %q", e.Instance.Service)
						return
					}
					if !resp.Snapshot && e.Revision < lastEvent {
						res.err = fmt.Errorf("event revision went back from %d to %d", lastEvent, e.Revision)
						return
					}
					lastEvent = max(lastEvent, e.Revision)
				}
				applyEvents(res.state, resp.Events)
			}
		}()
	}

	for rest := logs; len(rest) > 0; {
		n := min(len(rest), 1+rng.IntN(16))
		if n == 1 {
			f.Apply(rest[0])
		} else {
			f.ApplyBatch(rest[:n])
		}
		rest = rest[n:]
	}
	// Once the writer is done, a cancelled Next still hands over everything
	// that is ready and only then reports the cancellation.
	cancel()
	final := f.Revision()
	for range services {
		var res result
		select {
		case res = <-results:
		case <-time.After(30 * time.Second):
			t.Fatal("a watcher did not finish")
		}
		if res.err != nil {
			t.Errorf("watcher %q: %v", res.service, res.err)
			continue
		}
		want, _ := f.AllInstances()
		if res.service != "" {
			want, _ = f.Instances(res.service)
		}
		if diff := diffInstanceMap(want, res.state); diff != "" {
			t.Errorf("watcher %q rebuilt a different state: %s", res.service, diff)
		}
		if res.rev != final {
			t.Errorf("watcher %q ended at revision %d, FSM at %d", res.service, res.rev, final)
		}
		t.Logf("watcher %q: %d snapshots", res.service, res.snapshots)
	}
}

// TestWatchReadsOnlyItsService: a watcher of one service behind many
// events of others reads its own events at once, without looking at the
// others'.
func TestWatchReadsOnlyItsService(t *testing.T) {
	d := newFSMDriver(t, 4*maxWatchBatch)
	for i := range 3 * maxWatchBatch {
		d.mustApply(registerCmd(testInstance("other", fmt.Sprintf("o%d", i), "n1")))
	}
	rev := d.mustApply(registerCmd(testInstance("mine", "m", "n1")))

	evs, seen, more, ok := d.fsm.events.since(1, "mine", maxWatchBatch, 0)
	if !ok || more || seen != rev || describeEvents(evs)[0] != fmt.Sprintf("PUT mine/m@%d", rev) || len(evs) != 1 {
		t.Fatalf("since = %v, seen %d, more %v, ok %v; want PUT mine/m@%d, seen %d", describeEvents(evs), seen, more, ok, rev, rev)
	}
	w := d.fsm.Watch("mine", 1)
	t.Cleanup(w.Close)
	resp := receive(t, nextAsync(context.Background(), w))
	if resp.err != nil {
		t.Fatal(resp.err)
	}
	if got := describeEvents(resp.resp.Events); !slices.Equal(got, []string{fmt.Sprintf("PUT mine/m@%d", rev)}) {
		t.Fatalf("events = %v, want PUT mine/m@%d", got, rev)
	}
}

// TestWatchWakesOnlyWatchersOfTheEventsService: with 1,000 watchers of
// other services, one of service S and one of everything, a write to S
// wakes the watcher of S and the watcher of everything only, and a write
// to T wakes no watcher of S.
func TestWatchWakesOnlyWatchersOfTheEventsService(t *testing.T) {
	d := newFSMDriver(t, 1024)
	var others []*Watcher
	for i := range 1000 {
		w := d.fsm.Watch(fmt.Sprintf("other%d", i%100), 0)
		t.Cleanup(w.Close)
		others = append(others, w)
	}
	s, all := d.fsm.Watch("S", 0), d.fsm.Watch("", 0)
	t.Cleanup(s.Close)
	t.Cleanup(all.Close)
	total := func() (n uint64) {
		for _, w := range others {
			n += w.wakeups()
		}
		return n + s.wakeups()
	}
	drainWatcher(t, s)

	rev := d.mustApply(registerCmd(testInstance("S", "1", "n1")))
	if got := total(); got != 1 {
		t.Errorf("a write to S sent %d wake-ups to watchers of one service, want 1", got)
	}
	if s.wakeups() != 1 || all.wakeups() != 1 {
		t.Errorf("watcher of S woken %d times, of everything %d times; want 1 each", s.wakeups(), all.wakeups())
	}
	if got := describeEvents(flattenEvents(drainWatcher(t, s))); !slices.Equal(got, []string{fmt.Sprintf("PUT S/1@%d", rev)}) {
		t.Errorf("watcher of S got %v", got)
	}

	d.mustApply(registerCmd(testInstance("T", "1", "n1")))
	d.mustApplyBatch(registerCmd(testInstance("T", "2", "n1")), registerCmd(testInstance("U", "1", "n1")))
	if got := total(); got != 1 {
		t.Errorf("writes to T and U sent %d more wake-ups to watchers of other services", got-1)
	}
	if all.wakeups() != 3 {
		t.Errorf("watcher of everything woken %d times by three writes, want 3", all.wakeups())
	}

	// A batch touching S, T and S again wakes the watcher of S once.
	d.mustApplyBatch(registerCmd(testInstance("S", "2", "n1")), registerCmd(testInstance("T", "3", "n1")),
		registerCmd(testInstance("S", "3", "n1")))
	if s.wakeups() != 2 {
		t.Errorf("watcher of S woken %d times in all, want 2", s.wakeups())
	}
	// A closed watcher is not woken again.
	s.Close()
	s.Close()
	d.mustApply(registerCmd(testInstance("S", "4", "n1")))
	if s.wakeups() != 2 {
		t.Errorf("a closed watcher was woken")
	}
}

// TestWatchSnapshotComesInPagesBuiltOnDemand: a watch of everything on
// 100,000 instances gets a first page of at most maxWatchBatch instances
// before any other page is built, and the pages together are the registry
// at the first page's revision, even while writes go on.
func TestWatchSnapshotComesInPagesBuiltOnDemand(t *testing.T) {
	d := newFSMDriver(t, 1024)
	const services, per = 100, 1000
	for s := range services {
		var cmds []*pb.Command
		for i := range per {
			cmds = append(cmds, registerCmd(testInstance(fmt.Sprintf("svc%03d", s), fmt.Sprintf("%04d", i), "n1")))
		}
		d.mustApplyBatch(cmds...)
	}
	want, rev := d.fsm.AllInstances()
	w := d.fsm.Watch("", 0)
	t.Cleanup(w.Close)
	first, err := w.Next(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !first.Snapshot || !first.More || len(first.Events) != maxWatchBatch || first.Header.GetRevision() != rev {
		t.Fatalf("first page: snapshot %v, more %v, %d events at revision %d; want a snapshot page of %d events with more, at %d",
			first.Snapshot, first.More, len(first.Events), first.Header.GetRevision(), maxWatchBatch, rev)
	}
	if got := len(w.pages.services); got != services-1 {
		t.Errorf("after the first page %d services are left to page, want %d (pages are built one at a time)", got, services-1)
	}
	// Writes after the snapshot's revision do not show in its pages.
	d.mustApply(deregisterCmd("svc050", "0001"))
	d.mustApply(registerCmd(testInstance("svc099", "new", "n1")))
	got := first.Events
	pages := 1
	for {
		resp, err := w.Next(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if resp.Snapshot || resp.Header.GetRevision() != rev {
			t.Fatalf("page %d: snapshot %v at revision %d, want a continuation at %d", pages, resp.Snapshot, resp.Header.GetRevision(), rev)
		}
		pages++
		got = append(got, resp.Events...)
		if !resp.More {
			break
		}
	}
	if pages != services*per/maxWatchBatch || len(got) != len(want) {
		t.Fatalf("%d pages of %d events in all, want %d pages of %d", pages, len(got), services*per/maxWatchBatch, len(want))
	}
	for i, e := range got {
		if e.Type != pb.Event_PUT || !proto.Equal(e.Instance, want[i]) || e.Revision != want[i].ModRevision {
			t.Fatalf("snapshot event %d = %v, want PUT of %v", i, compactText(e), compactText(want[i]))
		}
	}
	// Then the writes made meanwhile, as events.
	evs := describeEvents(flattenEvents(drainWatcher(t, w)))
	if wantEvs := []string{fmt.Sprintf("DELETE svc050/0001@%d", rev+1), fmt.Sprintf("PUT svc099/new@%d", rev+2)}; !slices.Equal(evs, wantEvs) {
		t.Errorf("events after the snapshot: %v, want %v", evs, wantEvs)
	}
}

// TestWatcherBacklogCountsWhatIsLeftToSend: Backlog counts the watched
// service's events after a revision and their encoded size, goes on from
// where it stopped, stops just past its bounds, and says when events
// after the revision the watcher sent have left the ring.
func TestWatcherBacklogCountsWhatIsLeftToSend(t *testing.T) {
	d := newFSMDriver(t, 8)
	for i := range 6 { // revisions 1..6: api at odd revisions, db at even ones
		d.mustApply(registerCmd(testInstance([]string{"api", "db"}[i%2], fmt.Sprint(i), "n1")))
	}
	api, all := d.fsm.Watch("api", 0), d.fsm.Watch("", 0)
	defer api.Close()
	defer all.Close()
	size := func(evs []*pb.Event) int {
		n := 0
		for _, e := range evs {
			n += proto.Size(e)
		}
		return n
	}
	ring := d.fsm.events
	var inRing []*pb.Event
	for i := range ring.n {
		inRing = append(inRing, ring.at(i).event())
	}
	wantAPI := filterEvents(inRing, "api", 2)
	if events, bytes, last, ok := api.Backlog(2, 2, 100, 1<<20); !ok || events != 2 || bytes != size(wantAPI) || last != 5 {
		t.Errorf("api backlog after 2 = %d events, %d bytes up to %d, ok %v; want 2 events (3, 5), %d bytes, up to 5",
			events, bytes, last, ok, size(wantAPI))
	}
	if events, _, last, ok := api.Backlog(2, 3, 100, 1<<20); !ok || events != 1 || last != 5 {
		t.Errorf("api backlog counted on from 3 = %d events up to %d, ok %v; want 1 (5)", events, last, ok)
	}
	if events, _, _, ok := all.Backlog(2, 2, 100, 1<<20); !ok || events != 4 {
		t.Errorf("backlog of every service after 2 = %d events, ok %v; want 4", events, ok)
	}
	if events, _, _, ok := all.Backlog(2, 2, 1, 1<<20); !ok || events != 2 {
		t.Errorf("backlog bounded to 1 event = %d events, want it to stop at 2 (just past the bound)", events)
	}
	if events, _, last, ok := all.Backlog(6, 6, 100, 1<<20); !ok || events != 0 || last != 6 {
		t.Errorf("backlog at the head = %d events up to %d, ok %v; want none, up to 6", events, last, ok)
	}
	for i := range 8 { // the ring of 8 now starts after revision 6
		d.mustApply(registerCmd(testInstance("api", fmt.Sprint(10+i), "n1")))
	}
	if _, _, _, ok := api.Backlog(2, 6, 100, 1<<20); ok {
		t.Error("backlog of a watcher whose unsent events left the ring reported ok")
	}
}

// TestWatchRestoreAtOrBeforeTheWatchersRevisionResets: a state replaced by
// one at a revision the watcher has already seen, or one before it, is no
// continuation of what the watcher followed: its next response is a
// snapshot of the restored state, not silence until the registry passes
// the watcher's revision (and then events against the state replaced).
func TestWatchRestoreAtOrBeforeTheWatchersRevisionResets(t *testing.T) {
	src := newFSMDriver(t, 64)
	for i := range 5 {
		src.mustApply(registerCmd(testInstance("api", fmt.Sprintf("restored-%d", i), "n1")))
	}
	snap := snapshotBytes(t, src.fsm)
	srcRev := src.fsm.Revision()

	for _, writes := range []int{5, 9} { // the watcher at the restored revision, then past it
		for _, service := range []string{"", "api"} {
			t.Run(fmt.Sprintf("watcher at %d/service=%s", writes, service), func(t *testing.T) {
				d := newFSMDriver(t, 64)
				for i := range writes {
					d.mustApply(registerCmd(testInstance("api", fmt.Sprintf("replaced-%d", i), "n1")))
				}
				w := d.fsm.Watch(service, 0)
				t.Cleanup(w.Close)
				drainWatcher(t, w)
				if w.Revision() < srcRev {
					t.Fatalf("watcher at revision %d, want at least the restored %d", w.Revision(), srcRev)
				}
				if err := d.fsm.Restore(io.NopCloser(bytes.NewReader(snap))); err != nil {
					t.Fatal(err)
				}
				resps := drainWatcher(t, w)
				if len(resps) != 1 {
					t.Fatalf("after the restore: %d responses, want one snapshot of the restored state", len(resps))
				}
				checkSnapshot(t, d.fsm, service, resps[0])

				// Events then follow the restored state.
				d.next = srcRev + 1
				rev := d.mustApply(deregisterCmd("api", "restored-0"))
				want := []string{fmt.Sprintf("DELETE api/restored-0@%d", rev)}
				if got := describeEvents(flattenEvents(drainWatcher(t, w))); !slices.Equal(got, want) {
					t.Errorf("after the restore: %v, want %v", got, want)
				}
			})
		}
	}
}
