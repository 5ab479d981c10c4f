package robustness

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/internal/grpctest"
	"github.com/zrpcio/zrpc/internal/testwait"
)

// gRPC-checked instances: on every core agent, one instance whose server
// serves and one whose server does not, each with a gRPC health check the
// agent runs. After healing, each must show its server's health, the one
// that does not serve with the check's output: however often its agent was
// killed, cut off (marked failed, then alive again) or reaped meanwhile.

const (
	checkedService = "rb.checked"
	// checkedInterval is longer than a run: after its first run, a check
	// runs again only when its agent restarts or something contradicts its
	// last result, so a health left wrong by a fault is not put right by
	// the next run before the checks look.
	checkedInterval = time.Hour
	// checkedTimeout is long: with an hour's interval, a check of the
	// serving server that timed out in a stalled moment would leave its
	// instance critical until the run ends.
	checkedTimeout = 5 * time.Second
)

// checkedBook is the checked instances and their servers.
type checkedBook struct {
	up, down string // the servers' addresses

	mu         sync.Mutex
	registered map[string]int // id -> the core agent it was registered through
	again      int            // registered again after a reap removed it
}

func checkedInstance(id, addr string) *pb.Instance {
	return &pb.Instance{Service: checkedService, Id: id, Address: addr, Check: &pb.Check{
		Grpc: true, Interval: durationpb.New(checkedInterval), Timeout: durationpb.New(checkedTimeout)}}
}

// serves reports whether the checked instance id's server serves.
func serves(id string) bool { return strings.HasPrefix(id, "up") }

// startChecked starts the two servers and registers the instances, before
// the first fault.
func (r *run) startChecked() {
	up, _ := grpctest.StartHealthServer(r.t)
	down, hs := grpctest.StartHealthServer(r.t)
	hs.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	r.checked = &checkedBook{up: up, down: down, registered: map[string]int{}}
	for i := range r.core {
		for _, id := range []string{fmt.Sprint("up", i), fmt.Sprint("down", i)} {
			if err := r.registerChecked(i, id, 10*time.Second); err != nil {
				r.t.Errorf("checked: register %s through %s: %v", id, r.c.Name(i), err)
			}
		}
	}
}

// registerChecked registers checked instance id through core agent i,
// trying again until it succeeds or within passes.
func (r *run) registerChecked(i int, id string, within time.Duration) error {
	b := r.checked
	addr := b.down
	if serves(id) {
		addr = b.up
	}
	var err error
	testwait.Until(within, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
		defer cancel()
		_, _, err = r.agentClients[i].Register(ctx, checkedInstance(id, addr))
		return err == nil
	})
	if err == nil {
		b.mu.Lock()
		b.registered[id] = i
		b.mu.Unlock()
	}
	return err
}

// checkChecked waits until every checked instance shows its server's
// health; one a reap removed is registered again through its agent, as
// its owner would.
func (r *run) checkChecked() {
	b := r.checked
	var problem string
	ok := testwait.Until(settleFor, func() bool {
		problem = r.checkedProblem()
		return problem == ""
	})
	b.mu.Lock()
	r.t.Logf("checked: %d gRPC-checked instances, %d registered again after a reap", len(b.registered), b.again)
	b.mu.Unlock()
	if !ok {
		r.t.Errorf("checked: after healing, %s", problem)
	}
}

func (r *run) checkedProblem() string {
	l := r.c.Leader()
	if l == nil {
		return "no leader"
	}
	b := r.checked
	b.mu.Lock()
	registered := maps.Clone(b.registered)
	b.mu.Unlock()
	for _, id := range slices.Sorted(maps.Keys(registered)) {
		agent := registered[id]
		inst := l.Store().FSM().Instance(checkedService, id)
		switch {
		case inst == nil && r.wasReaped(r.c.Name(agent)):
			b.mu.Lock()
			b.again++
			b.mu.Unlock()
			if err := r.registerChecked(agent, id, callTimeout); err != nil {
				return fmt.Sprintf("%s, removed with its reaped agent %s, could not be registered again: %v", id, r.c.Name(agent), err)
			}
			return fmt.Sprintf("%s was registered again after its agent %s was reaped", id, r.c.Name(agent))
		case inst == nil:
			return fmt.Sprintf("%s is gone, though its agent %s was not reaped", id, r.c.Name(agent))
		case serves(id) && inst.Health != pb.Health_PASSING:
			return fmt.Sprintf("%s is %s (%q), but its server serves", id, inst.Health, inst.HealthOutput)
		case !serves(id) && (inst.Health != pb.Health_CRITICAL || !strings.HasSuffix(inst.HealthOutput, "NOT_SERVING")):
			return fmt.Sprintf("%s is %s (%q), but its server answers NOT_SERVING", id, inst.Health, inst.HealthOutput)
		}
	}
	return ""
}
