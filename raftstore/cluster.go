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

// checkClusterInit validates a ClusterInit from a log entry or a snapshot.
func checkClusterInit(c *pb.ClusterInit) error {
	if b, err := hex.DecodeString(c.GetClusterId()); err != nil || len(b) != clusterIDBytes {
		return fmt.Errorf("%w: cluster_init.cluster_id %q is not %d hex bytes", ErrInvalidArgument, c.GetClusterId(), clusterIDBytes)
	}
	if len(c.GetSecret()) != clusterSecretBytes {
		return fmt.Errorf("%w: cluster_init.secret is %d bytes, want %d", ErrInvalidArgument, len(c.GetSecret()), clusterSecretBytes)
	}
	return nil
}

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
