package robustness

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
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
		var in regmodel.Input
		switch x := rng.IntN(20); {
		case x < 7:
			in = regmodel.Input{Kind: regmodel.Register, ID: rng.IntN(regmodel.IDs), Value: r.hist.nextValue()}
		case x < 11:
			in = regmodel.Input{Kind: regmodel.Deregister, ID: rng.IntN(regmodel.IDs)}
		default:
			in = regmodel.Input{Kind: regmodel.Get, Mode: modes[rng.IntN(len(modes))]}
		}
		agent := r.pickAgent(rng)
		r.registryOp(n, agent, n == 0 && in.Kind != regmodel.Get, in)
		r.pause(rng, 10*time.Millisecond)
	}
}

// registryOp performs one operation and adds it to the history.
func (r *run) registryOp(worker, agent int, failover bool, in regmodel.Input) {
	cl, via := r.agentClients[agent], r.c.Name(agent)
	if failover {
		cl, via = r.all, "any agent"
	}
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	inc := r.incarnation(agent)
	op := porcupine.Operation{ClientId: worker, Input: in, Call: r.hist.now()}
	var (
		out regmodel.Output
		rev uint64
		err error
	)
	switch in.Kind {
	case regmodel.Register:
		_, rev, err = cl.Register(ctx, in.Instance(linService))
	case regmodel.Deregister:
		rev, err = cl.Deregister(ctx, linService, regmodel.ID(in.ID))
		if errors.Is(err, apierr.ErrNotFound) {
			out.Result, err = regmodel.NotFound, nil
		}
	case regmodel.Get:
		var insts []*pb.Instance
		insts, rev, err = cl.Get(ctx, linService, client.WithConsistency(in.Mode))
		if err == nil {
			var stranger error
			if out.Seen, stranger = regmodel.StateOf(insts); stranger != nil {
				r.t.Errorf("registry: %s read via %s returned an %v", in.Mode, via, stranger)
			}
		}
	}
	op.Return = r.hist.now()
	op.Metadata = fmt.Sprintf("via %s, revision %d", via, rev)
	if errors.Is(err, apierr.ErrInvalidArgument) {
		r.t.Errorf("registry: %s via %s: %v", regmodel.Model.DescribeOperation(in, out), via, err)
	}
	if err != nil {
		op.Metadata = fmt.Sprintf("%s via %s: %v", regmodel.Model.DescribeOperation(in, out), via, err)
		failure := "get " + in.Mode.String()
		if in.Kind != regmodel.Get {
			failure = "write"
			op.Output, op.Return = regmodel.Output{Result: regmodel.Unknown}, math.MaxInt64
		}
		r.hist.add(op, nil, nil, failure)
		return
	}
	op.Output = out
	var (
		rd *read
		wr *write
	)
	switch {
	case in.Kind == regmodel.Get:
		if r.incarnation(agent) != inc {
			inc = -1 // the agent restarted during the read
		}
		rd = &read{client: worker, agent: agent, incarnation: inc, mode: in.Mode, rev: rev, seen: out.Seen,
			call: time.Duration(op.Call), at: time.Duration(op.Return)}
	case out.Result == regmodel.OK:
		wr = &write{in: in, rev: rev, returned: time.Duration(op.Return)}
	}
	r.hist.add(op, rd, wr, "")
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
// instances on it, holds it for a while and closes it, over and over. Every
// instance it registered must be gone at the end.
func (r *run) sessionWorker(n int) {
	rng := r.workerRand(uint64(200 + n))
	for k := 0; r.ctx.Err() == nil; k++ {
		agent := r.pickAgent(rng)
		ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
		s, err := r.agentClients[agent].Session(ctx, fmt.Sprintf("robustness session worker %d", n))
		if err != nil {
			cancel()
			r.sessions.note(0, 0, 1)
			r.pause(rng, 200*time.Millisecond)
			continue
		}
		registered, failed := 0, 0
		for j := range 1 + rng.IntN(3) {
			inst := &pb.Instance{Service: sessionService, Id: fmt.Sprintf("w%d-%d-%d", n, k, j), Address: "127.0.0.1:9100"}
			if _, err := s.Register(ctx, inst); err != nil {
				failed++
			} else {
				registered++
			}
		}
		cancel()
		r.sessions.note(1, registered, failed)
		r.pause(rng, 800*time.Millisecond)
		s.Close()
	}
}

// ttlBook records which TTL instances were registered.
type ttlBook struct {
	mu         sync.Mutex
	registered map[string]bool
	renewals   int
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

func ttlInstance(id string) *pb.Instance {
	return &pb.Instance{Service: ttlService, Id: id, Address: "127.0.0.1:9200",
		Check: &pb.Check{Ttl: durationpb.New(ttlTTL)}}
}

// ttlWorker registers ttlInstances TTL instances and renews them every few
// hundred milliseconds through random agents.
func (r *run) ttlWorker() {
	rng := r.workerRand(300)
	for k := range ttlInstances {
		id := fmt.Sprintf("t%d", k)
		ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
		if _, _, err := r.agentClients[r.pickAgent(rng)].Register(ctx, ttlInstance(id)); err == nil {
			r.ttl.add(id, 0, 0)
		} else {
			r.ttl.add("", 0, 1)
		}
		cancel()
	}
	for r.ctx.Err() == nil {
		r.renewTTLs(rng)
		r.pause(rng, 400*time.Millisecond)
	}
}

func (r *run) renewTTLs(rng *rand.Rand) {
	for k := range ttlInstances {
		ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
		err := r.agentClients[r.pickAgent(rng)].RenewTTL(ctx, ttlService, fmt.Sprintf("t%d", k))
		cancel()
		if err != nil {
			r.ttl.add("", 0, 1)
		} else {
			r.ttl.add("", 1, 0)
		}
	}
}
