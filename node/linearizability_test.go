package node_test

import (
	"cmp"
	"context"
	"fmt"
	"hash/fnv"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/node"
	"github.com/zrpcio/zrpc/testcluster"
)

// The linearizability check drives one service, linService, with instance
// ids i0..i3 from several clients while agents crash and get partitioned, and
// checks the recorded history against a sequential model of the registry.
const (
	linService = "lin.rpc"
	linIDs     = 4
	linClients = 6
	linMaxOps  = 300 // per client
	linRunFor  = 8 * time.Second
	// linMinTotal and linMinEach keep the check from passing vacuously. They
	// are set for a busy 2-core CI machine running other packages' tests at
	// the same time (a quiet machine completes 900-1,500 operations).
	linMinTotal    = 50
	linMinEach     = 4
	linFaultsFor   = 6 * time.Second // no new fault starts after this
	linCallTimeout = 3 * time.Second
)

func linID(i int) string { return "i" + strconv.Itoa(i) }

// linState is the model's registry: the metadata value "v" of each instance
// id, "" when the id is not registered. It is an array, so copying it (as
// Step does on every call) never shares storage with the caller's state.
type linState [linIDs]string

func (s linState) String() string {
	var parts []string
	for id, v := range s {
		if v != "" {
			parts = append(parts, linID(id)+"="+v)
		}
	}
	return "{" + strings.Join(parts, " ") + "}"
}

type linKind int

const (
	linRegister linKind = iota
	linDeregister
	linGet
)

func (k linKind) String() string { return [...]string{"register", "deregister", "get"}[k] }

type linInput struct {
	kind  linKind
	id    int    // register, deregister
	value string // register: the unique metadata value
}

type linResult int

const (
	linOK       linResult = iota
	linNotFound           // deregister: the instance was not registered
	linUnknown            // a write that failed: it may or may not have been applied
)

type linOutput struct {
	result linResult
	seen   linState // get: what it returned
}

// linModel is the registry's sequential specification. A write of unknown
// outcome is recorded with Return = MaxInt64, so the checker may place it
// anywhere after its call (including after every other operation, which is
// the same as "never applied"); wherever it is placed it has its effect.
var linModel = porcupine.Model{
	Init: func() any { return linState{} },
	Step: func(state, input, output any) (bool, any) {
		s, in, out := state.(linState), input.(linInput), output.(linOutput) // s is a copy
		switch in.kind {
		case linRegister:
			s[in.id] = in.value
			return true, s
		case linDeregister:
			present := s[in.id] != ""
			s[in.id] = ""
			switch out.result {
			case linOK:
				return present, s
			case linNotFound:
				return !present, s
			default:
				return true, s
			}
		default:
			return out.seen == s, s
		}
	},
	Equal: func(a, b any) bool { return a.(linState) == b.(linState) },
	Hash: func(state any) uint64 {
		h := fnv.New64a()
		for _, v := range state.(linState) {
			h.Write([]byte(v))
			h.Write([]byte{0})
		}
		return h.Sum64()
	},
	DescribeOperation: func(input, output any) string {
		in, out := input.(linInput), output.(linOutput)
		var call string
		switch in.kind {
		case linRegister:
			call = fmt.Sprintf("register(%s, v=%s)", linID(in.id), in.value)
		case linDeregister:
			call = fmt.Sprintf("deregister(%s)", linID(in.id))
		default:
			return "get() -> " + out.seen.String()
		}
		return call + " -> " + [...]string{"ok", "not found", "unknown"}[out.result]
	},
	DescribeState:             func(state any) string { return state.(linState).String() },
	DescribeOperationMetadata: func(info any) string { return fmt.Sprint(info) },
}

// TestRegistryIsLinearizable records a history of registrations,
// deregistrations and consistent reads sent to random agents while the
// leader is killed and restarted and agents are partitioned away, and checks
// it with porcupine.
func TestRegistryIsLinearizable(t *testing.T) {
	c := testcluster.New(t, 3,
		testcluster.WithConfig(func(cfg *node.Config) { cfg.LeaderWait = 2 * time.Second }),
		// Killed and partitioned agents must not be reaped: that would
		// remove their instances behind the model's back.
		testcluster.WithDeadNodeReap(time.Hour))

	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	h := &linHistory{start: time.Now()}
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { stop(); wg.Wait() }) // before the cluster closes
	for client := range linClients {
		wg.Go(func() { h.runClient(ctx, t, c, client, rand.New(rand.NewPCG(seed, uint64(client)))) })
	}

	linInjectFaults(t, c, h.start, rand.New(rand.NewPCG(seed, math.MaxUint64)))
	time.Sleep(time.Until(h.start.Add(linRunFor))) // the clients' run time
	stop()
	wg.Wait()

	h.checkEnough(t)
	h.check(t)
}

// linInjectFaults kills the leader and restarts it, then cuts one agent off
// (the leader in even cycles, a follower in odd ones) and heals, until
// linFaultsFor has passed. It runs on the test goroutine: the cluster's
// methods may call t.Fatal.
func linInjectFaults(t *testing.T, c *testcluster.Cluster, start time.Time, rng *rand.Rand) {
	hold := func() { time.Sleep(time.Second + time.Duration(rng.Int64N(int64(time.Second)))) } // a fault lasts this long, on purpose
	leader := func() int {
		c.WaitFor(20*time.Second, "a leader", func() bool { return c.LeaderIndex() >= 0 })
		return c.LeaderIndex()
	}
	for cycle := 0; time.Since(start) < linFaultsFor; cycle++ {
		time.Sleep(500 * time.Millisecond) // let clients run without faults for a while
		l := leader()
		if l < 0 {
			continue // lost it between the two calls
		}
		t.Logf("linearizability: cycle %d: kill leader %s", cycle, c.Name(l))
		c.Kill(l)
		hold()
		t.Logf("linearizability: cycle %d: restart %s", cycle, c.Name(l))
		c.Restart(l)

		cut := leader()
		if cut < 0 {
			continue
		}
		if cycle%2 == 1 {
			cut = (cut + 1 + rng.IntN(c.Size()-1)) % c.Size()
		}
		var rest []int
		for i := range c.Size() {
			if i != cut {
				rest = append(rest, i)
			}
		}
		c.Partition([]int{cut}, rest)
		hold()
		c.Heal()
	}
	leader()
}

// linHistory collects the operations of every client.
type linHistory struct {
	start   time.Time
	counter atomic.Int64 // makes each registered value unique
	mu      sync.Mutex
	ops     []porcupine.Operation
	failed  map[linKind]int // failed calls, including dropped gets
	errs    []string        // the first few errors, for the log
}

// now is a monotonic timestamp: time.Since uses the monotonic clock.
func (h *linHistory) now() int64 { return int64(time.Since(h.start)) }

func (h *linHistory) add(op porcupine.Operation, failed bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if failed {
		if h.failed == nil {
			h.failed = map[linKind]int{}
		}
		h.failed[op.Input.(linInput).kind]++
		if len(h.errs) < 8 {
			h.errs = append(h.errs, fmt.Sprint(op.Metadata))
		}
	}
	if op.Output != nil {
		h.ops = append(h.ops, op)
	}
}

// runClient sends one random operation at a time to a random running agent
// until ctx ends or it has sent linMaxOps.
func (h *linHistory) runClient(ctx context.Context, t *testing.T, c *testcluster.Cluster, client int, rng *rand.Rand) {
	for range linMaxOps {
		if ctx.Err() != nil {
			return
		}
		agent := rng.IntN(c.Size())
		for try := 0; try < c.Size() && c.Node(agent) == nil; try++ {
			agent = (agent + 1) % c.Size()
		}
		var in linInput
		switch r := rng.IntN(20); {
		case r < 7:
			in = linInput{kind: linRegister, id: rng.IntN(linIDs), value: strconv.FormatInt(h.counter.Add(1), 10)}
		case r < 12:
			in = linInput{kind: linDeregister, id: rng.IntN(linIDs)}
		default:
			in = linInput{kind: linGet}
		}
		h.add(h.do(t, c.Registry(agent), client, c.Name(agent), in))
		time.Sleep(time.Duration(rng.Int64N(int64(10 * time.Millisecond)))) // a modest rate, for -race on small machines
	}
}

// do performs one operation and describes it for the history. The operation
// has no Output when it must be left out (a failed read), and Return is
// MaxInt64 when it is a write of unknown outcome.
func (h *linHistory) do(t *testing.T, reg pb.RegistryClient, client int, agent string, in linInput) (porcupine.Operation, bool) {
	ctx, cancel := context.WithTimeout(context.Background(), linCallTimeout)
	defer cancel()
	op := porcupine.Operation{ClientId: client, Input: in, Call: h.now()}
	var (
		out linOutput
		hdr interface{ GetHeader() *pb.ResponseHeader }
		err error
	)
	switch in.kind {
	case linRegister:
		hdr, err = reg.Register(ctx, &pb.RegisterRequest{Instance: &pb.Instance{
			Service: linService, Id: linID(in.id), Address: fmt.Sprintf("127.0.0.1:%d", 9000+in.id),
			Metadata: map[string]string{"v": in.value},
		}})
	case linDeregister:
		hdr, err = reg.Deregister(ctx, &pb.DeregisterRequest{Service: linService, Id: linID(in.id)})
		// By code: a sentinel's ErrorInfo does not survive forwarding.
		if status.Code(err) == codes.NotFound {
			out.result, err = linNotFound, nil
		}
	case linGet:
		var resp *pb.GetResponse
		resp, err = reg.Get(ctx, &pb.GetRequest{Service: linService, Consistency: pb.Consistency_CONSISTENT})
		hdr, out.seen = resp, linSeen(t, resp.GetInstances())
	}
	op.Return = h.now()
	// The revision ties an answer to the Raft log when reading a failure.
	op.Metadata = fmt.Sprintf("via %s, revision %d", agent, hdr.GetHeader().GetRevision())
	if err == nil {
		op.Output = out
		return op, false
	}
	if status.Code(err) == codes.InvalidArgument {
		t.Errorf("%s via %s: %v", linModel.DescribeOperation(in, out), agent, err)
	}
	op.Metadata = fmt.Sprintf("%s via %s: %v", in.kind, agent, err)
	if in.kind != linGet {
		op.Output, op.Return = linOutput{result: linUnknown}, math.MaxInt64
	}
	return op, true
}

// linSeen turns a Get answer into the model's state.
func linSeen(t *testing.T, insts []*pb.Instance) linState {
	var s linState
	for _, inst := range insts {
		id, err := strconv.Atoi(strings.TrimPrefix(inst.Id, "i"))
		if err != nil || id < 0 || id >= linIDs || linID(id) != inst.Id || inst.Metadata["v"] == "" {
			t.Errorf("get returned an instance the test never registered: %v", inst)
			continue
		}
		s[id] = inst.Metadata["v"]
	}
	return s
}

// checkEnough fails the test when too few operations completed for the check
// to mean anything.
func (h *linHistory) checkEnough(t *testing.T) {
	done := map[string]int{}
	unknown := 0
	for _, op := range h.ops {
		in, out := op.Input.(linInput), op.Output.(linOutput)
		switch {
		case out.result == linUnknown:
			unknown++
		case in.kind == linRegister:
			done["register"]++
		case in.kind == linDeregister && out.result == linOK:
			done["deregister"]++
		case in.kind == linDeregister:
			done["deregister not found"]++
		default:
			done["get"]++
		}
	}
	t.Logf("linearizability: %d operations checked: completed %v, %d writes of unknown outcome; failed calls %v (failed gets are dropped)",
		len(h.ops), done, unknown, h.failed)
	for _, e := range h.errs {
		t.Logf("linearizability: a failed call: %s", e)
	}
	total := 0
	for kind, n := range done {
		total += n
		if n < linMinEach {
			t.Errorf("only %d completed %s operations; the check would be too weak", n, kind)
		}
	}
	if total < linMinTotal || len(done) < 4 {
		t.Fatalf("only %d completed operations (%v); the check would be too weak", total, done)
	}
}

// check runs porcupine on the history and, when it is not linearizable,
// writes a visualization that outlives the test.
func (h *linHistory) check(t *testing.T) {
	begin := time.Now()
	res, info := porcupine.CheckOperationsVerbose(linModel, h.ops, 60*time.Second)
	t.Logf("linearizability: porcupine says %s after %s", res, time.Since(begin).Round(time.Millisecond))
	switch res {
	case porcupine.Ok:
		return
	case porcupine.Unknown:
		t.Fatalf("porcupine timed out checking %d operations", len(h.ops))
	}
	f, err := os.CreateTemp("", "zrpc-registry-linearizability-*.html")
	if err != nil {
		t.Fatalf("history is not linearizable; could not create a visualization: %v", err)
	}
	f.Close()
	if err := porcupine.VisualizePath(linModel, info, f.Name()); err != nil {
		t.Fatalf("history is not linearizable; could not write a visualization: %v", err)
	}
	h.explain(t, info)
	t.Fatalf("history of %d operations is not linearizable; visualization: %s", len(h.ops), f.Name())
}

// explain logs where the longest linearization porcupine found gets stuck:
// the state it reached and every operation overlapping the earliest-returning
// one it could not place.
func (h *linHistory) explain(t *testing.T, info porcupine.LinearizationInfo) {
	var longest []int
	for _, l := range info.PartialLinearizations()[0] { // ids index h.ops: there is one partition
		if len(l) > len(longest) {
			longest = l
		}
	}
	placedAt := make(map[int]int, len(longest))
	state := linModel.Init()
	for n, id := range longest {
		placedAt[id] = n
		_, state = linModel.Step(state, h.ops[id].Input, h.ops[id].Output)
	}
	stuck := -1
	for id, op := range h.ops {
		if _, ok := placedAt[id]; !ok && (stuck < 0 || op.Return < h.ops[stuck].Return) {
			stuck = id
		}
	}
	if stuck < 0 {
		return
	}
	t.Logf("linearizability: porcupine placed %d operations (#n: n-th), reaching %v; >> marks the earliest-returning operation left over:",
		len(longest), state)
	var near []int
	for id, op := range h.ops {
		if op.Call <= h.ops[stuck].Return && op.Return >= h.ops[stuck].Call {
			near = append(near, id)
		}
	}
	slices.SortFunc(near, func(a, b int) int { return cmp.Compare(h.ops[a].Call, h.ops[b].Call) })
	for _, id := range near {
		op, mark, ret, place := h.ops[id], "  ", "pending", "not placed"
		if id == stuck {
			mark = ">>"
		}
		if op.Return != math.MaxInt64 {
			ret = time.Duration(op.Return).String()
		}
		if n, ok := placedAt[id]; ok {
			place = fmt.Sprintf("#%d", n)
		}
		t.Logf("%s client %d  %-12v %-12s %-40s %-10s (%v)", mark, op.ClientId, time.Duration(op.Call), ret,
			linModel.DescribeOperation(op.Input, op.Output), place, op.Metadata)
	}
}
