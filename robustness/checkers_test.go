package robustness

import (
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/internal/regmodel"
)

// Tests of the checks themselves, on made-up histories: each must pass a
// history that keeps zrpc's promises and fail one that breaks them. They
// run in every `go test` (no cluster, no ROBUSTNESS=1).

// complaints collects what a check reports.
type complaints []string

func (c *complaints) errorf(format string, args ...any) {
	*c = append(*c, fmt.Sprintf(format, args...))
}

func (c *complaints) logf(string, ...any) {}

func (c complaints) want(t *testing.T, substr string) {
	t.Helper()
	if substr == "" {
		if len(c) > 0 {
			t.Errorf("the check complained about a good history: %q", c)
		}
		return
	}
	for _, s := range c {
		if strings.Contains(s, substr) {
			return
		}
	}
	t.Errorf("the check did not report %q; it said %q", substr, c)
}

func event(typ pb.Event_Type, rev uint64, id int, v string) *pb.Event {
	return &pb.Event{Type: typ, Revision: rev, Instance: &pb.Instance{
		Service: linService, Id: regmodel.ID(id), Metadata: map[string]string{"v": v}, ModRevision: rev}}
}

func put(rev uint64, id int, v string) *pb.Event { return event(pb.Event_PUT, rev, id, v) }
func del(rev uint64, id int, v string) *pb.Event { return event(pb.Event_DELETE, rev, id, v) }

func snapshotAt(rev uint64, evs ...*pb.Event) *pb.WatchResponse {
	return &pb.WatchResponse{Header: &pb.ResponseHeader{Revision: rev}, Snapshot: true, Events: evs}
}

func events(rev uint64, evs ...*pb.Event) *pb.WatchResponse {
	return &pb.WatchResponse{Header: &pb.ResponseHeader{Revision: rev}, Events: evs}
}

func record(name string, resps ...*pb.WatchResponse) *watchRecord {
	return &watchRecord{name: name, service: linService, resps: resps}
}

func TestReplayOfAWatchThatKeepsItsPromises(t *testing.T) {
	var c complaints
	cov, final := replay(record("w",
		snapshotAt(10, put(7, 0, "a")),
		events(11, put(11, 1, "b")),
		events(13, del(12, 0, "a"), put(13, 2, "c"), put(13, 3, "d")),
	), c.errorf)
	c.want(t, "")
	if want := (regmodel.State{"", "b", "c", "d"}); final != want {
		t.Errorf("final state %s, want %s", final, want)
	}
	if len(cov) != 1 || cov[0].lo != 10 || cov[0].hi != 13 {
		t.Fatalf("coverage %+v, want one stretch 10-13", cov)
	}
	if cp, ok := cov[0].stateAt(12); !ok || cp.state != (regmodel.State{"", "b"}) {
		t.Errorf("state at revision 12: %s (%v), want {i1=b}", cp.state, ok)
	}
}

func TestReplayReportsBrokenWatchPromises(t *testing.T) {
	for _, tc := range []struct {
		name  string
		resps []*pb.WatchResponse
		want  string
	}{
		{"an event again in a later response",
			[]*pb.WatchResponse{snapshotAt(10), events(11, put(11, 0, "a")), events(11, put(11, 0, "a"))},
			"was delivered before"},
		{"an event twice in one response",
			[]*pb.WatchResponse{snapshotAt(10), events(11, put(11, 0, "a"), put(11, 0, "a"))},
			"delivered twice"},
		{"revisions going back within a response",
			[]*pb.WatchResponse{snapshotAt(10), events(12, put(12, 0, "a"), put(11, 1, "b"))},
			"after one at revision 12"},
		{"a snapshot older than what was delivered",
			[]*pb.WatchResponse{snapshotAt(10), events(11, put(11, 0, "a")), snapshotAt(9)},
			"before revision 11 already delivered"},
		{"events before the first snapshot",
			[]*pb.WatchResponse{events(11, put(11, 0, "a"))},
			"before any snapshot"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var c complaints
			replay(record("w", tc.resps...), c.errorf)
			c.want(t, tc.want)
		})
	}
}

func TestCompareWatchesFindsALostEvent(t *testing.T) {
	var c complaints
	full, _ := replay(record("a", snapshotAt(10), events(11, put(11, 0, "x")), events(12, put(12, 1, "y"))), c.errorf)
	same, _ := replay(record("b", snapshotAt(10), events(11, put(11, 0, "x")), events(12, put(12, 1, "y"))), c.errorf)
	lossy, _ := replay(record("c", snapshotAt(10), events(12, put(12, 1, "y"))), c.errorf)
	late, _ := replay(record("d", snapshotAt(11, put(11, 0, "x")), events(12, put(12, 1, "y"))), c.errorf)
	c.want(t, "")

	compareWatches([]string{"a", "b", "d"}, [][]*coverage{full, same, late}, c.errorf)
	c.want(t, "")
	compareWatches([]string{"a", "c"}, [][]*coverage{full, lossy}, c.errorf)
	c.want(t, "watches disagree at revision 11")
}

func TestCompareReadsAgainstWatches(t *testing.T) {
	var c complaints
	cov, _ := replay(record("w", snapshotAt(10), events(11, put(11, 0, "x")), events(14, put(12, 1, "y"), del(14, 0, "x"))), c.errorf)
	covs := [][]*coverage{cov}
	good := []read{
		{mode: pb.Consistency_STALE, rev: 10},
		{mode: pb.Consistency_STALE, rev: 11, seen: regmodel.State{"x"}},
		{mode: pb.Consistency_DEFAULT, rev: 13, seen: regmodel.State{"x", "y"}},
		{mode: pb.Consistency_STALE, rev: 99, seen: regmodel.State{"z"}}, // no watch saw 99: not compared
	}
	writes := []write{
		{in: regmodel.Input{Kind: regmodel.Register, ID: 0, Value: "x"}, rev: 11},
		{in: regmodel.Input{Kind: regmodel.Deregister, ID: 0}, rev: 14},
	}
	compareReads([]string{"w"}, covs, good, writes, c.errorf, c.logf)
	c.want(t, "")

	compareReads([]string{"w"}, covs, []read{{mode: pb.Consistency_STALE, rev: 12, seen: regmodel.State{"x"}}}, nil, c.errorf, c.logf)
	c.want(t, "had built {i0=x i1=y}")
	compareReads([]string{"w"}, covs, nil, []write{{in: regmodel.Input{Kind: regmodel.Register, ID: 2, Value: "q"}, rev: 11}}, c.errorf, c.logf)
	c.want(t, "but w built")
	compareReads([]string{"w"}, covs, nil, []write{{in: regmodel.Input{Kind: regmodel.Register, ID: 2, Value: "q"}, rev: 13}}, c.errorf, c.logf)
	c.want(t, "got no event at that revision")
}

func TestHistoryChecksOfReads(t *testing.T) {
	s := func(v string) regmodel.State { return regmodel.State{v} }
	for _, tc := range []struct {
		name   string
		reads  []read
		writes []write
		want   string
	}{
		{"one state per revision",
			[]read{{agent: 0, rev: 5, seen: s("a")}, {agent: 1, rev: 5, seen: s("b")}}, nil,
			"saw different states"},
		{"stale reads going back on one agent",
			[]read{{mode: pb.Consistency_STALE, rev: 6, seen: s("b")}, {mode: pb.Consistency_STALE, rev: 5, seen: s("a")}}, nil,
			"went back to revision 5"},
		{"stale reads going back across a restart",
			[]read{{mode: pb.Consistency_STALE, rev: 6, seen: s("b")}, {mode: pb.Consistency_STALE, incarnation: 1, rev: 5, seen: s("a")}}, nil,
			""},
		{"default reads going back across a restart",
			[]read{{mode: pb.Consistency_DEFAULT, rev: 6, seen: s("b")}, {mode: pb.Consistency_DEFAULT, incarnation: 1, rev: 0}}, nil,
			"went back to revision 0"},
		{"a default read older than the bound",
			[]read{{mode: pb.Consistency_DEFAULT, rev: 5, seen: s("a"), call: 10 * time.Second}},
			[]write{{in: regmodel.Input{Kind: regmodel.Register, Value: "b"}, rev: 8, returned: time.Second}},
			"older than register(i0, v=b)"},
		{"a default read within the bound",
			[]read{{mode: pb.Consistency_DEFAULT, rev: 5, seen: s("a"), call: 10 * time.Second}},
			[]write{{in: regmodel.Input{Kind: regmodel.Register, Value: "b"}, rev: 8, returned: 7 * time.Second}},
			""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var c complaints
			h := &history{reads: tc.reads, writes: tc.writes}
			h.checkRevisions(c.errorf)
			h.checkMonotonic(c.errorf)
			h.checkFreshness(c.errorf)
			c.want(t, tc.want)
		})
	}
}

func TestLinearizabilityCheck(t *testing.T) {
	op := func(client int, call, ret int64, in regmodel.Input, out regmodel.Output) porcupine.Operation {
		return porcupine.Operation{ClientId: client, Call: call, Return: ret, Input: in, Output: out}
	}
	register := regmodel.Input{Kind: regmodel.Register, ID: 0, Value: "a"}
	get := regmodel.Input{Kind: regmodel.Get, Mode: pb.Consistency_CONSISTENT}
	for _, tc := range []struct {
		name string
		ops  []porcupine.Operation
		want string
	}{
		{"a read after a write sees it", []porcupine.Operation{
			op(0, 0, 10, register, regmodel.Output{}),
			op(1, 20, 30, get, regmodel.Output{Seen: regmodel.State{"a"}}),
		}, ""},
		{"a read after a write misses it", []porcupine.Operation{
			op(0, 0, 10, register, regmodel.Output{}),
			op(1, 20, 30, get, regmodel.Output{Seen: regmodel.State{}}),
		}, "do not fit the model"},
		{"a write of unknown outcome may have happened", []porcupine.Operation{
			op(0, 0, math.MaxInt64, register, regmodel.Output{Result: regmodel.Unknown}),
			op(1, 20, 30, get, regmodel.Output{Seen: regmodel.State{"a"}}),
			op(1, 40, 50, get, regmodel.Output{Seen: regmodel.State{"a"}}),
		}, ""},
		{"a deregister that found nothing after a register", []porcupine.Operation{
			op(0, 0, 10, register, regmodel.Output{}),
			op(1, 20, 30, regmodel.Input{Kind: regmodel.Deregister, ID: 0}, regmodel.Output{Result: regmodel.NotFound}),
		}, "do not fit the model"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var c complaints
			h := &history{ops: tc.ops}
			h.checkLinearizable(c.errorf, c.logf)
			c.want(t, tc.want)
		})
	}
}
