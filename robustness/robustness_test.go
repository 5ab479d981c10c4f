package robustness

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/zrpcio/zrpc/client"
	"github.com/zrpcio/zrpc/node"
	"github.com/zrpcio/zrpc/testcluster"
)

// Timing of one run. Faults hold for at most maxHold, well under the dead
// node reap delay, so that no agent is legitimately reaped but by the reap
// fault (reap_test.go), which runs with its own shorter reap: any other
// reaped agent (or its instances vanishing) is a failure.
const (
	trafficFor   = 12 * time.Second // clients run this long
	faultsFor    = 10 * time.Second // no fault starts after this
	maxHold      = 5 * time.Second  // the longest a fault lasts
	deadNodeReap = 20 * time.Second
	staleBound   = 2 * time.Second
	settleFor    = 60 * time.Second // convergence after healing
	callTimeout  = 3 * time.Second
)

// TestRobustness runs the seeds chosen by the environment: ROBUSTNESS_SEED=N
// replays one seed; otherwise SEEDS (default 1) random seeds run.
func TestRobustness(t *testing.T) {
	skipUnlessEnabled(t)
	t.Parallel() // its seeds share -parallel's slots with the regressions'
	for _, seed := range seedsToRun(t) {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			t.Parallel() // up to -parallel runs at once: each mostly waits
			runSeed(t, seed)
		})
	}
}

func skipUnlessEnabled(t *testing.T) {
	if os.Getenv("ROBUSTNESS") != "1" {
		t.Skip("robustness runs take minutes: set ROBUSTNESS=1 (make robustness)")
	}
}

// skipped reports whether ROBUSTNESS_SKIP (a comma-separated list) names
// part of the traffic to leave out; docs/robustness.md lists the names. It
// is for running the rest of the suite while a defect it hits at once
// (a panic that ends the test process) is being fixed.
func skipped(part string) bool {
	return slices.Contains(strings.Split(os.Getenv("ROBUSTNESS_SKIP"), ","), part)
}

func seedsToRun(t *testing.T) []uint64 {
	if s := os.Getenv("ROBUSTNESS_SEED"); s != "" {
		seed, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("ROBUSTNESS_SEED=%q: want an unsigned integer: %v", s, err)
		}
		return []uint64{seed}
	}
	n := 1
	if s := os.Getenv("SEEDS"); s != "" {
		var err error
		if n, err = strconv.Atoi(s); err != nil || n < 0 {
			t.Fatalf("SEEDS=%q: want a count of seeds", s)
		}
	}
	seeds := make([]uint64, n)
	for i := range seeds {
		seeds[i] = rand.Uint64() % 1_000_000_000
	}
	return seeds
}

// runSeed runs one scenario generated from seed and checks it.
func runSeed(t *testing.T, seed uint64) {
	t.Logf("robustness: seed %d (replay: ROBUSTNESS=1 ROBUSTNESS_SEED=%d go test -run 'TestRobustness' ./robustness/)", seed, seed)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("robustness: seed %d failed; once its cause is understood add it to regressions in regressions_test.go", seed)
			if f := os.Getenv("ROBUSTNESS_FAILED"); f != "" {
				appendLine(f, strconv.FormatUint(seed, 10))
			}
		}
	})
	r := newRun(t, seed)
	r.startMonitor()
	if !skipped("checked") {
		r.startChecked()
	}
	r.startResidents()
	r.startTraffic()
	r.injectFaults()
	time.Sleep(time.Until(r.start.Add(trafficFor)))
	r.stopTraffic()
	r.healAll()
	r.checkConverged()
	r.checkMembership()
	r.checkRemovals()
	r.checkResidents()
	r.hist.checkRegistry(t.Errorf, t.Logf)
	r.checkWatches()
	r.checkSessions()
	r.checkTTL()
	if !skipped("checked") {
		r.checkChecked()
	}
	if !skipped("blobs") {
		r.checkBlobs()
	}
}

func appendLine(path, line string) {
	f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return
	}
	defer f.Close()
	fmt.Fprintln(f, line)
}

// run is one scenario: its cluster, its clients and what they recorded.
type run struct {
	t    *testing.T
	seed uint64
	rng  *rand.Rand // the fault schedule's; used on the test goroutine only
	c    *testcluster.Cluster
	// extra is the random source of the faults added to the schedule
	// later (faults_test.go), so that older seeds keep their schedule;
	// used on the test goroutine only.
	extra *rand.Rand
	// wipes is the random source of the disk replacements (wipeFault),
	// added after extra's faults; used on the test goroutine only.
	wipes *rand.Rand
	// silent is the random source that makes a partition silent, added
	// after wipes; used on the test goroutine only.
	silent *rand.Rand
	// latency is the random source of the slow links (latencyFault),
	// added after silent; used on the test goroutine only.
	latency *rand.Rand
	// diskFail is the random source of the failing Raft disks
	// (diskFailFault), added after latency; used on the test goroutine
	// only.
	diskFail *rand.Rand
	// shardFull is the random source of the full shard disks
	// (shardFullFault), added after diskFail; used on the test goroutine
	// only.
	shardFull *rand.Rand
	// flap is the random source of the flapping links (flapFault), added
	// after shardFull; used on the test goroutine only.
	flap *rand.Rand
	// fullLog is the random source of failRaftDisk's choice between a
	// failing and a full disk, added after flap; used on the test
	// goroutine only.
	fullLog *rand.Rand
	// sectors is the random source of the unreadable shards
	// (badSectorsFault), added after fullLog; used on the test goroutine
	// only.
	sectors  *rand.Rand
	reap     time.Duration // dead_node_reap of this run
	reapSlot int           // the slot of the schedule the reap fault takes, or -1
	// core agents 0..core-1 take registry writes and are never removed; an
	// agent added by a fault may leave again.
	core  int
	start time.Time

	agentClients []*client.Client // one per core agent, that agent only
	all          *client.Client   // every core agent, with failover

	mu           sync.Mutex
	incarnations []int // restarts of each agent
	damaged      int   // the agent whose shard files were damaged, or -1
	joined       []int // agents added and still running
	left         []int // agents added that left again
	reaped       []reapWindow

	monitor       *membershipMonitor
	residents     []*resident
	stopResidents func()

	hist     *history
	watches  []*watchRecord
	blobs    *blobBook
	sessions *sessionBook
	ttl      *ttlBook
	checked  *checkedBook

	ctx     context.Context
	cancel  context.CancelFunc
	traffic sync.WaitGroup
}

func newRun(t *testing.T, seed uint64) *run {
	rng := rand.New(rand.NewPCG(seed, 0x5eed))
	core := 3
	if rng.IntN(4) == 0 {
		core = 5
	}
	extra, reapSlot, reap := rand.New(rand.NewPCG(seed, 0xfa17)), -1, deadNodeReap
	if extra.IntN(4) == 0 {
		reapSlot = extra.IntN(3)
		if !skipped("reap") {
			reap = reapFaultReap
		}
	}
	t.Logf("robustness: %d agents, dead_node_reap %s", core, reap)
	offsets := clockOffsets(t, seed, core)
	c := testcluster.New(t, core, append(clusterOptions(reap), offsets...)...)
	r := &run{t: t, seed: seed, rng: rng, extra: extra, wipes: rand.New(rand.NewPCG(seed, 0x3195)), silent: rand.New(rand.NewPCG(seed, 0x5117)),
		latency: rand.New(rand.NewPCG(seed, 0x1a7e)), diskFail: rand.New(rand.NewPCG(seed, 0xd15c)),
		shardFull: rand.New(rand.NewPCG(seed, 0xf011)), flap: rand.New(rand.NewPCG(seed, 0xf1a9)),
		fullLog: rand.New(rand.NewPCG(seed, 0xf1d5)), sectors: rand.New(rand.NewPCG(seed, 0xbad5)), reap: reap, reapSlot: reapSlot, c: c, core: core,
		incarnations: make([]int, core), damaged: -1, blobs: newBlobBook(seed), sessions: &sessionBook{}, ttl: &ttlBook{}}
	for i := range core {
		r.agentClients = append(r.agentClients, r.newClient(c.GRPCAddr(i)))
	}
	var addrs []string
	for i := range core {
		addrs = append(addrs, c.GRPCAddr(i))
	}
	r.all = r.newClient(addrs...)
	r.start = time.Now()
	r.hist = newHistory(r.start)
	r.ctx, r.cancel = context.WithCancel(context.Background())
	t.Cleanup(r.stopTraffic) // before the cluster closes
	return r
}

// Clocks: in a third of the runs, one or two of the core agents run on a
// wall clock that is off by clockOffsetMin to clockOffsetMax, ahead or
// behind, for their whole life (testcluster.WithClockOffset): leases, TTLs
// and command times then cross machines whose clocks disagree, as they do
// where NTP is missing or broken.
const (
	clockOffsetOdds = 3
	clockOffsetMin  = 500 * time.Millisecond
	clockOffsetMax  = time.Minute
)

// clockOffsets draws the run's clock offsets from their own random source
// (older seeds keep their schedule) and logs them; ROBUSTNESS_SKIP=clock
// leaves every clock right.
func clockOffsets(t *testing.T, seed uint64, core int) []testcluster.Option {
	rng := rand.New(rand.NewPCG(seed, 0xc10c))
	if rng.IntN(clockOffsetOdds) != 0 || skipped("clock") {
		return nil
	}
	var opts []testcluster.Option
	var said []string
	for _, i := range rng.Perm(core)[:1+rng.IntN(2)] {
		d := clockOffsetMin + time.Duration(rng.Int64N(int64(clockOffsetMax-clockOffsetMin)))
		if rng.IntN(2) == 0 {
			d = -d
		}
		d = d.Round(time.Millisecond)
		name := fmt.Sprintf("n%d", i+1)
		opts = append(opts, testcluster.WithClockOffset(name, d))
		sign := "+"
		if d < 0 {
			sign = ""
		}
		said = append(said, fmt.Sprintf("%s %s%s", name, sign, d))
	}
	t.Logf("robustness: clock offsets %s", strings.Join(said, ", "))
	return opts
}

// clusterOptions configure every agent of a run, added ones too.
func clusterOptions(reap time.Duration) []testcluster.Option {
	return []testcluster.Option{
		testcluster.WithDeadNodeReap(reap),
		testcluster.WithConfig(func(cfg *node.Config) {
			cfg.LeaderWait = 2 * time.Second
			cfg.StaleReadBound = staleBound
			cfg.BlobBlockSize = 256 << 10
			cfg.BlobRepairInterval = 500 * time.Millisecond
			cfg.BlobRepairDelay = 3 * time.Second
			cfg.BlobScrubInterval = 2 * time.Second
			cfg.BlobScrubRate = 64 << 20
		}),
	}
}

func (r *run) newClient(endpoints ...string) *client.Client {
	cl, err := client.New(client.Config{Endpoints: endpoints, DialTimeout: time.Second})
	if err != nil {
		r.t.Fatalf("client of %v: %v", endpoints, err)
	}
	r.t.Cleanup(func() { cl.Close() })
	return cl
}

// workerRand is the random source of traffic worker n.
func (r *run) workerRand(n uint64) *rand.Rand { return rand.New(rand.NewPCG(r.seed, n)) }

func (r *run) incarnation(i int) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.incarnations[i]
}

// pickAgent returns a random running core agent (or a random one if none
// runs).
func (r *run) pickAgent(rng *rand.Rand) int {
	a := rng.IntN(r.core)
	for try := 0; try < r.core && r.c.Node(a) == nil; try++ {
		a = (a + 1) % r.core
	}
	return a
}

func (r *run) stopTraffic() {
	r.cancel()
	r.traffic.Wait()
}

// healAll ends every fault and restarts every core agent, then waits for a
// leader.
func (r *run) healAll() {
	r.c.Heal()
	r.c.RestoreLinks()
	for i := range r.c.Size() {
		r.c.SlowDisk(i, 0)
		r.c.SlowShardDisk(i, 0)
		r.c.FillShardDisk(i, false)
		r.c.UnreadableShards(i)
		r.c.FailShardDisk(i, false)
	}
	for i := range r.core {
		if r.c.Node(i) == nil {
			r.restart(i)
		}
	}
	r.c.WaitFor(settleFor, "a leader after healing", func() bool { return r.c.LeaderIndex() >= 0 })
}

func (r *run) restart(i int) {
	r.mu.Lock()
	r.incarnations[i]++
	r.mu.Unlock()
	r.c.Restart(i)
}

// kill crashes agent i; its incarnation changes at once, so that reads
// racing with the crash count as the next incarnation's.
func (r *run) kill(i int) {
	r.mu.Lock()
	r.incarnations[i]++
	r.mu.Unlock()
	r.c.Kill(i)
}

// running lists the agents that run now.
func (r *run) running() []int {
	var out []int
	for i := range r.c.Size() {
		if r.c.Node(i) != nil {
			out = append(out, i)
		}
	}
	return out
}
