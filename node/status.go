package node

import (
	"context"
	"runtime"
	"strconv"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/zrpcio/zrpc/raftstore"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
)

// statusServer implements the Status API.
type statusServer struct {
	pb.UnimplementedStatusServer
	n *Node
}

func (s *statusServer) Status(ctx context.Context, _ *pb.StatusRequest) (*pb.StatusResponse, error) {
	r := s.n.store.Raft()
	stats := r.Stats()
	num := func(k string) uint64 { v, _ := strconv.ParseUint(stats[k], 10, 64); return v }
	leaderAddr, leaderID := r.LeaderWithID()
	resp := &pb.StatusResponse{
		Header:       s.n.header(s.n.store.FSM().Revision()),
		Node:         s.n.cfg.Name,
		Leader:       string(leaderID),
		Term:         num("term"),
		RaftState:    r.State().String(),
		CommitIndex:  num("commit_index"),
		AppliedIndex: r.AppliedIndex(),
		LastLogIndex: r.LastIndex(),
		Build:        Build,
	}
	if leaderID != "" {
		if node := s.n.store.FSM().Node(string(leaderID)); node != nil {
			resp.LeaderAddress = node.GrpcAddress
		} else {
			resp.LeaderAddress = string(leaderAddr)
		}
	}
	if r.State() == raft.Leader {
		resp.LastContact = durationpb.New(0)
	} else if lc := r.LastContact(); !lc.IsZero() {
		resp.LastContact = durationpb.New(time.Since(lc))
	}
	return resp, nil
}

// Members lists the agents of the cluster from the Raft configuration and
// the node table.
func (s *statusServer) Members(ctx context.Context, _ *pb.MembersRequest) (*pb.MembersResponse, error) {
	r := s.n.store.Raft()
	f := r.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, raftstore.RaftError(err)
	}
	_, leaderID := r.LeaderWithID()
	resp := &pb.MembersResponse{Header: s.n.header(s.n.store.FSM().Revision())}
	for _, srv := range f.Configuration().Servers {
		m := &pb.Member{Name: string(srv.ID), RaftAddress: string(srv.Address), Status: "alive", Role: suffrage(srv.Suffrage)}
		if srv.ID == leaderID {
			m.Role = "leader"
		}
		if node := s.n.store.FSM().Node(string(srv.ID)); node != nil {
			m.GrpcAddress, m.Build, m.Zone = node.GrpcAddress, node.Build, node.Zone
			m.Address = node.GrpcAddress
			if node.Health == pb.Health_CRITICAL {
				m.Status = "failed"
			}
		}
		resp.Members = append(resp.Members, m)
	}
	return resp, nil
}

func suffrage(s raft.ServerSuffrage) string {
	if s == raft.Voter {
		return "voter"
	}
	return "nonvoter"
}

// Peers lists the Raft configuration. LAST_INDEX is known for this agent
// only; peers' indexes are reported by their own agents.
func (s *statusServer) Peers(ctx context.Context, _ *pb.PeersRequest) (*pb.PeersResponse, error) {
	r := s.n.store.Raft()
	f := r.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, raftstore.RaftError(err)
	}
	_, leaderID := r.LeaderWithID()
	resp := &pb.PeersResponse{Header: s.n.header(s.n.store.FSM().Revision())}
	for _, srv := range f.Configuration().Servers {
		p := &pb.Peer{Id: string(srv.ID), Address: string(srv.Address), Suffrage: suffrage(srv.Suffrage), Leader: srv.ID == leaderID}
		if string(srv.ID) == s.n.cfg.Name {
			p.LastIndex = r.LastIndex()
		}
		resp.Peers = append(resp.Peers, p)
	}
	return resp, nil
}

func (s *statusServer) Version(context.Context, *pb.VersionRequest) (*pb.VersionResponse, error) {
	return &pb.VersionResponse{Version: Build, GoVersion: runtime.Version()}, nil
}
