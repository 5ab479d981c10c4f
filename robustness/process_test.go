//go:build linux

package robustness

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/prototext"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/client"
	"github.com/zrpcio/zrpc/internal/regmodel"
)

// The process run: three real zrpcd processes, each on its own loopback
// address, take registry and blob traffic from package client while the
// seed's faults hit them as an operator's machine would: SIGKILL of an
// agent or of the leader and a restart on the same data dir, SIGSTOP of the
// leader for 1-3 s (a third of them 6-9 s), and a graceful SIGTERM and restart. It checks what the
// in-process runs check of the registry (the model's history, with
// porcupine over writes and consistent reads), that watches end at the
// registry's state, that every acknowledged blob reads back byte-exact,
// that the agents converge, and what only a process shows: no agent
// panicked (its output has no panic or goroutine dump) and none exited
// unless signalled.
const (
	processAgents          = 3
	processTrafficFor      = 25 * time.Second
	processFaultsFor       = 21 * time.Second
	processRegistryWorkers = 3
	processOpsPerWorker    = 500 // bounds the history porcupine checks
	processBlobPuts        = 24
	processTermTimeout     = 30 * time.Second // a graceful shutdown must end within this
	processTailLines       = 60
)

// TestRobustnessProcesses runs one seed: ROBUSTNESS_SEED's, or a random one.
func TestRobustnessProcesses(t *testing.T) {
	skipUnlessEnabled(t)
	seed := rand.Uint64() % 1_000_000_000
	if os.Getenv("ROBUSTNESS_SEED") != "" {
		seed = seedsToRun(t)[0]
	}
	t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) { runProcesses(t, seed) })
}

func runProcesses(t *testing.T, seed uint64) {
	t.Logf("robustness: processes: seed %d (replay: ROBUSTNESS=1 ROBUSTNESS_SEED=%d go test -count=1 -run TestRobustnessProcesses ./robustness/)", seed, seed)
	p := newProcessRun(t, seed)
	p.startTraffic()
	p.injectFaults()
	time.Sleep(time.Until(p.start.Add(processTrafficFor)))
	p.stopTraffic()
	p.healAll()
	p.checkConverged()
	p.hist.checkRegistry(t.Errorf, t.Logf)
	p.checkWatches()
	p.checkBlobs()
	p.checkNoPanics()
}

// saveOutputs writes every agent's whole output to dir (ROBUSTNESS_LOGS),
// as seed-<seed>-<agent>.log, when a run failed: the test's log keeps only
// the last lines, which rarely reach back to the fault.
func (p *processRun) saveOutputs(dir string) {
	if dir == "" {
		return
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		p.t.Logf("keep the agents' output: %v", err)
		return
	}
	for _, a := range p.agents {
		f := filepath.Join(dir, fmt.Sprintf("seed-%d-%s.log", p.seed, a.name))
		if err := os.WriteFile(f, []byte(a.output()), 0o644); err != nil {
			p.t.Logf("keep %s's output: %v", a.name, err)
			continue
		}
		p.t.Logf("%s's whole output: %s", a.name, f)
	}
}

// processRun is one run: its agents, its clients and what they recorded.
type processRun struct {
	t    *testing.T
	seed uint64
	rng  *rand.Rand // the fault schedule's; used on the test goroutine only
	// wipes is the random source of the disk replacement (wipeOne), added
	// after seeds were recorded; wiped is set once it has happened (one
	// per run: blobs survive one agent's losses, not two).
	wipes *rand.Rand
	wiped bool
	// longStops draws which SIGSTOPs outlast the default reads' bound
	// (stopLeader), a source of its own for the same reason.
	longStops *rand.Rand
	// catchUps draws whether a replaced disk's agent is killed again
	// while it catches up (wipeOne), a source of its own for the same
	// reason.
	catchUps *rand.Rand
	start    time.Time

	agents  []*agentProcess
	clients []*client.Client // one per agent, that agent only
	all     *client.Client   // every agent, with failover

	mu           sync.Mutex
	incarnations []int // changes at every kill, SIGTERM and restart of an agent

	hist     *history
	watches  []*watchRecord
	blobs    *blobBook
	blobErrs []string // the first failed blob calls, for the log; guarded by mu

	ctx     context.Context
	cancel  context.CancelFunc
	traffic sync.WaitGroup
}

// newProcessRun builds zrpcd, starts the agents (the first bootstraps, the
// others join it) and waits until they are three voters with a leader.
func newProcessRun(t *testing.T, seed uint64) *processRun {
	p := &processRun{t: t, seed: seed, rng: rand.New(rand.NewPCG(seed, 0x9e0c)), wipes: rand.New(rand.NewPCG(seed, 0x3195)),
		longStops: rand.New(rand.NewPCG(seed, 0x5709)), catchUps: rand.New(rand.NewPCG(seed, 0xc47c)),
		incarnations: make([]int, processAgents), blobs: newBlobBook(seed)}
	dir := t.TempDir()
	zrpcd := buildZrpcd(t, dir)
	flags := []string{"--gossip-profile", "local", "--stale-read-bound", staleBound.String(),
		"--leader-wait", "2s", "--blob-block-size", "262144"}
	t.Cleanup(func() {
		if t.Failed() {
			for _, a := range p.agents {
				t.Logf("--- %s: the last %d lines of its output ---\n%s", a.name, processTailLines, a.tail(processTailLines))
			}
			p.saveOutputs(os.Getenv("ROBUSTNESS_LOGS"))
		}
	})
	for i := range processAgents {
		name := fmt.Sprintf("n%d", i+1)
		p.agents = append(p.agents, newAgentProcess(t, zrpcd, name, fmt.Sprintf("127.0.0.%d", 11+i), filepath.Join(dir, name), flags))
	}
	for i, a := range p.agents {
		var join []string
		if i > 0 {
			join = []string{p.agents[0].gossipAddr()}
		}
		if err := a.start(join); err != nil {
			t.Fatalf("start %s: %v", a.name, err)
		}
	}
	var addrs []string
	for _, a := range p.agents {
		p.clients = append(p.clients, p.newClient(a.grpcAddr()))
		addrs = append(addrs, a.grpcAddr())
	}
	p.all = p.newClient(addrs...)
	if !p.waitFor(60*time.Second, "three voters with a leader", p.membershipProblem) {
		t.FailNow()
	}
	p.start = time.Now()
	p.hist = newHistory(p.start)
	p.ctx, p.cancel = context.WithCancel(context.Background())
	t.Cleanup(p.stopTraffic) // before the clients close
	return p
}

func (p *processRun) newClient(endpoints ...string) *client.Client {
	cl, err := client.New(client.Config{Endpoints: endpoints, DialTimeout: time.Second})
	if err != nil {
		p.t.Fatalf("client of %v: %v", endpoints, err)
	}
	p.t.Cleanup(func() { cl.Close() })
	return cl
}

// waitFor polls problem until it returns "" and fails the test with the
// last problem when timeout passes first.
func (p *processRun) waitFor(timeout time.Duration, what string, problem func() string) bool {
	deadline := time.Now().Add(timeout)
	for {
		last := problem()
		if last == "" {
			return true
		}
		if time.Now().After(deadline) {
			p.t.Errorf("waited %s for %s: %s", timeout, what, last)
			return false
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// membershipProblem: the leader's Raft configuration holds every agent as a
// voter. Faults never last as long as the dead node reap delay, so none may
// have been removed.
func (p *processRun) membershipProblem() string {
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	peers, err := p.all.Peers(ctx)
	if err != nil {
		return err.Error()
	}
	var voters, leaders []string
	for _, peer := range peers {
		if peer.GetSuffrage() == "voter" {
			voters = append(voters, peer.GetId())
		}
		if peer.GetLeader() {
			leaders = append(leaders, peer.GetId())
		}
	}
	if len(voters) != processAgents || len(leaders) != 1 {
		return fmt.Sprintf("voters %v, leaders %v", voters, leaders)
	}
	return ""
}

func (p *processRun) incarnation(i int) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.incarnations[i]
}

func (p *processRun) nextIncarnation(i int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.incarnations[i]++
}

// pickAgent returns a random running agent (a paused one counts: calls to
// it wait), or the random one if none runs.
func (p *processRun) pickAgent(rng *rand.Rand) int {
	a := rng.IntN(len(p.agents))
	for try := 0; try < len(p.agents) && !p.agents[a].running(); try++ {
		a = (a + 1) % len(p.agents)
	}
	return a
}

// joinAddrs are the gossip addresses of every agent but i.
func (p *processRun) joinAddrs(i int) []string {
	var out []string
	for j, a := range p.agents {
		if j != i {
			out = append(out, a.gossipAddr())
		}
	}
	return out
}

// leader returns the agent that says it leads with the highest term, or -1.
// Paused agents are not asked.
func (p *processRun) leader() int {
	best, term := -1, uint64(0)
	for i, a := range p.agents {
		if !a.running() || a.isPaused() {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		st, err := p.clients[i].Status(ctx)
		cancel()
		if err == nil && st.GetRaftState() == "Leader" && (best < 0 || st.GetTerm() > term) {
			best, term = i, st.GetTerm()
		}
	}
	return best
}

// Traffic.

func (p *processRun) startTraffic() {
	for n := range processRegistryWorkers {
		p.goTraffic(func() { p.registryWorker(n) })
	}
	if !skipped("blobs") {
		p.goTraffic(p.blobWorker)
	}
	for i, a := range p.agents {
		p.watches = append(p.watches, watch(p.t, fmt.Sprintf("watch %s via %s", linService, a.name), p.clients[i], linService))
	}
}

func (p *processRun) goTraffic(f func()) {
	p.traffic.Add(1)
	go func() {
		defer p.traffic.Done()
		f()
	}()
}

func (p *processRun) stopTraffic() {
	if p.cancel != nil {
		p.cancel()
	}
	p.traffic.Wait()
}

// pause waits up to d, less if the traffic stops.
func (p *processRun) pause(rng *rand.Rand, d time.Duration) {
	select {
	case <-p.ctx.Done():
	case <-time.After(time.Duration(rng.Int64N(int64(d)) + 1)):
	}
}

// registryWorker sends one registry operation at a time through a random
// agent; worker 0 sends its writes through the failover client. Half the
// reads are consistent, the others default or stale.
func (p *processRun) registryWorker(n int) {
	rng := rand.New(rand.NewPCG(p.seed, uint64(100+n)))
	modes := []pb.Consistency{pb.Consistency_CONSISTENT, pb.Consistency_CONSISTENT, pb.Consistency_DEFAULT, pb.Consistency_STALE}
	for k := 0; k < processOpsPerWorker && p.ctx.Err() == nil; k++ {
		in := randomRegistryInput(rng, p.hist, modes)
		agent := p.pickAgent(rng)
		cl, via := p.clients[agent], p.agents[agent].name
		if n == 0 && in.Kind != regmodel.Get {
			cl, via = p.all, "any agent"
		}
		recordRegistryOp(p.t, p.hist, p.incarnation, registryCall{worker: n, agent: agent, cl: cl, via: via, in: in})
		p.pause(rng, 20*time.Millisecond)
	}
}

// blobWorker puts up to processBlobPuts blobs through the failover client
// and reads random ones back whole through random agents. Failed calls go
// to the log.
func (p *processRun) blobWorker() {
	rng := rand.New(rand.NewPCG(p.seed, 400))
	bt := p.blobTraffic()
	for puts := 0; p.ctx.Err() == nil; {
		var err error
		if puts < processBlobPuts && rng.IntN(2) == 0 {
			err = bt.put(rng)
			puts++
		} else {
			err = bt.get(rng, false)
		}
		if err != nil {
			p.noteBlobError(err.Error())
		}
		p.pause(rng, 300*time.Millisecond)
	}
}

func (p *processRun) blobTraffic() blobTraffic {
	return blobTraffic{t: p.t, seed: p.seed, book: p.blobs, all: p.all,
		agent: func(rng *rand.Rand) (*client.Client, string) {
			a := p.pickAgent(rng)
			return p.clients[a], p.agents[a].name
		}}
}

func (p *processRun) noteBlobError(s string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.blobErrs) < 10 {
		p.blobErrs = append(p.blobErrs, s)
	}
}

// Faults.

type processFault struct {
	key    string // for ROBUSTNESS_SKIP
	name   string
	weight int
	inject func(p *processRun)
}

var processFaults = []processFault{
	{"kill", "SIGKILL an agent and restart it", 3, (*processRun).killRestart},
	{"kill-leader", "SIGKILL the leader and restart it", 2, (*processRun).killLeader},
	{"stop-leader", "SIGSTOP the leader for 1-3 s (one in 3: 6-9 s, the leader or a follower, with reads sent to it), then SIGCONT", 3, (*processRun).stopLeader},
	{"term", "SIGTERM an agent (the leader half of the time) and restart it", 2, (*processRun).termRestart},
}

// injectFaults runs the schedule, one fault at a time with a quiet spell
// before each. A fault named in ROBUSTNESS_SKIP keeps its place in the
// schedule but is not injected.
func (p *processRun) injectFaults() {
	total := 0
	for _, f := range processFaults {
		total += f.weight
	}
	for n := 0; time.Since(p.start) < processFaultsFor; n++ {
		time.Sleep(300*time.Millisecond + p.randDuration(700*time.Millisecond))
		if wipe := p.wipes.IntN(processWipeOdds) == 0; wipe && !p.wiped {
			at := time.Since(p.start).Round(time.Millisecond)
			if skipped("wipe") {
				p.t.Logf("robustness: fault %d at %s: replace an agent's disk skipped (ROBUSTNESS_SKIP)", n, at)
			} else {
				p.t.Logf("robustness: fault %d at %s: replace an agent's disk", n, at)
				p.wipeOne()
			}
		}
		x := p.rng.IntN(total)
		for _, f := range processFaults {
			if x -= f.weight; x >= 0 {
				continue
			}
			at := time.Since(p.start).Round(time.Millisecond)
			if skipped(f.key) {
				p.t.Logf("robustness: fault %d at %s: %s skipped (ROBUSTNESS_SKIP)", n, at, f.name)
				break
			}
			p.t.Logf("robustness: fault %d at %s: %s", n, at, f.name)
			f.inject(p)
			break
		}
	}
}

func (p *processRun) randDuration(d time.Duration) time.Duration {
	return time.Duration(p.rng.Int64N(int64(d)))
}

// target returns the leader, or a random agent when there is none (or when
// the coin says so and leaderFirst is false). It draws the same random
// numbers whoever leads, so that the rest of the schedule does not depend
// on it.
func (p *processRun) target(leaderFirst bool) int {
	coin, random := p.rng.IntN(2), p.rng.IntN(len(p.agents))
	l := p.leader()
	if l < 0 || (!leaderFirst && coin == 0) {
		return random
	}
	return l
}

// processLongStopOdds: a SIGSTOP of the leader is a long one with odds 1
// in processLongStopOdds.
const processLongStopOdds = 3

// processProbeClient is the client id of the reads sent to a stopped
// leader (and the next one), after the registry workers'.
const processProbeClient = 50

// processWipeOdds: a slot starts with the disk replacement with odds 1 in
// processWipeOdds, once per run.
const processWipeOdds = 4

// wipeOne SIGKILLs an agent, removes its data dir and starts it again
// under its name and addresses, joining the others, as after a disk
// replacement: its Raft log, replica and shards are gone while its peers
// still count it as a voter.
func (p *processRun) wipeOne() {
	p.wiped = true
	i := p.wipes.IntN(len(p.agents))
	a := p.agents[i]
	p.t.Logf("robustness: SIGKILL %s and remove its data dir %s", a.name, a.dataDir)
	p.nextIncarnation(i)
	a.kill()
	if err := os.RemoveAll(a.dataDir); err != nil {
		p.t.Fatalf("remove %s: %v", a.dataDir, err)
	}
	time.Sleep(200*time.Millisecond + time.Duration(p.wipes.Int64N(int64(time.Second))))
	p.restart(i)
	if p.catchUps.IntN(2) == 0 {
		// Killed again while it may hold only part of the log: what a
		// leader told it committed must survive the restart (the vote
		// gate's kept floor, raftstore/votegate.go).
		time.Sleep(time.Duration(p.catchUps.Int64N(int64(200 * time.Millisecond))))
		p.t.Logf("robustness: SIGKILL %s again while it catches up, and restart it", a.name)
		p.nextIncarnation(i)
		a.kill()
		time.Sleep(200*time.Millisecond + time.Duration(p.catchUps.Int64N(int64(800*time.Millisecond))))
		p.restart(i)
	}
}

func (p *processRun) killRestart() { p.killAndRestart(p.rng.IntN(len(p.agents))) }

func (p *processRun) killLeader() { p.killAndRestart(p.target(true)) }

// killAndRestart sends agent i SIGKILL, keeps it down 0.5-3 s and starts
// it again on the same data dir.
func (p *processRun) killAndRestart(i int) {
	hold := 500*time.Millisecond + p.randDuration(2500*time.Millisecond)
	p.t.Logf("robustness: SIGKILL %s, down for %s", p.agents[i].name, hold.Round(time.Millisecond))
	p.nextIncarnation(i)
	p.agents[i].kill()
	time.Sleep(hold)
	p.restart(i)
}

// stopLeader freezes the leader with SIGSTOP for 1-3 s: longer than the
// election timeout, so the others elect a new leader while the old one
// still believes it leads; SIGCONT wakes it into a newer term. One stop in
// processLongStopOdds lasts 6-9 s instead, longer than a default read may
// lag (staleBound and the check's defaultSlack), and stops the leader or,
// half the time, a follower; half a second before it ends a default and a
// consistent read are sent to the stopped agent: they wait in its sockets
// and are answered when it wakes, when its replica is older than either
// may see.
func (p *processRun) stopLeader() {
	i := p.target(true)
	hold := time.Second + p.randDuration(2*time.Second)
	long, role := p.longStops.IntN(processLongStopOdds) == 0, "the leader"
	if long {
		hold = 6*time.Second + time.Duration(p.longStops.Int64N(int64(3*time.Second)))
		if other := 1 + p.longStops.IntN(len(p.agents)-1); p.longStops.IntN(2) == 0 {
			i, role = (i+other)%len(p.agents), "a follower" // if i leads
		}
	}
	p.t.Logf("robustness: SIGSTOP %s (%s) for %s", p.agents[i].name, role, hold.Round(time.Millisecond))
	p.agents[i].signal(syscall.SIGSTOP)
	if long {
		const early = 500 * time.Millisecond
		time.Sleep(hold - early)
		for k, mode := range []pb.Consistency{pb.Consistency_DEFAULT, pb.Consistency_CONSISTENT} {
			call := registryCall{worker: processProbeClient + k, agent: i, cl: p.clients[i], via: p.agents[i].name,
				in: regmodel.Input{Kind: regmodel.Get, Mode: mode}}
			p.goTraffic(func() { recordRegistryOp(p.t, p.hist, p.incarnation, call) })
		}
		hold = early
	}
	time.Sleep(hold)
	p.agents[i].signal(syscall.SIGCONT)
}

// termRestart shuts an agent down gracefully with SIGTERM (it must exit 0
// within processTermTimeout), keeps it down 0.3-1.5 s and starts it again.
func (p *processRun) termRestart() {
	i := p.target(false)
	hold := 300*time.Millisecond + p.randDuration(1200*time.Millisecond)
	p.t.Logf("robustness: SIGTERM %s, down for %s", p.agents[i].name, hold.Round(time.Millisecond))
	p.nextIncarnation(i)
	begin := time.Now()
	if err := p.agents[i].terminate(processTermTimeout); err != nil {
		p.t.Errorf("graceful shutdown: %v", err)
	} else {
		p.t.Logf("robustness: %s exited 0 %s after SIGTERM", p.agents[i].name, time.Since(begin).Round(time.Millisecond))
	}
	time.Sleep(hold)
	p.restart(i)
}

// restart starts agent i again on its data dir, joining the others.
func (p *processRun) restart(i int) {
	p.nextIncarnation(i)
	if err := p.agents[i].start(p.joinAddrs(i)); err != nil {
		p.t.Errorf("restart on the same data dir: %v", err)
	}
}

// healAll wakes a paused agent, restarts a stopped one and waits for a
// leader.
func (p *processRun) healAll() {
	for i, a := range p.agents {
		if a.isPaused() {
			a.signal(syscall.SIGCONT)
		}
		if !a.running() {
			p.restart(i)
		}
	}
	p.waitFor(settleFor, "a leader after the faults", func() string {
		if p.leader() < 0 {
			return "no agent leads"
		}
		return ""
	})
}

// Checks.

// checkConverged waits until every agent answers stale reads at one
// revision with one state (linService's instances and every service's
// counts), and the leader's configuration holds every agent as a voter;
// then checks that the agents applied one history to get there.
func (p *processRun) checkConverged() {
	var views []string
	var at uint64
	ok := p.waitFor(settleFor, "every agent at one revision with one state", func() string {
		views = views[:0]
		var ref string
		for i, a := range p.agents {
			rev, digest, err := p.replica(i)
			if err != nil {
				return fmt.Sprintf("%s: %v", a.name, err)
			}
			key := fmt.Sprintf("%d\n%s", rev, digest)
			if ref == "" {
				ref, at = key, rev
			}
			views = append(views, fmt.Sprintf("%s at revision %d", a.name, rev))
			if key != ref {
				return strings.Join(views, ", ") + " (or another state)"
			}
		}
		return p.membershipProblem()
	})
	if ok {
		p.t.Logf("robustness: converged: %s", strings.Join(views, ", "))
		p.checkApplyHashes(at)
	}
}

// checkApplyHashes fails the run when agents that reached revision rev
// with one state applied different histories to get there: their apply
// hashes at rev (Status apply_hash_at) differ. Every agent of the run is
// of this build, in a cluster it founded or joined, so each must know
// its hash (a replaced disk's agent through the snapshot it installed).
func (p *processRun) checkApplyHashes(rev uint64) {
	byHash := map[uint64][]string{}
	for _, a := range p.agents {
		st, err := statusAt(a.grpcAddr(), rev)
		if err != nil {
			p.t.Errorf("%s: Status with its apply hash at revision %d: %v", a.name, rev, err)
			continue
		}
		if !st.GetApplyHashKnown() {
			p.t.Errorf("%s does not know its apply hash at revision %d, where it converged: its chain was lost (a snapshot that did not carry it?)", a.name, rev)
			continue
		}
		byHash[st.GetApplyHash()] = append(byHash[st.GetApplyHash()], a.name)
	}
	if len(byHash) == 1 {
		p.t.Logf("robustness: the agents applied one history: their apply hashes at revision %d are equal", rev)
	}
	if len(byHash) > 1 {
		var groups []string
		for sum, names := range byHash {
			groups = append(groups, fmt.Sprintf("%s: %08x", strings.Join(names, ", "), sum))
		}
		slices.Sort(groups)
		p.t.Errorf("the agents hold one state at revision %d but applied different histories to reach it (their apply hashes there: %s): a replica applied a write the cluster did not commit, or missed one",
			rev, strings.Join(groups, "; "))
	}
}

// statusAt asks the agent serving gRPC at addr for its Status with its
// apply hash at revision rev.
func statusAt(addr string, rev uint64) (*pb.StatusResponse, error) {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	return pb.NewStatusClient(conn).Status(ctx, &pb.StatusRequest{ApplyHashAt: rev})
}

// replica reads agent i's replica through stale reads: linService's
// instances and every service's summary, at one revision.
func (p *processRun) replica(i int) (uint64, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	stale := client.WithConsistency(pb.Consistency_STALE)
	insts, rev, err := p.clients[i].Get(ctx, linService, stale)
	if err != nil {
		return 0, "", err
	}
	services, listRev, err := p.clients[i].List(ctx, stale)
	if err != nil {
		return 0, "", err
	}
	if listRev != rev {
		return 0, "", fmt.Errorf("moved from revision %d to %d while reading", rev, listRev)
	}
	slices.SortFunc(insts, func(a, b *pb.Instance) int { return strings.Compare(a.GetId(), b.GetId()) })
	var b strings.Builder
	for _, inst := range insts {
		b.WriteString(prototext.Format(inst))
	}
	for _, s := range services {
		b.WriteString(prototext.Format(s))
	}
	return rev, b.String(), nil
}

// checkWatches waits for every watch to reach linService's final state,
// stops them, and checks what they received: each on its own (replay), the
// watches against each other, and the reads and acknowledged writes against
// the states the watches built.
func (p *processRun) checkWatches() {
	var (
		insts []*pb.Instance
		rev   uint64
	)
	if !p.waitFor(settleFor, "a consistent read of the final state", func() string {
		ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
		defer cancel()
		var err error
		if insts, rev, err = p.all.Get(ctx, linService, client.WithConsistency(pb.Consistency_CONSISTENT)); err != nil {
			return err.Error()
		}
		return ""
	}) {
		return
	}
	final, _ := regmodel.StateOf(insts)
	p.t.Logf("watches: the registry holds %s at revision %d", final, rev)
	for _, w := range p.watches {
		p.waitFor(settleFor, w.name+" to reach the final state", func() string {
			_, got := replay(w, func(string, ...any) {})
			if _, err := w.responses(); err != nil {
				return fmt.Sprintf("stopped at %s: %v", got, err)
			}
			if got != final {
				return fmt.Sprintf("at %s, the registry holds %s", got, final)
			}
			return ""
		})
	}
	names := make([]string, len(p.watches))
	covs := make([][]*coverage, len(p.watches))
	for i, w := range p.watches {
		w.cancel()
		<-w.done
		names[i] = w.name
		covs[i], _ = replay(w, p.t.Errorf)
		resps, _ := w.responses()
		p.t.Logf("%s: %d responses, %d stretches without a snapshot", w.name, len(resps), len(covs[i]))
	}
	compareWatches(names, covs, p.t.Errorf)
	p.hist.mu.Lock()
	reads, writes := slices.Clone(p.hist.reads), slices.Clone(p.hist.writes)
	p.hist.mu.Unlock()
	compareReads(names, covs, reads, writes, p.t.Errorf, p.t.Logf)
}

// checkBlobs reads every acknowledged blob back whole through every agent
// (byte-exact, waiting while a read fails), and every other blob (its put
// failed) once: if it exists, it has its own bytes.
func (p *processRun) checkBlobs() {
	if skipped("blobs") {
		return
	}
	acked, _, unknown := p.blobs.byState() // the process run deletes none
	p.blobs.count(func(b *blobBook) {
		p.t.Logf("blobs: %d puts (%d acknowledged), %d gets, %d failed calls", b.puts, len(acked), b.gets, b.failed)
	})
	p.mu.Lock()
	for _, e := range p.blobErrs {
		p.t.Logf("blobs: a failed call: %s", e)
	}
	p.mu.Unlock()
	if len(acked) < 2 {
		p.t.Errorf("blobs: only %d puts acknowledged; the check would mean nothing", len(acked))
	}
	var agents []namedClient
	for i, a := range p.agents {
		agents = append(agents, namedClient{p.clients[i], a.name})
	}
	bt := p.blobTraffic()
	bt.readBackAll(acked, agents, "after the faults")
	bt.checkIfReadable(unknown)
}

// checkNoPanics: no agent's output shows a panic (fatal or recovered) or a
// goroutine dump, and no agent exited unless the test signalled it.
func (p *processRun) checkNoPanics() {
	for _, a := range p.agents {
		if excerpt := panicExcerpt(a.output()); excerpt != "" {
			p.t.Errorf("%s panicked:\n%s", a.name, excerpt)
		}
		for _, s := range a.exitedByThemselves() {
			p.t.Errorf("%s: %s", a.name, s)
		}
	}
}
