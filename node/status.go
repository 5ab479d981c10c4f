package node

import (
	"context"
	"runtime"
	"strconv"
	"sync"
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
		Build:        s.n.cfg.Build,
		ClusterId:    s.n.clusterID(),
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

// Members lists the agents gossip knows, with their Raft role, plus Raft
// servers gossip does not know (status "unknown").
func (s *statusServer) Members(ctx context.Context, _ *pb.MembersRequest) (*pb.MembersResponse, error) {
	r := s.n.store.Raft()
	f := r.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, raftstore.RaftError(err)
	}
	_, leaderID := r.LeaderWithID()
	role := func(name string) string {
		for _, srv := range f.Configuration().Servers {
			if string(srv.ID) == name {
				if srv.ID == leaderID {
					return "leader"
				}
				return suffrage(srv.Suffrage)
			}
		}
		return "none"
	}
	resp := &pb.MembersResponse{Header: s.n.header(s.n.store.FSM().Revision())}
	known := map[string]bool{}
	for _, m := range s.n.gossip.Members() {
		known[m.Name] = true
		resp.Members = append(resp.Members, &pb.Member{
			Name: m.Name, Address: m.Addr, GrpcAddress: m.Meta.GRPCAddr, RaftAddress: m.Meta.RaftAddr,
			Status: m.Status, Role: role(m.Name), Build: m.Meta.Build, Zone: m.Meta.Zone,
		})
	}
	for _, srv := range f.Configuration().Servers {
		if !known[string(srv.ID)] {
			resp.Members = append(resp.Members, &pb.Member{Name: string(srv.ID), RaftAddress: string(srv.Address), Status: "unknown", Role: role(string(srv.ID))})
		}
	}
	return resp, nil
}

func suffrage(s raft.ServerSuffrage) string {
	if s == raft.Voter {
		return "voter"
	}
	return "nonvoter"
}

// Peers lists the Raft configuration. Each peer's last log index comes
// from that peer's own Status (asked in parallel, 500 ms each); it is 0
// when the peer does not answer.
func (s *statusServer) Peers(ctx context.Context, _ *pb.PeersRequest) (*pb.PeersResponse, error) {
	r := s.n.store.Raft()
	f := r.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, raftstore.RaftError(err)
	}
	_, leaderID := r.LeaderWithID()
	resp := &pb.PeersResponse{Header: s.n.header(s.n.store.FSM().Revision())}
	var wg sync.WaitGroup
	for _, srv := range f.Configuration().Servers {
		p := &pb.Peer{Id: string(srv.ID), Address: string(srv.Address), Suffrage: suffrage(srv.Suffrage), Leader: srv.ID == leaderID}
		resp.Peers = append(resp.Peers, p)
		if p.Id == s.n.cfg.Name {
			p.LastIndex = r.LastIndex()
			continue
		}
		node := s.n.store.FSM().Node(p.Id)
		if node == nil || node.GrpcAddress == "" {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if st, err := s.n.peerStatus(ctx, node.GrpcAddress); err == nil {
				p.LastIndex = st.LastLogIndex
			}
		}()
	}
	wg.Wait()
	return resp, nil
}

// Leave makes this agent leave the cluster for good; see Node.Leave.
func (s *statusServer) Leave(ctx context.Context, _ *pb.LeaveRequest) (*pb.LeaveResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	removed, err := s.n.Leave(ctx)
	if err != nil {
		return nil, err
	}
	return &pb.LeaveResponse{Removed: removed}, nil
}

func (s *statusServer) Version(context.Context, *pb.VersionRequest) (*pb.VersionResponse, error) {
	return &pb.VersionResponse{Version: s.n.cfg.Build, GoVersion: runtime.Version()}, nil
}
