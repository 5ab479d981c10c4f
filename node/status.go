package node

import (
	"context"
	"runtime"
	"sync"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
)

// statusServer implements the Status API.
type statusServer struct {
	pb.UnimplementedStatusServer
	n *Node
}

func (s *statusServer) Status(ctx context.Context, _ *pb.StatusRequest) (*pb.StatusResponse, error) {
	st := s.n.store.Status()
	resp := &pb.StatusResponse{
		Header:       s.n.header(s.n.store.FSM().Revision()),
		Node:         s.n.cfg.Name,
		Leader:       st.LeaderID,
		Term:         st.Term,
		RaftState:    st.State.String(),
		CommitIndex:  st.CommitIndex,
		AppliedIndex: st.AppliedIndex,
		LastLogIndex: st.LastLogIndex,
		Build:        Build,
		ClusterId:    s.n.clusterID(),
	}
	if st.LeaderID != "" {
		if node := s.n.store.FSM().Node(st.LeaderID); node != nil {
			resp.LeaderAddress = node.GrpcAddress
		} else {
			resp.LeaderAddress = st.LeaderAddr
		}
	}
	if age, ok := st.LastContactAge(time.Now()); ok {
		resp.LastContact = durationpb.New(age)
	}
	return resp, nil
}

// Members lists the agents gossip knows, with their Raft role, plus Raft
// servers gossip does not know (status "unknown").
func (s *statusServer) Members(ctx context.Context, _ *pb.MembersRequest) (*pb.MembersResponse, error) {
	servers, err := s.n.store.Servers()
	if err != nil {
		return nil, err
	}
	_, leaderID := s.n.store.Leader()
	role := func(name string) string {
		for _, srv := range servers {
			if srv.ID == name {
				if srv.ID == leaderID {
					return "leader"
				}
				return srv.Suffrage.String()
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
	for _, srv := range servers {
		if !known[srv.ID] {
			resp.Members = append(resp.Members, &pb.Member{Name: srv.ID, RaftAddress: srv.Address, Status: "unknown", Role: role(srv.ID)})
		}
	}
	return resp, nil
}

// Peers lists the Raft configuration. Each peer's last log index comes
// from that peer's own Status (asked in parallel, 500 ms each); it is 0
// when the peer does not answer.
func (s *statusServer) Peers(ctx context.Context, _ *pb.PeersRequest) (*pb.PeersResponse, error) {
	servers, err := s.n.store.Servers()
	if err != nil {
		return nil, err
	}
	st := s.n.store.Status()
	resp := &pb.PeersResponse{Header: s.n.header(s.n.store.FSM().Revision())}
	var wg sync.WaitGroup
	for _, srv := range servers {
		p := &pb.Peer{Id: srv.ID, Address: srv.Address, Suffrage: srv.Suffrage.String(), Leader: srv.ID == st.LeaderID}
		resp.Peers = append(resp.Peers, p)
		if p.Id == s.n.cfg.Name {
			p.LastIndex = st.LastLogIndex
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
	return &pb.VersionResponse{Version: Build, GoVersion: runtime.Version()}, nil
}
