package node_test

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/zrpcio/zrpc/api/apierr"
	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/internal/regmodel"
	"github.com/zrpcio/zrpc/node"
	"github.com/zrpcio/zrpc/testcluster"
)

// The linearizability check drives one service, linService, with instance
// ids i0..i3 from several clients while agents crash and get partitioned, and
// checks the recorded history against a sequential model of the registry.
const (
	linService = "lin.rpc"
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
	failed  map[regmodel.Kind]int // failed calls, including dropped gets
	errs    []string              // the first few errors, for the log
}

// now is a monotonic timestamp: time.Since uses the monotonic clock.
func (h *linHistory) now() int64 { return int64(time.Since(h.start)) }

func (h *linHistory) add(op porcupine.Operation, failed bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if failed {
		if h.failed == nil {
			h.failed = map[regmodel.Kind]int{}
		}
		h.failed[op.Input.(regmodel.Input).Kind]++
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
		var in regmodel.Input
		switch r := rng.IntN(20); {
		case r < 7:
			in = regmodel.Input{Kind: regmodel.Register, ID: rng.IntN(regmodel.IDs), Value: strconv.FormatInt(h.counter.Add(1), 10)}
		case r < 12:
			in = regmodel.Input{Kind: regmodel.Deregister, ID: rng.IntN(regmodel.IDs)}
		default:
			in = regmodel.Input{Kind: regmodel.Get, Mode: pb.Consistency_CONSISTENT}
		}
		h.add(h.do(t, c.Registry(agent), client, c.Name(agent), in))
		time.Sleep(time.Duration(rng.Int64N(int64(10 * time.Millisecond)))) // a modest rate, for -race on small machines
	}
}

// do performs one operation and describes it for the history. The operation
// has no Output when it must be left out (a failed read), and Return is
// MaxInt64 when it is a write of unknown outcome.
func (h *linHistory) do(t *testing.T, reg pb.RegistryClient, client int, agent string, in regmodel.Input) (porcupine.Operation, bool) {
	ctx, cancel := context.WithTimeout(context.Background(), linCallTimeout)
	defer cancel()
	op := porcupine.Operation{ClientId: client, Input: in, Call: h.now()}
	var (
		out regmodel.Output
		hdr interface{ GetHeader() *pb.ResponseHeader }
		err error
	)
	switch in.Kind {
	case regmodel.Register:
		hdr, err = reg.Register(ctx, &pb.RegisterRequest{Instance: in.Instance(linService)})
	case regmodel.Deregister:
		hdr, err = reg.Deregister(ctx, &pb.DeregisterRequest{Service: linService, Id: regmodel.ID(in.ID)})
		// By code: a sentinel's ErrorInfo does not survive forwarding.
		if status.Code(err) == codes.NotFound {
			out.Result, err = regmodel.NotFound, nil
		}
	case regmodel.Get:
		var resp *pb.GetResponse
		resp, err = reg.Get(ctx, &pb.GetRequest{Service: linService, Consistency: in.Mode})
		hdr = resp
		var stranger error
		if out.Seen, stranger = regmodel.StateOf(resp.GetInstances()); stranger != nil {
			t.Errorf("get returned an %v", stranger)
		}
	}
	op.Return = h.now()
	// The revision ties an answer to the Raft log when reading a failure.
	op.Metadata = fmt.Sprintf("via %s, revision %d", agent, hdr.GetHeader().GetRevision())
	if err == nil {
		op.Output = out
		return op, false
	}
	if status.Code(err) == codes.InvalidArgument {
		t.Errorf("%s via %s: %v", regmodel.Model.DescribeOperation(in, out), agent, err)
	}
	op.Metadata = fmt.Sprintf("%s via %s: %v", in.Kind, agent, err)
	// A write the agent says it certainly did not apply (it proposed and
	// forwarded nothing) is left out, as a failed read is: were it applied
	// after all, a read would see a value no write in the history made.
	if in.Kind != regmodel.Get && !apierr.IsNotApplied(apierr.FromStatus(err)) {
		op.Output, op.Return = regmodel.Output{Result: regmodel.Unknown}, math.MaxInt64
	}
	return op, true
}

// checkEnough fails the test when too few operations completed for the check
// to mean anything.
func (h *linHistory) checkEnough(t *testing.T) {
	done := map[string]int{}
	unknown := 0
	for _, op := range h.ops {
		in, out := op.Input.(regmodel.Input), op.Output.(regmodel.Output)
		switch {
		case out.Result == regmodel.Unknown:
			unknown++
		case in.Kind == regmodel.Register:
			done["register"]++
		case in.Kind == regmodel.Deregister && out.Result == regmodel.OK:
			done["deregister"]++
		case in.Kind == regmodel.Deregister:
			done["deregister not found"]++
		default:
			done["get"]++
		}
	}
	t.Logf("linearizability: %d operations checked: completed %v, %d writes of unknown outcome; failed calls %v (failed gets, and writes certainly not applied, are left out)",
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
	res, info := porcupine.CheckOperationsVerbose(regmodel.Model, h.ops, 60*time.Second)
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
	if err := porcupine.VisualizePath(regmodel.Model, info, f.Name()); err != nil {
		t.Fatalf("history is not linearizable; could not write a visualization: %v", err)
	}
	for _, line := range regmodel.Explain(h.ops, info) {
		t.Log("linearizability: " + line)
	}
	t.Fatalf("history of %d operations is not linearizable; visualization: %s", len(h.ops), f.Name())
}
