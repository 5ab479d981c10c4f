// Package acltest serves the agent's ACL service for tests: over a real
// registry state machine that proposals are applied to at once (as a
// one-agent cluster's leader does), behind the acl interceptors, on
// loopback, with a Registry that accepts every Register, so that tests of
// zrpcctl and of the ACL service see tokens decide what is allowed. It is
// not an agent: there is no Raft, gossip or storage.
package acltest

import (
	"context"
	"net"
	"sync"
	"testing"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/zrpcio/zrpc/acl"
	"github.com/zrpcio/zrpc/api/apierr"
	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/node/grpcapi"
	"github.com/zrpcio/zrpc/raftstore"
)

// Cluster applies proposals to FSM at once, as a one-agent cluster's
// leader does; it implements grpcapi.Cluster.
type Cluster struct {
	FSM  *raftstore.FSM
	mu   sync.Mutex
	next uint64
}

// Propose applies cmd as the next entry and returns its index, or the
// state machine's error.
func (c *Cluster) Propose(_ context.Context, cmd *pb.Command) (uint64, error) {
	data, err := proto.Marshal(cmd)
	if err != nil {
		return 0, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.next++
	if resp := c.FSM.Apply(&raft.Log{Index: c.next, Type: raft.LogCommand, Data: data}); resp != nil {
		return 0, resp.(error)
	}
	return c.next, nil
}

// OnLeader runs local: this is the leader.
func (c *Cluster) OnLeader(_ context.Context, local func() error, _ func(context.Context, grpc.ClientConnInterface) error) error {
	return local()
}

// Write runs local: this is the leader.
func (c *Cluster) Write(_ context.Context, local func() error, _ func(context.Context, grpc.ClientConnInterface) error) error {
	return local()
}

// CheckRead allows every read.
func (c *Cluster) CheckRead(context.Context, pb.Consistency) error { return nil }

// registerOnly answers every Register with the instance.
type registerOnly struct{ pb.UnimplementedRegistryServer }

func (registerOnly) Register(_ context.Context, req *pb.RegisterRequest) (*pb.RegisterResponse, error) {
	return &pb.RegisterResponse{Header: &pb.ResponseHeader{ServedBy: "n1"}, Instance: req.Instance}, nil
}

// Start serves the ACL service over fsm and a Registry that accepts every
// Register, behind the acl interceptors, on 127.0.0.1 until the test
// ends, and returns the address.
func Start(t testing.TB, fsm *raftstore.FSM) string {
	t.Helper()
	ic := acl.NewInterceptors(acl.InterceptorConfig{Resolver: acl.NewReplicaResolver(fsm), Changed: fsm.ACLChanged})
	mapErrs := func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		resp, err := h(ctx, req)
		return resp, apierr.ToStatus(err)
	}
	s := grpc.NewServer(grpc.ChainUnaryInterceptor(mapErrs, ic.Unary), grpc.ChainStreamInterceptor(ic.Stream))
	pb.RegisterACLServer(s, grpcapi.NewACL(grpcapi.ACLConfig{Agent: "n1", Replica: fsm, Cluster: &Cluster{FSM: fsm}}))
	pb.RegisterRegistryServer(s, registerOnly{})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.Serve(lis)
	}()
	t.Cleanup(func() {
		s.Stop()
		<-done
	})
	return lis.Addr().String()
}
