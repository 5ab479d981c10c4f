package ui

import (
	"context"
	"fmt"
	"net/http"
	"sort"
	"time"

	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/zrpcio/zrpc/acl"
	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/raftstore"
)

// The JSON the page reads. Times are RFC 3339 strings ("" when unknown),
// healths lower-case names.

// agentView is the header of every page: which agent answers.
type agentView struct {
	Name      string `json:"name"`
	Build     string `json:"build"`
	ClusterID string `json:"cluster_id"`
	Leader    string `json:"leader"`
	RaftState string `json:"raft_state"`
	// RaftStopped says why the agent stopped its Raft node (a failed
	// fsync of its log); empty while it runs.
	RaftStopped string `json:"raft_stopped,omitempty"`
	// CutOff says why the agent is cut off from the leader (a
	// partition, its peers down); empty while it is in contact.
	CutOff       string `json:"cut_off,omitempty"`
	Revision     uint64 `json:"revision"`
	AppliedIndex uint64 `json:"applied_index"`
}

type serviceView struct {
	Name      string `json:"name"`
	Instances int    `json:"instances"`
	Passing   int    `json:"passing"`
	Warning   int    `json:"warning"`
	Critical  int    `json:"critical"`
}

type servicesView struct {
	Revision uint64        `json:"revision"`
	Services []serviceView `json:"services"`
}

type instanceView struct {
	ID           string            `json:"id"`
	Address      string            `json:"address"`
	Zone         string            `json:"zone"`
	Version      string            `json:"version"`
	Weight       uint32            `json:"weight"`
	Tags         []string          `json:"tags"`
	Metadata     map[string]string `json:"metadata"`
	Health       string            `json:"health"`
	HealthOutput string            `json:"health_output"`
	HealthSince  string            `json:"health_since"`
	Check        string            `json:"check"`
	Node         string            `json:"node"`
	ModRevision  uint64            `json:"mod_revision"`
}

// instancesView is one page of a service's instances, in id order.
type instancesView struct {
	Service  string `json:"service"`
	Revision uint64 `json:"revision"`
	// Total counts the service's instances; First is the position (from
	// 0) of the page's first among them.
	Total     int            `json:"total"`
	First     int            `json:"first"`
	Instances []instanceView `json:"instances"`
	// Next is the id to ask the next page after (?after=ID); empty on
	// the last page.
	Next string `json:"next,omitempty"`
}

type memberView struct {
	Name        string `json:"name"`
	Address     string `json:"address"`
	GRPCAddress string `json:"grpc_address"`
	Status      string `json:"status"`
	Role        string `json:"role"`
	Zone        string `json:"zone"`
	Build       string `json:"build"`
	// ShardsFull: its shard store takes no new blob shards.
	ShardsFull bool `json:"shards_full"`
	// Leaving: it leaves the cluster for good and hands its blob shards
	// off first.
	Leaving bool `json:"leaving"`
	// NoRaftState: alive without the cluster's log (a new or wiped data
	// dir); it refuses votes until a leader has sent it the log.
	NoRaftState bool `json:"no_raft_state"`
	// ClockOffsetSeconds: how far its clock is from the answering agent's
	// (positive: ahead); absent when not measured.
	ClockOffsetSeconds *float64 `json:"clock_offset_seconds,omitempty"`
}

type membersView struct {
	Members []memberView `json:"members"`
}

type peerView struct {
	ID        string `json:"id"`
	Address   string `json:"address"`
	Suffrage  string `json:"suffrage"`
	Leader    bool   `json:"leader"`
	LastIndex uint64 `json:"last_index"`
	// Lag is how many entries the peer's log is behind the leader's (or,
	// without a leader's answer, the longest log's); -1 when the peer did
	// not answer.
	Lag int64 `json:"lag"`
	// Unreachable: the agent asked the peer and got no answer (as
	// `zrpcctl raft peers` shows it).
	Unreachable bool `json:"unreachable"`
}

type raftView struct {
	Leader      string     `json:"leader"`
	Term        uint64     `json:"term"`
	State       string     `json:"state"`
	CommitIndex uint64     `json:"commit_index"`
	Peers       []peerView `json:"peers"`
}

type blobView struct {
	Name         string `json:"name"`
	ID           string `json:"id"`
	Size         uint64 `json:"size"`
	DataShards   uint32 `json:"data_shards"`
	ParityShards uint32 `json:"parity_shards"`
	Inline       bool   `json:"inline"`
	Health       string `json:"health"`
	Created      string `json:"created"`
}

// blobsView is one page of the blobs a token may read, in name order.
type blobsView struct {
	Revision uint64 `json:"revision"`
	// Total counts the blobs the token may read; First is the position
	// (from 0) of the page's first among them.
	Total int        `json:"total"`
	First int        `json:"first"`
	Blobs []blobView `json:"blobs"`
	// Next is the name to ask the next page after (?after=NAME); empty
	// on the last page.
	Next string `json:"next,omitempty"`
}

type repairView struct {
	Leader          string `json:"leader"`
	Queued          uint64 `json:"queued"`
	InProgress      uint64 `json:"in_progress"`
	Waiting         uint64 `json:"waiting"`
	WaitingForAgent uint64 `json:"waiting_for_agent"`
	Retrying        uint64 `json:"retrying"`
	RebuiltShards   uint64 `json:"rebuilt_shards"`
	RebuiltBytes    uint64 `json:"rebuilt_bytes"`
	Failed          uint64 `json:"failed"`
	LastError       string `json:"last_error"`
	LastScan        string `json:"last_scan"`
	// Corrupt counts the shards of the blob asked for (?blob=NAME)
	// reported corrupt and not yet rewritten.
	Corrupt int `json:"corrupt"`
}

// requestTimeout bounds what one endpoint waits for (Peers asks every
// peer, repair status the leader).
const requestTimeout = 5 * time.Second

func (u *UI) serveAgent(w http.ResponseWriter, r *http.Request) {
	if _, ok := u.allow(w, r, pb.Status_Status_FullMethodName, &pb.StatusRequest{}); !ok {
		return
	}
	st, err := u.cfg.Status.Status(r.Context(), &pb.StatusRequest{})
	if err != nil {
		u.writeAPIError(w, r, err)
		return
	}
	writeJSON(w, agentView{
		Name: st.Node, Build: st.Build, ClusterID: st.ClusterId, Leader: st.Leader, RaftState: st.RaftState, RaftStopped: st.RaftStopped,
		CutOff: st.CutOff, Revision: st.GetHeader().GetRevision(), AppliedIndex: st.AppliedIndex,
	})
}

// serveServices lists the services this token may read (as List does),
// with their instances counted by health.
func (u *UI) serveServices(w http.ResponseWriter, r *http.Request) {
	a, ok := u.allow(w, r, pb.Registry_List_FullMethodName, &pb.ListRequest{})
	if !ok {
		return
	}
	svcs, rev := u.cfg.Replica.Services()
	list := filter(a, pb.Registry_List_FullMethodName, &pb.ListResponse{Services: svcs}).(*pb.ListResponse)
	out := servicesView{Revision: rev, Services: []serviceView{}}
	for _, s := range list.Services {
		v := serviceView{Name: s.Name, Instances: int(s.Instances), Passing: int(s.Passing)}
		if v.Passing < v.Instances {
			// Only a service with instances not passing is read in full,
			// to tell warning from critical: a healthy registry costs
			// this page one pass over its services, not its instances.
			v = countByHealth(s.Name, u.cfg.Replica)
		}
		out.Services = append(out.Services, v)
	}
	sort.Slice(out.Services, func(i, j int) bool { return out.Services[i].Name < out.Services[j].Name })
	writeJSON(w, out)
}

// countByHealth counts the instances of service by health, from the
// health the replica keeps beside each encoding: decoding them would cost
// a page of services the size of their health outputs (4 KiB each).
func countByHealth(service string, r Replica) serviceView {
	v := serviceView{Name: service}
	insts, _ := r.EncodedInstances(service)
	for _, in := range insts {
		v.Instances++
		switch in.Health {
		case pb.Health_PASSING:
			v.Passing++
		case pb.Health_WARNING:
			v.Warning++
		default:
			v.Critical++
		}
	}
	return v
}

// Bounds of one page of a service's instances: a service may have
// thousands, each with a health output of up to 4 KiB and its metadata,
// and a page answers only what a browser can show.
const (
	instancesPerPage     = 500
	maxInstancePageBytes = 4 << 20
)

// serveService lists one page of a service's instances (?after=ID: those
// after that id); it needs service:read on the service, as Get does. A
// service without instances has none listed.
func (u *UI) serveService(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if u.cfg.ValidService != nil {
		if err := u.cfg.ValidService(name); err != nil {
			writeError(w, http.StatusBadRequest, status.Convert(err).Message())
			return
		}
	}
	if _, ok := u.allow(w, r, pb.Registry_Get_FullMethodName, &pb.GetRequest{Service: name}); !ok {
		return
	}
	all, rev := u.cfg.Replica.EncodedInstances(name)
	first, last := instancePage(all, r.URL.Query().Get("after"))
	out := instancesView{Service: name, Revision: rev, Total: len(all), First: first, Instances: make([]instanceView, 0, last-first)}
	if last < len(all) {
		out.Next = all[last-1].ID
	}
	for _, enc := range all[first:last] {
		in := &pb.Instance{}
		if err := proto.Unmarshal(enc.Encoding, in); err != nil {
			u.writeAPIError(w, r, fmt.Errorf("decode instance %s of service %s: %w", enc.ID, name, err))
			return
		}
		out.Instances = append(out.Instances, instanceView{
			ID: in.Id, Address: in.Address, Zone: in.Zone, Version: in.Version, Weight: in.Weight,
			Tags: nonNil(in.Tags), Metadata: in.Metadata, Health: healthName(in.Health), HealthOutput: in.HealthOutput,
			HealthSince: unixNano(in.HealthSince), Check: describeCheck(in), Node: in.Node, ModRevision: in.ModRevision,
		})
	}
	writeJSON(w, out)
}

// instancePage returns the bounds [first, last) in all (sorted by id) of
// the page after id after ("": the first page): at most instancesPerPage
// instances and maxInstancePageBytes of their encodings, one at least.
func instancePage(all []raftstore.EncodedInstance, after string) (first, last int) {
	return pageOf(len(all), func(i int) string { return all[i].ID }, func(i int) int { return len(all[i].Encoding) },
		after, instancesPerPage, maxInstancePageBytes)
}

// pageOf returns the bounds [first, last) of the page after key after
// ("": the first page) among n entries sorted by key: at most perPage
// entries and maxBytes of their sizes, one at least.
func pageOf(n int, key func(i int) string, size func(i int) int, after string, perPage, maxBytes int) (first, last int) {
	if after != "" {
		first = sort.Search(n, func(i int) bool { return key(i) > after })
	}
	sum := 0
	for last = first; last < n && last-first < perPage; last++ {
		sum += size(last)
		if last > first && sum > maxBytes {
			break
		}
	}
	return first, last
}

func (u *UI) serveMembers(w http.ResponseWriter, r *http.Request) {
	if _, ok := u.allow(w, r, pb.Status_Members_FullMethodName, &pb.MembersRequest{}); !ok {
		return
	}
	resp, err := u.cfg.Status.Members(r.Context(), &pb.MembersRequest{})
	if err != nil {
		u.writeAPIError(w, r, err)
		return
	}
	out := membersView{Members: make([]memberView, 0, len(resp.Members))}
	for _, m := range resp.Members {
		mv := memberView{
			Name: m.Name, Address: m.Address, GRPCAddress: m.GrpcAddress, Status: m.Status, Role: m.Role, Zone: m.Zone, Build: m.Build,
			ShardsFull: m.ShardsFull, Leaving: m.Leaving, NoRaftState: m.NoRaftState,
		}
		if m.ClockOffset != nil {
			s := m.ClockOffset.AsDuration().Seconds()
			mv.ClockOffsetSeconds = &s
		}
		out.Members = append(out.Members, mv)
	}
	sort.Slice(out.Members, func(i, j int) bool { return out.Members[i].Name < out.Members[j].Name })
	writeJSON(w, out)
}

// serveRaft shows the Raft configuration with each peer's last log index
// (asked of the peer, as `zrpcctl raft peers` does) and its lag.
func (u *UI) serveRaft(w http.ResponseWriter, r *http.Request) {
	if _, ok := u.allow(w, r, pb.Status_Peers_FullMethodName, &pb.PeersRequest{}); !ok {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), requestTimeout)
	defer cancel()
	st, err := u.cfg.Status.Status(ctx, &pb.StatusRequest{})
	if err != nil {
		u.writeAPIError(w, r, err)
		return
	}
	resp, err := u.cfg.Status.Peers(ctx, &pb.PeersRequest{})
	if err != nil {
		u.writeAPIError(w, r, err)
		return
	}
	out := raftView{Leader: st.Leader, Term: st.Term, State: st.RaftState, CommitIndex: st.CommitIndex, Peers: make([]peerView, 0, len(resp.Peers))}
	head := leaderIndex(resp.Peers)
	for _, p := range resp.Peers {
		lag := int64(-1)
		if !p.Unreachable && p.LastIndex > 0 && head >= p.LastIndex {
			lag = int64(head - p.LastIndex)
		}
		out.Peers = append(out.Peers, peerView{ID: p.Id, Address: p.Address, Suffrage: p.Suffrage, Leader: p.Leader, LastIndex: p.LastIndex, Lag: lag, Unreachable: p.Unreachable})
	}
	sort.Slice(out.Peers, func(i, j int) bool { return out.Peers[i].ID < out.Peers[j].ID })
	writeJSON(w, out)
}

// Bounds of one page of blobs: a store may hold millions of blobs, with
// names of up to 1 KiB, and a page answers only what a browser can show.
// blobViewBytes is about what a blob's view takes besides its name.
const (
	blobsPerPage     = 500
	maxBlobPageBytes = 256 << 10
	blobViewBytes    = 256
)

// serveBlobs lists one page of the blobs this token may read (as
// Blobs.List does), in name order (?after=NAME: those after that name),
// with their health as this agent judges it, from this agent's replica as
// it is (a STALE read), as the other views show its registry: the page
// works while the cluster has no leader, and the cluster view says so.
// Only the page's blobs are judged.
func (u *UI) serveBlobs(w http.ResponseWriter, r *http.Request) {
	a, ok := u.allow(w, r, pb.Blobs_List_FullMethodName, &pb.BlobListRequest{})
	if !ok {
		return
	}
	after := r.URL.Query().Get("after")
	// The store asks about every blob in name order: those the token may
	// read up to after come before the page.
	first := 0
	readable := func(name string) bool {
		if !a.Allows(acl.Blob, name, acl.Read) {
			return false
		}
		if name <= after {
			first++
		}
		return true
	}
	page, total, rev, err := u.cfg.Blobs.ListPage(r.Context(), "", after, blobsPerPage, readable, pb.Consistency_STALE)
	if err != nil {
		u.writeAPIError(w, r, fmt.Errorf("list the blobs: %w", err))
		return
	}
	_, last := pageOf(len(page), func(i int) string { return page[i].Name }, func(i int) int { return len(page[i].Name) + blobViewBytes },
		"", blobsPerPage, maxBlobPageBytes)
	page = page[:last]
	out := blobsView{Revision: rev, Total: total, First: first, Blobs: make([]blobView, 0, len(page))}
	if len(page) > 0 && first+len(page) < total {
		out.Next = page[len(page)-1].Name
	}
	for _, b := range page {
		v := blobView{
			Name: b.Name, Size: b.Size, DataShards: b.DataShards, ParityShards: b.ParityShards,
			Inline: b.Inline, Health: b.Health, Created: unixNano(b.Created),
		}
		if meta := u.cfg.Replica.Blob(b.Name); meta != nil {
			v.ID = meta.Id
		}
		out.Blobs = append(out.Blobs, v)
	}
	writeJSON(w, out)
}

// serveRepair shows the leader's repair state (operator:read, as
// RepairStatus); with ?blob=NAME also how many of that blob's shards are
// reported corrupt, which needs blob:read on the name too (as Stat, which
// tells a blob's id from its name): whether a blob exists is not shown to
// a token that may not read it.
func (u *UI) serveRepair(w http.ResponseWriter, r *http.Request) {
	if _, ok := u.allow(w, r, pb.Blobs_RepairStatus_FullMethodName, &pb.RepairStatusRequest{}); !ok {
		return
	}
	var id string
	if name := r.URL.Query().Get("blob"); name != "" {
		if _, ok := u.allow(w, r, pb.Blobs_Stat_FullMethodName, &pb.BlobStatRequest{Name: name}); !ok {
			return
		}
		meta := u.cfg.Replica.Blob(name)
		if meta == nil {
			writeError(w, http.StatusNotFound, "no blob named "+name)
			return
		}
		id = meta.Id
	}
	ctx, cancel := context.WithTimeout(r.Context(), requestTimeout)
	defer cancel()
	st, err := u.cfg.Blobs.LeaderRepairStatus(ctx, id)
	if err != nil {
		u.writeAPIError(w, r, err)
		return
	}
	writeJSON(w, repairView{
		Leader: st.Leader, Queued: st.Queued, InProgress: st.InProgress, Waiting: st.Waiting, WaitingForAgent: st.WaitingForAgent, Retrying: st.Retrying,
		RebuiltShards: st.RebuiltShards, RebuiltBytes: st.RebuiltBytes, Failed: st.Failed,
		LastError: st.LastError, LastScan: unixNano(st.LastScan), Corrupt: len(st.Corrupt),
	})
}

// leaderIndex is the leader's last log index, or without it the highest
// any peer reported.
func leaderIndex(peers []*pb.Peer) uint64 {
	var newest uint64
	for _, p := range peers {
		if p.Leader && p.LastIndex > 0 {
			return p.LastIndex
		}
		newest = max(newest, p.LastIndex)
	}
	return newest
}

func healthName(h pb.Health) string {
	switch h {
	case pb.Health_PASSING:
		return "passing"
	case pb.Health_WARNING:
		return "warning"
	case pb.Health_CRITICAL:
		return "critical"
	}
	return "unknown"
}

// describeCheck says how an instance's health is kept.
func describeCheck(in *pb.Instance) string {
	c := in.Check
	switch {
	case c.GetGrpc():
		s := "gRPC health every " + c.GetInterval().AsDuration().String()
		if c.GetGrpcAddress() != "" {
			s += " on " + c.GetGrpcAddress()
		}
		return s
	case c.GetTtl() != nil:
		return "TTL " + c.GetTtl().AsDuration().String()
	case in.Session != "":
		return "session"
	}
	return "none"
}

func unixNano(ns int64) string {
	if ns == 0 {
		return ""
	}
	return time.Unix(0, ns).UTC().Format(time.RFC3339)
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
