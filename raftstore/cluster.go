package raftstore

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"sync"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
)

// Cluster identity: the first leader of a new cluster writes one
// ClusterInit entry (a random id and a random secret). Every replica keeps
// it from then on, in its state and in every snapshot; a second ClusterInit
// is refused. The id names the cluster (gossip meta, <data-dir>/cluster-id,
// Status); the secret authenticates agents to each other's agent-to-agent
// API and never leaves the agents.

const (
	clusterIDBytes     = 16 // 128 bits
	clusterSecretBytes = 32 // 256 bits
)

// NewClusterInit returns a ClusterInit with a fresh random id and secret.
func NewClusterInit() (*pb.ClusterInit, error) {
	id := make([]byte, clusterIDBytes)
	secret := make([]byte, clusterSecretBytes)
	if _, err := rand.Read(id); err != nil {
		return nil, fmt.Errorf("generate cluster id: %w", err)
	}
	if _, err := rand.Read(secret); err != nil {
		return nil, fmt.Errorf("generate cluster secret: %w", err)
	}
	return &pb.ClusterInit{ClusterId: hex.EncodeToString(id), Secret: secret}, nil
}

// maxRecoveries bounds ClusterInit.recovered_from.
const maxRecoveries = 64

// checkClusterInit validates a ClusterInit from a log entry or a snapshot.
func checkClusterInit(c *pb.ClusterInit) error {
	if !isClusterID(c.GetClusterId()) {
		return fmt.Errorf("%w: cluster_init.cluster_id %q is not %d hex bytes", ErrInvalidArgument, c.GetClusterId(), clusterIDBytes)
	}
	if len(c.GetSecret()) != clusterSecretBytes {
		return fmt.Errorf("%w: cluster_init.secret is %d bytes, want %d", ErrInvalidArgument, len(c.GetSecret()), clusterSecretBytes)
	}
	if n := len(c.GetRecoveredFrom()); n > maxRecoveries {
		return fmt.Errorf("%w: cluster_init.recovered_from has %d ids, over %d", ErrInvalidArgument, n, maxRecoveries)
	}
	for _, id := range c.GetRecoveredFrom() {
		if !isClusterID(id) {
			return fmt.Errorf("%w: cluster_init.recovered_from holds %q, not %d hex bytes", ErrInvalidArgument, id, clusterIDBytes)
		}
	}
	return nil
}

func isClusterID(id string) bool {
	b, err := hex.DecodeString(id)
	return err == nil && len(b) == clusterIDBytes
}

// renewIdentity gives the cluster a new id and secret, recording the
// current id in recovered_from: outage recovery (recover.go) calls it on
// the replica it rewrites, before the snapshot that carries the new
// configuration is taken. Agents that kept Raft state from before
// recovery still hold the old id, and gossip and the Raft hello refuse
// them: their logs may hold entries of the same index and term as the
// recovered agent's with other contents (the lost majority went on
// electing and writing), which Raft's log matching cannot tell apart.
// A replica without an identity (its first leader never wrote one) gets
// one too, with nothing recovered from: agents given up for lost that
// come back, elect among themselves and write an identity of their own
// are then refused as of another cluster, where without one the
// recovered agent would take them in until its own first leader term.
func (f *FSM) renewIdentity() (previous, next string, err error) {
	cur := f.cluster.get()
	fresh, err := NewClusterInit()
	if err != nil {
		return "", "", err
	}
	if cur == nil {
		f.cluster.set(fresh)
		return "", fresh.GetClusterId(), nil
	}
	fresh.RecoveredFrom = append(append([]string(nil), cur.GetRecoveredFrom()...), cur.GetClusterId())
	if n := len(fresh.RecoveredFrom); n > maxRecoveries {
		fresh.RecoveredFrom = fresh.RecoveredFrom[n-maxRecoveries:]
	}
	f.cluster.set(fresh)
	return cur.GetClusterId(), fresh.GetClusterId(), nil
}

// RecoveredFrom returns the ids this cluster had before outage
// recoveries, oldest first.
func (f *FSM) RecoveredFrom() []string { return f.cluster.get().GetRecoveredFrom() }

// clusterState is the FSM's copy of the cluster's ClusterInit. It has its
// own lock so that the agent-to-agent API's per-call check does not
// contend with the registry's.
type clusterState struct {
	mu   sync.RWMutex
	init *pb.ClusterInit
	// known is closed once the cluster id is known.
	known     chan struct{}
	closeOnce sync.Once
}

func newClusterState() *clusterState {
	return &clusterState{known: make(chan struct{})}
}

func (c *clusterState) get() *pb.ClusterInit {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.init
}

// set replaces the state (nil: none), as applying or restoring does.
func (c *clusterState) set(init *pb.ClusterInit) {
	c.mu.Lock()
	c.init = init
	c.mu.Unlock()
	if init != nil {
		c.closeOnce.Do(func() { close(c.known) })
	}
}

// applyClusterInit stores the cluster's identity; the caller holds f.mu.
func (f *FSM) applyClusterInit(c *pb.ClusterInit) error {
	if cur := f.cluster.get(); cur != nil {
		return fmt.Errorf("%w: the cluster already has its identity (id %s)", ErrAlreadyExists, cur.ClusterId)
	}
	if err := checkClusterInit(c); err != nil {
		return err
	}
	f.cluster.set(&pb.ClusterInit{ClusterId: c.ClusterId, Secret: append([]byte(nil), c.Secret...)})
	return nil
}

// ClusterID returns the cluster's id, or "" before its ClusterInit entry
// has been applied on this replica.
func (f *FSM) ClusterID() string { return f.cluster.get().GetClusterId() }

// ClusterSecret returns the secret agents of this cluster authenticate
// with, or nil before the ClusterInit entry has been applied. Callers must
// not modify it, serve it or log it.
func (f *FSM) ClusterSecret() []byte { return f.cluster.get().GetSecret() }

// ClusterIDKnown is closed once this replica knows the cluster's id.
func (f *FSM) ClusterIDKnown() <-chan struct{} { return f.cluster.known }
