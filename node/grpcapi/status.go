package grpcapi

import (
	"context"
	"fmt"
	"math"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/zrpcio/zrpc/api/apierr"
	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/gossip"
	"github.com/zrpcio/zrpc/raftstore"
)

func (s *Status) header(rev uint64) *pb.ResponseHeader { return header(s.cfg.Agent, rev) }

func (s *Status) Status(ctx context.Context, req *pb.StatusRequest) (*pb.StatusResponse, error) {
	st := s.cfg.Status.RaftStatus()
	resp := &pb.StatusResponse{
		Header:       s.header(s.cfg.Replica.Revision()),
		Node:         s.cfg.Agent,
		Leader:       st.LeaderID,
		Term:         st.Term,
		RaftState:    st.State.String(),
		CommitIndex:  st.CommitIndex,
		AppliedIndex: st.AppliedIndex,
		LastLogIndex: st.LastLogIndex,
		CommitSeen:   st.CommitSeen,
		Build:        s.cfg.Build,
		ClusterId:    s.cfg.Status.ClusterID(),
		RaftStopped:  st.Stopped,
		CutOff:       st.CutOff,
	}
	if at := req.GetApplyHashAt(); at > 0 {
		resp.ApplyHash, resp.ApplyHashKnown = s.cfg.Replica.ApplyHash(at)
	}
	resp.ApplyHashChainKnown = s.cfg.Replica.ApplyHashChainKnown()
	resp.Forming = s.cfg.Status.Forming()
	resp.HandoffShards = uint64(s.cfg.Status.HandoffShards())
	if t := s.cfg.Status.TLSExpires(); !t.IsZero() {
		resp.TlsCertExpires = timestamppb.New(t)
	}
	if s.cfg.Streams != nil {
		c := s.cfg.Streams()
		resp.WatchStreams, resp.MaxWatches = clampU32(c.Watches), clampU32(c.MaxWatches)
		resp.SessionStreams, resp.MaxSessions = clampU32(c.Sessions), clampU32(c.MaxSessions)
	}
	if st.LeaderID != "" {
		if node := s.cfg.Replica.Node(st.LeaderID); node != nil {
			resp.LeaderAddress = node.GrpcAddress
		} else {
			resp.LeaderAddress = st.LeaderAddr
		}
	}
	now := time.Now()
	if age, ok := st.LastContactAge(now); ok {
		resp.LastContact = durationpb.New(age)
	}
	if q, err := s.cfg.Status.Quorum(); err == nil {
		if st.LeaderID == "" {
			q = s.askVoters(ctx, q)
		}
		resp.Voters, resp.ReachableVoters = uint32(q.Voters), uint32(q.Reachable())
		for _, u := range q.Unreachable {
			v := &pb.UnreachableVoter{Name: u.ID, Status: u.Status}
			if !u.Since.IsZero() {
				v.DownFor = durationpb.New(now.Sub(u.Since))
			}
			resp.UnreachableVoters = append(resp.UnreachableVoters, v)
		}
	}
	return resp, nil
}

// clampU32 is n as a uint32 field, within its range.
func clampU32(n int64) uint32 { return uint32(min(max(n, 0), math.MaxUint32)) }

// notAnswering is the status of a voter that gossip lists alive but that
// did not answer this agent's health check.
const notAnswering = "not answering"

// askVoters asks, while there is no leader, each voter that gossip still
// counts reachable whether it answers (its health check, in parallel,
// 500 ms each: not its Status, which would ask its own voters), and counts
// those that do not answer unreachable: with a minority left, gossip takes
// its longest (seconds) to declare the others failed, and "3 of 3
// reachable" beside "no leader" would send the operator the wrong way.
func (s *Status) askVoters(ctx context.Context, q raftstore.Quorum) raftstore.Quorum {
	servers, err := s.cfg.Status.Servers()
	if err != nil {
		return q
	}
	down := make(map[string]bool, len(q.Unreachable))
	for _, u := range q.Unreachable {
		down[u.ID] = true
	}
	var wg sync.WaitGroup
	silent := make([]bool, len(servers)) // each goroutine sets its own
	for i, srv := range servers {
		if srv.Suffrage != raftstore.Voter || srv.ID == s.cfg.Agent || down[srv.ID] {
			continue
		}
		node := s.cfg.Replica.Node(srv.ID)
		if node == nil || node.GrpcAddress == "" {
			continue // no address to ask it at: gossip's word stands
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			silent[i] = s.cfg.Status.PeerAnswers(ctx, node.GrpcAddress) != nil
		}()
	}
	wg.Wait()
	for i, srv := range servers { // configuration order, as Quorum lists them
		if silent[i] {
			q.Unreachable = append(q.Unreachable, raftstore.Unreachable{ID: srv.ID, Status: notAnswering})
		}
	}
	return q
}

// Members lists the agents gossip knows, with their Raft role, plus Raft
// servers gossip no longer lists (their last status) or never knew
// (status "unknown"), sorted by name.
func (s *Status) Members(ctx context.Context, _ *pb.MembersRequest) (*pb.MembersResponse, error) {
	servers, err := s.cfg.Status.Servers()
	if err != nil {
		return nil, err
	}
	leaderID := s.cfg.Status.RaftStatus().LeaderID
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
	resp := &pb.MembersResponse{Header: s.header(s.cfg.Replica.Revision())}
	now := time.Now()
	cluster := s.cfg.Status.ClusterID()
	member := func(m gossip.Member) *pb.Member {
		pm := &pb.Member{
			Name: m.Name, Address: m.Addr, GrpcAddress: m.Meta.GRPCAddr, RaftAddress: m.Meta.RaftAddr,
			Status: m.Status, Role: role(m.Name), Build: m.Meta.Build, Zone: m.Meta.Zone,
			ShardsFull:  m.Meta.ShardsFull,
			Leaving:     m.Meta.Leaving,
			NoRaftState: m.Meta.Role == "server" && m.LacksCluster(cluster),
		}
		if !m.Since.IsZero() {
			pm.StatusFor = durationpb.New(now.Sub(m.Since))
		}
		if d, ok := s.cfg.Status.ClockOffset(m.Name); ok {
			pm.ClockOffset = durationpb.New(d)
		}
		return pm
	}
	known := map[string]bool{}
	for _, m := range s.cfg.Status.Members() {
		known[m.Name] = true
		resp.Members = append(resp.Members, member(m))
	}
	for _, srv := range servers {
		if known[srv.ID] {
			continue
		}
		if m, ok := s.cfg.Status.LastKnown(srv.ID); ok {
			// Failed or left longer ago than gossip lists members.
			resp.Members = append(resp.Members, member(m))
			continue
		}
		resp.Members = append(resp.Members, &pb.Member{Name: srv.ID, RaftAddress: srv.Address, Status: "unknown", Role: role(srv.ID)})
	}
	slices.SortFunc(resp.Members, func(a, b *pb.Member) int { return strings.Compare(a.Name, b.Name) })
	return resp, nil
}

// Peers lists the Raft configuration. Each peer's last log index comes
// from that peer's own Status (asked in parallel, 500 ms each); a peer that
// does not answer is marked unreachable.
func (s *Status) Peers(ctx context.Context, _ *pb.PeersRequest) (*pb.PeersResponse, error) {
	servers, err := s.cfg.Status.Servers()
	if err != nil {
		return nil, err
	}
	st := s.cfg.Status.RaftStatus()
	resp := &pb.PeersResponse{Header: s.header(s.cfg.Replica.Revision())}
	var wg sync.WaitGroup
	for _, srv := range servers {
		p := &pb.Peer{Id: srv.ID, Address: srv.Address, Suffrage: srv.Suffrage.String(), Leader: srv.ID == st.LeaderID}
		resp.Peers = append(resp.Peers, p)
		if p.Id == s.cfg.Agent {
			p.LastIndex = st.LastLogIndex
			continue
		}
		node := s.cfg.Replica.Node(p.Id)
		if node == nil || node.GrpcAddress == "" {
			p.Unreachable = true // no address to ask it at
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if st, err := s.cfg.Status.PeerStatus(ctx, node.GrpcAddress); err == nil {
				p.LastIndex = st.LastLogIndex
			} else {
				p.Unreachable = true
			}
		}()
	}
	wg.Wait()
	return resp, nil
}

// Leave makes this agent leave the cluster for good (StatusAgent.Leave).
// Handing its blob shards off takes as long as their bytes do: the call
// runs until the caller's deadline, or for at most maxLeave.
func (s *Status) Leave(ctx context.Context, req *pb.LeaveRequest) (*pb.LeaveResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, maxLeave)
	defer cancel()
	return s.cfg.Status.Leave(ctx, req)
}

// maxLeave bounds a Leave call without a deadline of its own.
const maxLeave = time.Hour

func (s *Status) Version(context.Context, *pb.VersionRequest) (*pb.VersionResponse, error) {
	return &pb.VersionResponse{Version: s.cfg.Build, GoVersion: runtime.Version()}, nil
}

// RemovePeer removes another agent from the cluster for good (`zrpcctl
// raft remove-peer NAME`): from Raft, and with its instances and sessions
// from the registry. Any agent takes the call and forwards it to the
// leader, which does the work.
func (s *Status) RemovePeer(ctx context.Context, req *pb.RemovePeerRequest) (*pb.RemovePeerResponse, error) {
	name := req.GetName()
	if name == "" {
		return nil, fmt.Errorf("%w: name is empty: name the agent to remove", apierr.ErrInvalidArgument)
	}
	var rev uint64
	err := s.cfg.Cluster.Write(ctx,
		func() error {
			var err error
			rev, err = s.cfg.Status.RemovePeer(ctx, name)
			return err
		},
		func(ctx context.Context, c grpc.ClientConnInterface) error {
			resp, err := pb.NewStatusClient(c).RemovePeer(ctx, req)
			rev = resp.GetHeader().GetRevision()
			return err
		})
	if err != nil {
		return nil, err
	}
	return &pb.RemovePeerResponse{Header: s.header(rev)}, nil
}
