package robustness

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/zrpcio/zrpc/api/apierr"
	"github.com/zrpcio/zrpc/client"
	"github.com/zrpcio/zrpc/internal/testwait"
)

// Blobs: workers put blobs under unique names (inline ones and multi-block
// ones), read them back whole and in ranges, and delete some. A blob's
// bytes are a function of the seed and its number, so any read can be
// checked against what was sent: a read returns those bytes or an error,
// never other bytes.

// blobState is what the clients know of one blob name.
type blobState int

const (
	blobPutting  blobState = iota // put sent, no answer yet
	blobUnknown                   // put failed: it may or may not exist
	blobAcked                     // put acknowledged
	blobDeleted                   // delete acknowledged
	blobDeleting                  // delete sent and not acknowledged: it may or may not exist
)

type blobEntry struct {
	name  string
	size  int
	state blobState
	rev   uint64 // of the acknowledged put
}

type blobBook struct {
	seed uint64
	mu   sync.Mutex
	next int
	all  []*blobEntry
	// counts for the log
	puts, gets, ranged, deletes, failed int
}

func newBlobBook(seed uint64) *blobBook { return &blobBook{seed: seed} }

// blobBytes are the bytes of blob number n of the given size.
func blobBytes(seed uint64, n, size int) []byte {
	rng := rand.New(rand.NewPCG(seed, uint64(n)<<1|1))
	b := make([]byte, (size+7)&^7)
	for i := 0; i < len(b); i += 8 {
		binary.LittleEndian.PutUint64(b[i:], rng.Uint64())
	}
	return b[:size]
}

func (b *blobBook) newEntry(rng *rand.Rand) (*blobEntry, int) {
	size := 1 + rng.IntN(8<<10) // inline
	if rng.IntN(2) == 0 {
		size = 64<<10 + rng.IntN(1200<<10) // one to five 256 KiB blocks
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	n := b.next
	b.next++
	e := &blobEntry{name: fmt.Sprintf("rb/b%d", n), size: size}
	b.all = append(b.all, e)
	return e, n
}

// pick returns a random blob that may exist, and its number.
func (b *blobBook) pick(rng *rand.Rand) (*blobEntry, int, blobState) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.all) == 0 {
		return nil, 0, 0
	}
	n := rng.IntN(len(b.all))
	return b.all[n], n, b.all[n].state
}

// claimAcked picks a random blob like pick and, when its put was
// acknowledged, books it deleting and returns it: no other worker deletes
// it meanwhile (the second of two deletes would rightly find nothing).
func (b *blobBook) claimAcked(rng *rand.Rand) *blobEntry {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.all) == 0 {
		return nil
	}
	e := b.all[rng.IntN(len(b.all))]
	if e.state != blobAcked {
		return nil
	}
	e.state = blobDeleting
	return e
}

func (b *blobBook) set(e *blobEntry, s blobState, rev uint64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	e.state, e.rev = s, rev
}

// byState returns the numbers of the blobs whose put was acknowledged, of
// those whose delete was, and of the others, which may exist or not.
func (b *blobBook) byState() (acked, gone, unknown []int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for n, e := range b.all {
		switch e.state {
		case blobAcked:
			acked = append(acked, n)
		case blobDeleted:
			gone = append(gone, n)
		default:
			unknown = append(unknown, n)
		}
	}
	return acked, gone, unknown
}

func (b *blobBook) count(f func(*blobBook)) {
	b.mu.Lock()
	defer b.mu.Unlock()
	f(b)
}

func (r *run) blobWorker(n int) {
	rng := r.workerRand(uint64(400 + n))
	bt := r.blobTraffic()
	for r.ctx.Err() == nil {
		switch x := rng.IntN(10); {
		case x < 4:
			_ = bt.put(rng) // a failed put is booked unknown
		case x < 9:
			_ = bt.get(rng, true) // a failed get is counted
		default:
			r.deleteBlob(rng)
		}
		r.pause(rng, 50*time.Millisecond)
	}
}

func (r *run) blobTraffic() blobTraffic {
	return blobTraffic{t: r.t, seed: r.seed, book: r.blobs, all: r.all,
		agent: func(rng *rand.Rand) (*client.Client, string) {
			a := r.pickAgent(rng)
			return r.agentClients[a], r.c.Name(a)
		}}
}

// blobTraffic is what the blob operations need of a run: its test, the
// seed the blobs' bytes derive from, its book, the failover client, and a
// random agent's client with the agent's name.
type blobTraffic struct {
	t     *testing.T
	seed  uint64
	book  *blobBook
	all   *client.Client
	agent func(*rand.Rand) (*client.Client, string)
}

// put puts a new blob through the failover client and books it
// acknowledged at its revision, or unknown and returns why.
func (bt blobTraffic) put(rng *rand.Rand) error {
	e, n := bt.book.newEntry(rng)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := bt.all.PutBlob(ctx, e.name, bytes.NewReader(blobBytes(bt.seed, n, e.size)), client.PutOptions{Size: int64(e.size)})
	bt.book.count(func(b *blobBook) { b.puts++ })
	if err != nil {
		bt.book.set(e, blobUnknown, 0)
		bt.book.count(func(b *blobBook) { b.failed++ })
		return fmt.Errorf("put %s (size %d) via any agent: %w", e.name, e.size, err)
	}
	bt.book.set(e, blobAcked, resp.GetHeader().GetRevision())
	return nil
}

// get reads a random blob through a random agent: whole, or when ranged,
// one time in three a range (some with a length past 2^63-1, which the API
// refuses as larger than any blob, and whose offset+length may overflow).
// Other bytes than the blob's, or an InvalidArgument for a request that
// was valid, fail the test; any other error is returned.
func (bt blobTraffic) get(rng *rand.Rand, ranged bool) error {
	e, n, state := bt.book.pick(rng)
	if e == nil {
		return nil
	}
	var opts client.GetOptions
	overflow := false
	if ranged && rng.IntN(3) == 0 {
		opts.Offset = uint64(rng.IntN(e.size))
		opts.Length = uint64(rng.IntN(e.size-int(opts.Offset)) + 1)
		if rng.IntN(4) == 0 && !skipped("range-overflow") {
			// Past the end and past math.MaxInt64, which the API
			// refuses (storage/get.go readRange); from offset 2 on,
			// offset+length also overflows.
			opts.Length = math.MaxUint64 - opts.Offset/2
			overflow = opts.Length > math.MaxInt64
		}
	}
	if state == blobAcked {
		opts.MinRevision = e.rev
	}
	cl, via := bt.agent(rng)
	got, err := readBlob(cl, e.name, opts)
	bt.book.count(func(b *blobBook) {
		b.gets++
		if opts.Offset != 0 || opts.Length != 0 {
			b.ranged++
		}
		if err != nil {
			b.failed++
		}
	})
	if errors.Is(err, apierr.ErrInvalidArgument) && !overflow {
		bt.t.Errorf("blobs: get %s offset %d length %d via %s: %v", e.name, opts.Offset, opts.Length, via, err)
		return nil
	}
	if err != nil {
		return fmt.Errorf("get %s offset %d length %d via %s: %w", e.name, opts.Offset, opts.Length, via, err)
	}
	bt.checkBytes(e, n, opts, got, via)
	return nil
}

// checkBytes fails the test when a read returned other bytes than the
// blob's.
func (bt blobTraffic) checkBytes(e *blobEntry, n int, opts client.GetOptions, got []byte, via string) {
	want := blobBytes(bt.seed, n, e.size)
	start := min(int(opts.Offset), e.size)
	end := e.size
	if opts.Length > 0 && opts.Length < uint64(e.size-start) {
		end = start + int(opts.Length)
	}
	if bytes.Equal(got, want[start:end]) {
		return
	}
	at := 0
	for at < min(len(got), end-start) && got[at] == want[start+at] {
		at++
	}
	bt.t.Errorf("blobs: get %s (size %d) offset %d length %d via %s returned %d wrong bytes: first difference at byte %d of %d wanted",
		e.name, e.size, opts.Offset, opts.Length, via, len(got), start+at, end-start)
}

// namedClient is one agent's client and the agent's name.
type namedClient struct {
	cl   *client.Client
	name string
}

// readBackAll reads each blob of nums whole through each of agents,
// retrying a failed read until settleFor has passed (repair may be
// rebuilding), and fails the test on wrong bytes and on every read that
// still fails then. when says at what point of the run it reads.
func (bt blobTraffic) readBackAll(nums []int, agents []namedClient, when string) {
	deadline := time.Now().Add(settleFor)
	for _, n := range nums {
		e := bt.book.all[n]
		for _, a := range agents {
			for {
				got, err := readBlob(a.cl, e.name, client.GetOptions{MinRevision: e.rev})
				if err == nil {
					bt.checkBytes(e, n, client.GetOptions{}, got, a.name)
					break
				}
				if time.Now().After(deadline) {
					bt.t.Errorf("blobs: %s: acknowledged blob %s (size %d, revision %d) unreadable via %s: %v",
						when, e.name, e.size, e.rev, a.name, err)
					break
				}
				time.Sleep(200 * time.Millisecond)
			}
		}
	}
}

// checkIfReadable reads each blob of nums, which may exist or not, once
// through the failover client: if it does, it has its own bytes.
func (bt blobTraffic) checkIfReadable(nums []int) {
	for _, n := range nums {
		e := bt.book.all[n]
		if got, err := readBlob(bt.all, e.name, client.GetOptions{}); err == nil {
			bt.checkBytes(e, n, client.GetOptions{}, got, "any agent")
		}
	}
}

func readBlob(cl *client.Client, name string, opts client.GetOptions) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	br, err := cl.GetBlob(ctx, name, opts)
	if err != nil {
		return nil, err
	}
	defer br.Close()
	return io.ReadAll(br)
}

func (r *run) deleteBlob(rng *rand.Rand) {
	e := r.blobs.claimAcked(rng)
	if e == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	_, err := r.all.DeleteBlob(ctx, e.name)
	r.blobs.count(func(b *blobBook) { b.deletes++ })
	switch {
	case err == nil:
		r.blobs.set(e, blobDeleted, 0)
	case errors.Is(err, apierr.ErrNotFound):
		r.t.Errorf("blobs: delete of acknowledged blob %s: %v", e.name, err)
	}
}

// checkBlobs reads every blob that may exist through every core agent once
// the cluster has settled: acknowledged ones must read back byte-exact
// (waiting for repair), deleted ones must be gone. Then it waits for repair
// to finish, loses every shard file of one more agent, and reads everything
// again: a cluster that rebuilt what it lost tolerates that.
func (r *run) checkBlobs() {
	acked, gone, unknown := r.blobs.byState()
	r.blobs.count(func(b *blobBook) {
		r.t.Logf("blobs: %d puts (%d acknowledged), %d gets (%d ranged), %d deletes, %d failed calls",
			b.puts, len(acked), b.gets, b.ranged, b.deletes, b.failed)
	})
	if len(acked) < 2 {
		r.t.Errorf("blobs: only %d puts acknowledged; the check would mean nothing", len(acked))
	}
	r.readBackAll(acked, "after healing")
	for _, n := range gone {
		e := r.blobs.all[n]
		if _, err := readBlob(r.all, e.name, client.GetOptions{}); !errors.Is(err, apierr.ErrNotFound) {
			r.t.Errorf("blobs: %s was deleted (acknowledged) but a get says %v", e.name, err)
		}
	}
	r.blobTraffic().checkIfReadable(unknown)
	if r.t.Failed() {
		return
	}
	r.scrubAll()
	r.waitRepairIdle()
	victim := r.damageVictim()
	r.c.DamageShards(victim, r.rng, math.MaxInt, 0 /* delete */)
	r.readBackAll(acked, fmt.Sprintf("after losing every shard file of %s", r.c.Name(victim)))
}

// readBackAll reads the acknowledged blobs nums back through every core
// agent.
func (r *run) readBackAll(nums []int, when string) {
	var agents []namedClient
	for agent := range r.core {
		agents = append(agents, namedClient{r.agentClients[agent], r.c.Name(agent)})
	}
	r.blobTraffic().readBackAll(nums, agents, when)
}

// scrubAll has every running core agent verify its shards once and
// report the corrupt ones. Repair knows of a flipped byte only once a
// scrub pass (or a read) has found it; the background scrubber would, one
// BlobScrubInterval and a pass later, but where its pass stands when the
// check begins is luck (a restarted agent starts a new one), and losing
// another agent's shards on top of an undiscovered corrupt one is two
// losses in a block.
func (r *run) scrubAll() {
	for i := range r.core {
		n := r.c.Node(i)
		if n == nil {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), settleFor)
		if bad := n.Blobs().ScrubOnce(ctx, 0); bad > 0 {
			r.t.Logf("blobs: a scrub pass of %s found %d corrupt or lost shards", r.c.Name(i), bad)
		}
		cancel()
	}
}

// waitRepairIdle waits until the leader's repair has nothing queued, in
// progress or waiting. Once an added agent has left, shards may wait for
// an agent for good: a 4+2 blob put while six agents ran has a shard on
// each, and the five left each hold one already (repair keeps a block's
// shards on distinct agents; RepairStatus counts those as
// waiting_for_agent).
func (r *run) waitRepairIdle() {
	r.mu.Lock()
	someLeft := len(r.left) > 0
	r.mu.Unlock()
	var last string
	idle := testwait.Until(settleFor, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
		defer cancel()
		st, err := r.all.RepairStatus(ctx)
		if err != nil {
			last = err.Error()
			return false
		}
		last = st.String()
		waiting := st.Waiting
		if someLeft {
			waiting -= st.WaitingForAgent
		}
		return st.Queued == 0 && st.InProgress == 0 && waiting == 0 && st.Retrying == 0 && st.LastScan > 0
	})
	if !idle {
		r.t.Fatalf("blobs: repair not done after %s; its last status: %s", settleFor, last)
	}
	r.t.Logf("blobs: repair idle: %s", last)
}

// damageVictim picks a core agent other than the one damaged during the
// run: losing a second agent's shards is within the parity only if the
// first agent's were rebuilt.
func (r *run) damageVictim() int {
	candidates := slices.DeleteFunc(slices.Collect(func(yield func(int) bool) {
		for i := range r.core {
			if !yield(i) {
				return
			}
		}
	}), func(i int) bool { return i == r.damaged })
	return candidates[r.rng.IntN(len(candidates))]
}
