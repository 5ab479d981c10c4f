package health

import (
	"context"
	"crypto/tls"
	"fmt"
	"hash/fnv"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/proto"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
)

// RunChecks keeps one gRPC health checker running per instance this agent
// owns that asked for a gRPC check, until ctx ends; it returns once every
// checker has stopped. It learns of such instances from the replica's
// instance watch, so it does nothing while the registry does not change.
func (k *Keeper) RunChecks(ctx context.Context) {
	running := make(map[instanceKey]*checker)
	defer func() {
		for _, c := range running {
			c.stop()
		}
	}()
	watch := k.cfg.Replica.WatchInstances(k.cfg.Replica.Revision())
	for _, inst := range k.cfg.Replica.CheckedInstances() {
		k.keepChecker(ctx, running, inst)
	}
	k.followInstances(ctx, watch, func(resp *pb.WatchResponse) {
		for _, ev := range resp.Events {
			if ev.Type != pb.Event_DELETE {
				k.keepChecker(ctx, running, ev.Instance)
			} else if c := running[keyOf(ev.Instance)]; c != nil && c.modRev <= ev.Revision {
				c.stop()
				delete(running, keyOf(ev.Instance))
			}
		}
		if resp.Snapshot {
			// A listing, not changes: the checkers of instances it no
			// longer has stop here.
			for key, c := range running {
				if k.cfg.Replica.Instance(key.service, key.id) == nil {
					c.stop()
					delete(running, key)
				}
			}
		}
	})
}

func keyOf(inst *pb.Instance) instanceKey { return instanceKey{inst.Service, inst.Id} }

// keepChecker makes running agree with inst, a version of an instance:
// a checker when this agent owns it and it asks for a gRPC check, with
// its current check and address.
func (k *Keeper) keepChecker(ctx context.Context, running map[instanceKey]*checker, inst *pb.Instance) {
	key := keyOf(inst)
	c := running[key]
	if c != nil && inst.ModRevision < c.modRev {
		return // older than the version being checked
	}
	want := inst.Node == k.cfg.Agent && inst.Check.GetGrpc()
	if c != nil && want && proto.Equal(inst.Check, c.check) && inst.Address == c.address {
		c.modRev = inst.ModRevision
		return
	}
	if c != nil {
		c.stop()
		delete(running, key)
	}
	if want {
		running[key] = k.startChecker(ctx, inst)
	}
}

// checker calls grpc.health.v1 on one instance every interval.
type checker struct {
	check   *pb.Check
	address string
	modRev  uint64 // the instance's last version seen
	cancel  context.CancelFunc
	done    chan struct{}
}

func (c *checker) stop() {
	c.cancel()
	<-c.done
}

func (k *Keeper) startChecker(parent context.Context, inst *pb.Instance) *checker {
	ctx, cancel := context.WithCancel(parent)
	c := &checker{check: inst.Check, address: inst.Address, modRev: inst.ModRevision, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(c.done)
		k.runChecker(ctx, inst)
	}()
	return c
}

// checkOffset is where in its interval an instance's checks run: a hash
// of its service and id, so that the checks of many instances spread over
// the interval instead of running together, and keep their places when
// the agent restarts.
func checkOffset(key instanceKey, interval time.Duration) time.Duration {
	if interval <= 0 {
		return 0
	}
	h := fnv.New64a()
	h.Write([]byte(key.service))
	h.Write([]byte{0})
	h.Write([]byte(key.id))
	return time.Duration(h.Sum64() % uint64(interval))
}

func (k *Keeper) runChecker(ctx context.Context, inst *pb.Instance) {
	chk := inst.Check
	addr := chk.GrpcAddress
	if addr == "" {
		addr = inst.Address
	}
	timeout := DefaultCheckTimeout
	if chk.Timeout != nil {
		timeout = chk.Timeout.AsDuration()
	}
	creds, err := k.checkCredentials(inst)
	if err != nil {
		k.reportHealth(ctx, inst, pb.Health_CRITICAL, err.Error())
		return
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		k.reportHealth(ctx, inst, pb.Health_CRITICAL, fmt.Sprintf("bad check address %s: %v", addr, err))
		return
	}
	defer conn.Close()
	client := healthpb.NewHealthClient(conn)
	interval := chk.Interval.AsDuration()
	first := time.NewTimer(checkOffset(keyOf(inst), interval))
	select {
	case <-ctx.Done():
		first.Stop()
		return
	case <-first.C:
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		cctx, cancel := context.WithTimeout(ctx, timeout)
		resp, err := client.Check(cctx, &healthpb.HealthCheckRequest{Service: chk.GrpcService})
		cancel()
		if ctx.Err() != nil {
			return
		}
		switch {
		case err != nil:
			k.reportHealth(ctx, inst, pb.Health_CRITICAL, fmt.Sprintf("gRPC health check of %s failed: %v", addr, err))
		case resp.Status != healthpb.HealthCheckResponse_SERVING:
			k.reportHealth(ctx, inst, pb.Health_CRITICAL, fmt.Sprintf("gRPC health check of %s: %s", addr, resp.Status))
		default:
			k.reportHealth(ctx, inst, pb.Health_PASSING, "gRPC health check: SERVING")
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// checkCredentials returns how to dial inst's health endpoint: plaintext,
// or for a grpc_tls check mutual TLS with this agent's certificate,
// verifying the instance's for its service's name (what service
// certificates carry).
func (k *Keeper) checkCredentials(inst *pb.Instance) (credentials.TransportCredentials, error) {
	if !inst.Check.GetGrpcTls() {
		return insecure.NewCredentials(), nil
	}
	var cfg *tls.Config
	if k.cfg.CheckTLS != nil {
		cfg = k.cfg.CheckTLS(inst.Service)
	}
	if cfg == nil {
		return nil, fmt.Errorf("gRPC health check over TLS: agent %s has no certificate to check a TLS service with (set tls_ca, tls_cert and tls_key)", k.cfg.Agent)
	}
	return credentials.NewTLS(cfg), nil
}

// reportHealth writes a check result when it changes the instance's health.
func (k *Keeper) reportHealth(ctx context.Context, inst *pb.Instance, h pb.Health, output string) {
	cur := k.cfg.Replica.Instance(inst.Service, inst.Id)
	if cur == nil || cur.Health == h {
		return
	}
	if _, err := k.cfg.Writer.Propose(ctx, setHealth(h, output, cur)); err != nil && ctx.Err() == nil {
		k.log.Warn("could not record health check result", "instance", inst.Service+"/"+inst.Id, "health", h, "err", err)
		return
	}
	k.log.Info("instance health changed", "instance", inst.Service+"/"+inst.Id, "health", h, "output", output)
}
