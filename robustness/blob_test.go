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
	"time"

	"github.com/zrpcio/zrpc/api/apierr"
	"github.com/zrpcio/zrpc/client"
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
	blobDeleting                  // delete failed: it may or may not exist
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

func (b *blobBook) set(e *blobEntry, s blobState, rev uint64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	e.state, e.rev = s, rev
}

func (b *blobBook) count(f func(*blobBook)) {
	b.mu.Lock()
	defer b.mu.Unlock()
	f(b)
}

func (r *run) blobWorker(n int) {
	rng := r.workerRand(uint64(400 + n))
	for r.ctx.Err() == nil {
		switch x := rng.IntN(10); {
		case x < 4:
			r.putBlob(rng)
		case x < 9:
			r.getBlob(rng)
		default:
			r.deleteBlob(rng)
		}
		r.pause(rng, 50*time.Millisecond)
	}
}

func (r *run) putBlob(rng *rand.Rand) {
	e, n := r.blobs.newEntry(rng)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := r.all.PutBlob(ctx, e.name, bytes.NewReader(blobBytes(r.seed, n, e.size)), client.PutOptions{Size: int64(e.size)})
	r.blobs.count(func(b *blobBook) { b.puts++ })
	if err != nil {
		r.blobs.set(e, blobUnknown, 0)
		r.blobs.count(func(b *blobBook) { b.failed++ })
		return
	}
	r.blobs.set(e, blobAcked, resp.GetHeader().GetRevision())
}

// getBlob reads a random blob through a random agent, whole or a range.
func (r *run) getBlob(rng *rand.Rand) {
	e, n, state := r.blobs.pick(rng)
	if e == nil {
		return
	}
	var opts client.GetOptions
	overflow := false
	if rng.IntN(3) == 0 {
		opts.Offset = uint64(rng.IntN(e.size))
		opts.Length = uint64(rng.IntN(e.size-int(opts.Offset)) + 1)
		if rng.IntN(4) == 0 && !skipped("range-overflow") {
			opts.Length = math.MaxUint64 - opts.Offset/2 // past the end, and offset+length overflows
			overflow = opts.Offset > 1
		}
	}
	if state == blobAcked {
		opts.MinRevision = e.rev
	}
	agent := r.pickAgent(rng)
	got, err := readBlob(r.agentClients[agent], e.name, opts)
	r.blobs.count(func(b *blobBook) {
		b.gets++
		if opts.Offset != 0 || opts.Length != 0 {
			b.ranged++
		}
		if err != nil {
			b.failed++
		}
	})
	if err != nil {
		if errors.Is(err, apierr.ErrInvalidArgument) && !overflow {
			r.t.Errorf("blobs: get %s offset %d length %d via %s: %v", e.name, opts.Offset, opts.Length, r.c.Name(agent), err)
		}
		return
	}
	r.checkBlobBytes(e, n, opts, got, r.c.Name(agent))
}

// checkBlobBytes fails the test when a read returned other bytes than the
// blob's.
func (r *run) checkBlobBytes(e *blobEntry, n int, opts client.GetOptions, got []byte, via string) bool {
	want := blobBytes(r.seed, n, e.size)
	start := min(int(opts.Offset), e.size)
	end := e.size
	if opts.Length > 0 && opts.Length < uint64(e.size-start) {
		end = start + int(opts.Length)
	}
	if bytes.Equal(got, want[start:end]) {
		return true
	}
	at := 0
	for at < min(len(got), end-start) && got[at] == want[start+at] {
		at++
	}
	r.t.Errorf("blobs: get %s (size %d) offset %d length %d via %s returned %d wrong bytes: first difference at byte %d of %d wanted",
		e.name, e.size, opts.Offset, opts.Length, via, len(got), start+at, end-start)
	return false
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
	e, _, state := r.blobs.pick(rng)
	if e == nil || state != blobAcked {
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
	default:
		r.blobs.set(e, blobDeleting, e.rev)
	}
}

// checkBlobs reads every blob that may exist through every core agent once
// the cluster has settled: acknowledged ones must read back byte-exact
// (waiting for repair), deleted ones must be gone. Then it waits for repair
// to finish, loses every shard file of one more agent, and reads everything
// again: a cluster that rebuilt what it lost tolerates that.
func (r *run) checkBlobs() {
	var acked, gone, unknown []int
	r.blobs.count(func(b *blobBook) {
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
	for _, n := range unknown { // may exist or not; if they do, with their bytes
		e := r.blobs.all[n]
		if got, err := readBlob(r.all, e.name, client.GetOptions{}); err == nil {
			r.checkBlobBytes(e, n, client.GetOptions{}, got, "any agent")
		}
	}
	if r.t.Failed() {
		return
	}
	r.waitRepairIdle()
	victim := r.damageVictim()
	r.c.DamageShards(victim, r.rng, math.MaxInt, 0 /* delete */)
	r.readBackAll(acked, fmt.Sprintf("after losing every shard file of %s", r.c.Name(victim)))
}

// readBackAll reads each blob through each core agent, retrying failed
// reads for a while (repair may be rebuilding), and fails on wrong bytes or
// on a blob that stays unreadable.
func (r *run) readBackAll(nums []int, when string) {
	deadline := time.Now().Add(settleFor)
	for _, n := range nums {
		e := r.blobs.all[n]
		for agent := range r.core {
			for {
				got, err := readBlob(r.agentClients[agent], e.name, client.GetOptions{MinRevision: e.rev})
				if err == nil {
					r.checkBlobBytes(e, n, client.GetOptions{}, got, r.c.Name(agent))
					break
				}
				if time.Now().After(deadline) {
					r.t.Errorf("blobs: %s: acknowledged blob %s (size %d, revision %d) unreadable via %s: %v",
						when, e.name, e.size, e.rev, r.c.Name(agent), err)
					return
				}
				time.Sleep(200 * time.Millisecond)
			}
		}
	}
}

// waitRepairIdle waits until the leader's repair has nothing queued, in
// progress or waiting.
func (r *run) waitRepairIdle() {
	var last string
	r.c.WaitFor(settleFor, "blob repair to finish", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
		defer cancel()
		st, err := r.all.RepairStatus(ctx)
		if err != nil {
			last = err.Error()
			return false
		}
		last = st.String()
		return st.Queued == 0 && st.InProgress == 0 && st.Waiting == 0 && st.LastScan > 0 && len(st.Corrupt) == 0
	})
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
