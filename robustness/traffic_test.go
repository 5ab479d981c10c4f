package robustness

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/zrpcio/zrpc/api/apierr"
	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/client"
	"github.com/zrpcio/zrpc/internal/regmodel"
)

// Traffic: registry clients (the model's history), session churn, TTL
// renewals, watches and blobs, each worker with its own random source
// derived from the seed.
const (
	registryWorkers = 4
	sessionWorkers  = 2
	ttlInstances    = 3
	blobWorkers     = 2
	sessionService  = "rb.sess"
	ttlService      = "rb.ttl"
	ttlTTL          = 2 * time.Second
)

func (r *run) startTraffic() {
	for n := range registryWorkers {
		r.goTraffic(func() { r.registryWorker(n) })
	}
	for n := range sessionWorkers {
		r.goTraffic(func() { r.sessionWorker(n) })
	}
	r.goTraffic(r.ttlWorker)
	for n := range blobWorkers {
		if !skipped("blobs") {
			r.goTraffic(func() { r.blobWorker(n) })
		}
	}
	r.startWatches()
}

func (r *run) goTraffic(f func()) {
	r.traffic.Add(1)
	go func() {
		defer r.traffic.Done()
		f()
	}()
}

// pause waits up to d, less if the traffic stops.
func (r *run) pause(rng *rand.Rand, d time.Duration) {
	select {
	case <-r.ctx.Done():
	case <-time.After(time.Duration(rng.Int64N(int64(d)) + 1)):
	}
}

// registryWorker sends one registry operation at a time. Worker 0 sends its
// writes through the failover client, the others through one agent each
// time.
func (r *run) registryWorker(n int) {
	rng := r.workerRand(uint64(100 + n))
	modes := []pb.Consistency{pb.Consistency_CONSISTENT, pb.Consistency_DEFAULT, pb.Consistency_STALE}
	for r.ctx.Err() == nil {
		in := randomRegistryInput(rng, r.hist, modes)
		agent := r.pickAgent(rng)
		cl, via := r.agentClients[agent], r.c.Name(agent)
		if n == 0 && in.Kind != regmodel.Get {
			cl, via = r.all, "any agent"
		}
		recordRegistryOp(r.t, r.hist, r.incarnation, registryCall{worker: n, agent: agent, cl: cl, via: via, in: in})
		r.pause(rng, 10*time.Millisecond)
	}
}

// randomRegistryInput draws a worker's next operation: a register (with
// the history's next value), a deregister, or a read in one of modes.
func randomRegistryInput(rng *rand.Rand, h *history, modes []pb.Consistency) regmodel.Input {
	switch x := rng.IntN(20); {
	case x < 7:
		return regmodel.Input{Kind: regmodel.Register, ID: rng.IntN(regmodel.IDs), Value: h.nextValue()}
	case x < 11:
		return regmodel.Input{Kind: regmodel.Deregister, ID: rng.IntN(regmodel.IDs)}
	default:
		return regmodel.Input{Kind: regmodel.Get, Mode: modes[rng.IntN(len(modes))]}
	}
}

// registryCall is one registry operation of a worker: in, sent through cl
// to agent (or to any agent, for the failover client) and reported as via.
type registryCall struct {
	worker, agent int
	cl            *client.Client
	via           string
	in            regmodel.Input
}

// recordRegistryOp performs one operation and adds it to h: a write that
// failed may or may not have happened, a read that failed is left out. An
// InvalidArgument, or a read that returns an instance the model does not
// know, fails t. incarnation tells an agent's incarnation: a read during
// which its agent restarted is recorded with incarnation -1.
func recordRegistryOp(t *testing.T, h *history, incarnation func(agent int) int, c registryCall) {
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	in, via := c.in, c.via
	inc := incarnation(c.agent)
	op := porcupine.Operation{ClientId: c.worker, Input: in, Call: h.now()}
	var (
		out regmodel.Output
		rev uint64
		err error
	)
	switch in.Kind {
	case regmodel.Register:
		_, rev, err = c.cl.Register(ctx, in.Instance(linService))
	case regmodel.Deregister:
		rev, err = c.cl.Deregister(ctx, linService, regmodel.ID(in.ID))
		if errors.Is(err, apierr.ErrNotFound) {
			out.Result, err = regmodel.NotFound, nil
		}
	case regmodel.Get:
		var insts []*pb.Instance
		insts, rev, err = c.cl.Get(ctx, linService, client.WithConsistency(in.Mode))
		if err == nil {
			var stranger error
			if out.Seen, stranger = regmodel.StateOf(insts); stranger != nil {
				t.Errorf("registry: %s read via %s returned an %v", in.Mode, via, stranger)
			}
		}
	}
	op.Return = h.now()
	if err != nil {
		if errors.Is(err, apierr.ErrInvalidArgument) {
			t.Errorf("registry: %s via %s: %v", regmodel.Model.DescribeOperation(in, out), via, err)
		}
		op.Metadata = fmt.Sprintf("%s via %s: %v", regmodel.Model.DescribeOperation(in, out), via, err)
		failure := "get " + in.Mode.String()
		switch {
		case in.Kind != regmodel.Get && apierr.IsNotApplied(err):
			// The agent says it proposed and forwarded nothing: left
			// out, as a failed read is. Were it applied after all, a
			// read would see a value no write in the history made.
			failure = "write not applied"
		case in.Kind != regmodel.Get:
			failure = "write"
			op.Output, op.Return = regmodel.Output{Result: regmodel.Unknown}, math.MaxInt64
		}
		h.add(op, nil, nil, failure)
		return
	}
	op.Output, op.Metadata = out, fmt.Sprintf("via %s, revision %d", via, rev)
	var (
		rd *read
		wr *write
	)
	switch {
	case in.Kind == regmodel.Get:
		if incarnation(c.agent) != inc {
			inc = -1 // the agent was killed or restarted during the read
		}
		rd = &read{client: c.worker, agent: c.agent, incarnation: inc, mode: in.Mode, rev: rev, seen: out.Seen,
			call: time.Duration(op.Call), at: time.Duration(op.Return)}
	case out.Result == regmodel.OK:
		wr = &write{in: in, rev: rev, returned: time.Duration(op.Return)}
	}
	h.add(op, rd, wr, "")
}

// sessionBook records the session churn.
type sessionBook struct {
	mu         sync.Mutex
	opened     int
	registered int
	failed     int
}

func (b *sessionBook) note(opened, registered, failed int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.opened += opened
	b.registered += registered
	b.failed += failed
}

// sessionWorker opens a session on a random agent, registers a few
// instances on it, holds it for a while and closes it, over and over. When
// the session ends before it is closed (its agent crashed, or the cluster
// removed it), the worker registers its instances again through a new one,
// as rpc.Server does. Every instance it registered must be gone at the end.
func (r *run) sessionWorker(n int) {
	rng := r.workerRand(uint64(200 + n))
	owner := fmt.Sprintf("robustness session worker %d", n)
	for k := 0; r.ctx.Err() == nil; k++ {
		agent := r.pickAgent(rng)
		var insts []*pb.Instance
		for j := range 1 + rng.IntN(3) {
			insts = append(insts, &pb.Instance{Service: sessionService, Id: fmt.Sprintf("w%d-%d-%d", n, k, j), Address: "127.0.0.1:9100"})
		}
		s, registered, failed, err := r.openSession(context.Background(), agent, owner, insts)
		if err != nil {
			r.sessions.note(0, 0, 1)
			r.pause(rng, 200*time.Millisecond)
			continue
		}
		r.sessions.note(1, registered, failed)
		hold := time.After(time.Duration(rng.Int64N(int64(800*time.Millisecond)) + 1))
		for s != nil {
			select {
			case <-r.ctx.Done():
			case <-hold:
			case <-s.Done():
				s.Close()
				s = r.sessionAgain(rng, owner, insts)
				continue
			}
			s.Close()
			s = nil
		}
	}
}

// sessionAgain registers insts again through a new session on a random
// agent, retrying until it succeeds or the traffic stops (then nil).
func (r *run) sessionAgain(rng *rand.Rand, owner string, insts []*pb.Instance) *client.Session {
	for r.ctx.Err() == nil {
		s, registered, failed, err := r.openSession(context.Background(), r.pickAgent(rng), owner, insts)
		if err == nil && failed == 0 {
			r.sessions.note(1, registered, 0)
			return s
		}
		if s != nil {
			s.Close()
		}
		r.sessions.note(0, registered, max(failed, 1))
		r.pause(rng, 200*time.Millisecond)
	}
	return nil
}

// ttlBook records which TTL instances were registered, and through which
// agent (their owner, which the registry removes them with).
type ttlBook struct {
	mu         sync.Mutex
	registered map[string]bool
	owner      map[string]string
	renewals   int
	again      int // registrations after a renewal found the instance gone
	failed     int
}

func (b *ttlBook) add(id string, renewals, failed int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.registered == nil {
		b.registered = map[string]bool{}
	}
	if id != "" {
		b.registered[id] = true
	}
	b.renewals += renewals
	b.failed += failed
}

func (b *ttlBook) setOwner(id, owner string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.owner == nil {
		b.owner = map[string]string{}
	}
	b.owner[id] = owner
}

func (b *ttlBook) ownerOf(id string) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.owner[id]
}

func ttlInstance(id string) *pb.Instance {
	return &pb.Instance{Service: ttlService, Id: id, Address: "127.0.0.1:9200",
		Check: &pb.Check{Ttl: durationpb.New(ttlTTL)}}
}

// ttlWorker registers ttlInstances TTL instances and renews them every few
// hundred milliseconds through random agents.
func (r *run) ttlWorker() {
	rng := r.workerRand(300)
	for k := range ttlInstances {
		r.registerTTL(r.pickAgent(rng), fmt.Sprintf("t%d", k))
	}
	for r.ctx.Err() == nil {
		r.renewTTLs(rng)
		r.pause(rng, 400*time.Millisecond)
	}
}

func (r *run) registerTTL(agent int, id string) {
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	inst, _, err := r.agentClients[agent].Register(ctx, ttlInstance(id))
	if err != nil {
		r.ttl.add("", 0, 1)
		return
	}
	r.ttl.add(id, 0, 0)
	r.ttl.setOwner(id, inst.GetNode())
}

// renewTTLs renews every TTL instance through a random agent. An instance
// the registry no longer has is registered again, as its owner would; it
// may be gone only if it was never registered or its agent was reaped.
func (r *run) renewTTLs(rng *rand.Rand) {
	for k := range ttlInstances {
		id := fmt.Sprintf("t%d", k)
		agent := r.pickAgent(rng)
		ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
		err := r.agentClients[agent].RenewTTL(ctx, ttlService, id)
		cancel()
		switch {
		case err == nil:
			r.ttl.add("", 1, 0)
		case errors.Is(err, apierr.ErrNotFound):
			if owner := r.ttl.ownerOf(id); owner != "" && !r.wasReaped(owner) {
				r.t.Errorf("ttl: renewing %s via %s: %v; its agent %s was not reaped", id, r.c.Name(agent), err, owner)
			}
			r.ttl.mu.Lock()
			r.ttl.again++
			r.ttl.mu.Unlock()
			r.registerTTL(agent, id)
		default:
			r.ttl.add("", 0, 1)
		}
	}
}
