package raftstore

import (
	"fmt"
	"io"
	"sort"
	"sync"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
)

// FSM is the registry state machine. Raft calls Apply, ApplyBatch, Snapshot
// and Restore from its FSM goroutine, one at a time; readers call the query
// methods from any goroutine.
//
// Instances, sessions and nodes are immutable once stored: a change stores a
// new copy. Query methods return the stored pointers, which callers must not
// modify.
type FSM struct {
	mu       sync.RWMutex
	revision uint64
	services map[string]map[string]*pb.Instance // service -> id -> instance
	sessions map[string]*pb.Session
	nodes    map[string]*pb.Node
	// checked indexes the instances that have a health check, so that
	// health sweeps cost nothing for the rest.
	checked map[checkedKey]*pb.Instance
	// shared holds what stored instances share (shared.go).
	shared *sharedValues
	// requests remembers the results of recent requests by id for
	// DedupWindow, so a write retried after an ambiguous failure is
	// applied once.
	requests *requestLog
	blobs    blobState
	quota    quotaCounts
	health   healthCounts // instances by health, for metrics
	// cluster is the cluster's identity (cluster.go).
	cluster *clusterState
	// acl is the cluster's ACL policies and tokens (acl.go).
	acl aclState

	events *eventLog
}

// NewFSM returns an empty state machine whose event ring keeps ringSize
// events for resuming watchers.
func NewFSM(ringSize int) *FSM {
	f := &FSM{events: newEventLog(ringSize), requests: newRequestLog(DedupWindow, maxRequestIDs), cluster: newClusterState()}
	f.reset()
	return f
}

func (f *FSM) reset() {
	f.services = make(map[string]map[string]*pb.Instance)
	f.sessions = make(map[string]*pb.Session)
	f.nodes = make(map[string]*pb.Node)
	f.checked = make(map[checkedKey]*pb.Instance)
	f.shared = newSharedValues()
	f.blobs.reset()
	f.quota.reset()
	f.health.reset()
	f.acl.reset()
}

type checkedKey struct{ service, id string }

// put stores inst, keeping the check index current. inst must be new to
// the FSM (put makes it share parts with the instances stored before).
func (f *FSM) put(inst *pb.Instance) {
	f.shared.share(inst)
	byID := f.services[inst.Service]
	if byID == nil {
		byID = make(map[string]*pb.Instance)
		f.services[inst.Service] = byID
	}
	f.quota.replace(byID[inst.Id], inst)
	f.health.replace(byID[inst.Id], inst)
	byID[inst.Id] = inst
	k := checkedKey{inst.Service, inst.Id}
	if inst.Check != nil {
		f.checked[k] = inst
	} else {
		delete(f.checked, k)
	}
}

// Apply applies one committed log entry. It returns nil or an error that
// belongs to the proposer (a deterministic rejection such as ErrNotFound);
// the state stays as it was when it returns an error.
func (f *FSM) Apply(l *raft.Log) any {
	return f.ApplyBatch([]*raft.Log{l})[0]
}

// ApplyBatch applies consecutive committed entries under one lock, and
// publishes their events to watchers once.
func (f *FSM) ApplyBatch(logs []*raft.Log) []any {
	out := make([]any, len(logs))
	var evs []*pb.Event
	f.mu.Lock()
	for i, l := range logs {
		if l.Index > f.revision {
			f.revision = l.Index
		}
		if l.Type != raft.LogCommand {
			continue
		}
		var cmd pb.Command
		if err := proto.Unmarshal(l.Data, &cmd); err != nil {
			out[i] = fmt.Errorf("%w: decode raft entry %d: %v", ErrInvalidArgument, l.Index, err)
			continue
		}
		f.requests.advance(cmd.Time)
		if first, ok := f.requests.get(cmd.RequestId); ok {
			out[i] = first
			continue
		}
		var err error
		evs, err = f.apply(&cmd, l.Index, evs)
		if err != nil {
			out[i] = err
		}
		f.requests.put(cmd.RequestId, Duplicate{Revision: l.Index, Err: err})
	}
	rev := f.revision
	f.events.append(evs, rev)
	f.mu.Unlock()
	return out
}

// apply changes the state for one command and appends the events it caused.
// It validates before it changes anything.
func (f *FSM) apply(cmd *pb.Command, rev uint64, evs []*pb.Event) ([]*pb.Event, error) {
	switch k := cmd.Kind.(type) {
	case *pb.Command_Register:
		if err := f.checkQuota(cmd.Quota, k.Register); err != nil {
			return evs, err
		}
		return f.applyRegister(k.Register, cmd.Time, rev, evs)
	case *pb.Command_Deregister:
		old := f.instance(k.Deregister.Service, k.Deregister.Id)
		if old == nil {
			return evs, fmt.Errorf("%w: instance %s/%s", ErrNotFound, k.Deregister.Service, k.Deregister.Id)
		}
		return f.remove(old, rev, evs), nil
	case *pb.Command_SetHealth:
		return f.applySetHealth(k.SetHealth, cmd.Time, rev, evs), nil
	case *pb.Command_SessionCreate:
		s := k.SessionCreate.GetSession()
		if s.GetId() == "" {
			return evs, fmt.Errorf("%w: session id is empty", ErrInvalidArgument)
		}
		f.sessions[s.Id] = s
		return evs, nil
	case *pb.Command_SessionDestroy:
		return f.applySessionDestroy(k.SessionDestroy.Ids, rev, evs), nil
	case *pb.Command_NodeUpsert:
		n := k.NodeUpsert
		if n.GetName() == "" {
			return evs, fmt.Errorf("%w: node name is empty", ErrInvalidArgument)
		}
		f.nodes[n.Name] = n
		return evs, nil
	case *pb.Command_NodeRemove:
		return f.applyNodeRemove(k.NodeRemove.Name, rev, evs), nil
	case *pb.Command_BlobPending:
		return evs, f.applyBlobPending(k.BlobPending)
	case *pb.Command_BlobCommit:
		return evs, f.applyBlobCommit(k.BlobCommit, cmd.Time, rev)
	case *pb.Command_BlobAbort:
		f.applyBlobAbort(k.BlobAbort.Ids)
		return evs, nil
	case *pb.Command_BlobDelete:
		return evs, f.applyBlobDelete(k.BlobDelete.Name)
	case *pb.Command_BlobShards:
		return evs, f.applyBlobShards(k.BlobShards, rev)
	case *pb.Command_ClusterInit:
		return evs, f.applyClusterInit(k.ClusterInit)
	case *pb.Command_AclBootstrap, *pb.Command_AclPolicySet, *pb.Command_AclPolicyDelete,
		*pb.Command_AclTokenSet, *pb.Command_AclTokenDelete:
		return evs, f.applyACL(cmd, rev)
	default:
		return evs, fmt.Errorf("%w: unknown raft command %T", ErrInvalidArgument, cmd.Kind)
	}
}

// applyRegister stores in, which it takes over: the command it belongs to
// was decoded from the entry for this apply alone (ApplyBatch), so it is
// stored without a copy.
func (f *FSM) applyRegister(in *pb.Instance, now int64, rev uint64, evs []*pb.Event) ([]*pb.Event, error) {
	if in.GetService() == "" || in.GetId() == "" {
		return evs, fmt.Errorf("%w: instance needs a service and an id", ErrInvalidArgument)
	}
	if in.Session != "" {
		if _, ok := f.sessions[in.Session]; !ok {
			return evs, fmt.Errorf("%w: session %s does not exist (expired or closed)", ErrSessionRequired, in.Session)
		}
	}
	inst := in
	inst.CreateRevision = rev
	inst.ModRevision = rev
	inst.HealthSince = now
	if old := f.instance(in.Service, in.Id); old != nil {
		inst.CreateRevision = old.CreateRevision
		if old.Health == inst.Health {
			inst.HealthSince = old.HealthSince
		}
	}
	f.put(inst)
	return append(evs, &pb.Event{Type: pb.Event_PUT, Instance: inst, Revision: rev}), nil
}

func (f *FSM) applySetHealth(c *pb.SetHealth, now int64, rev uint64, evs []*pb.Event) []*pb.Event {
	var targets []*pb.Instance
	if c.Node != "" {
		// A whole agent changes health (it died, or came back): the node
		// and every instance it owns change in this one entry.
		if n := f.nodes[c.Node]; n != nil && n.Health != c.Health {
			n = proto.Clone(n).(*pb.Node)
			n.Health = c.Health
			f.nodes[c.Node] = n
		}
		targets = f.instancesWhere(func(i *pb.Instance) bool { return i.Node == c.Node })
	} else {
		for _, ref := range c.Instances {
			if inst := f.instance(ref.Service, ref.Id); inst != nil {
				targets = append(targets, inst)
			}
		}
	}
	for _, old := range targets {
		if old.Health == c.Health && old.HealthOutput == c.Output {
			continue
		}
		inst := proto.Clone(old).(*pb.Instance)
		if inst.Health != c.Health {
			inst.HealthSince = now
		}
		inst.Health = c.Health
		inst.HealthOutput = c.Output
		inst.ModRevision = rev
		f.put(inst)
		evs = append(evs, &pb.Event{Type: pb.Event_PUT, Instance: inst, Revision: rev})
	}
	return evs
}

func (f *FSM) applySessionDestroy(ids []string, rev uint64, evs []*pb.Event) []*pb.Event {
	gone := make(map[string]bool, len(ids))
	for _, id := range ids {
		if _, ok := f.sessions[id]; ok {
			gone[id] = true
			delete(f.sessions, id)
		}
	}
	if len(gone) == 0 {
		return evs
	}
	for _, inst := range f.instancesWhere(func(i *pb.Instance) bool { return gone[i.Session] }) {
		evs = f.remove(inst, rev, evs)
	}
	return evs
}

func (f *FSM) applyNodeRemove(name string, rev uint64, evs []*pb.Event) []*pb.Event {
	delete(f.nodes, name)
	gone := make(map[string]bool)
	for id, s := range f.sessions {
		if s.Node == name {
			delete(f.sessions, id)
			gone[id] = true
		}
	}
	// The node's instances, and any instance bound to one of its sessions:
	// an instance never outlives its session.
	for _, inst := range f.instancesWhere(func(i *pb.Instance) bool { return i.Node == name || gone[i.Session] }) {
		evs = f.remove(inst, rev, evs)
	}
	return evs
}

func (f *FSM) remove(inst *pb.Instance, rev uint64, evs []*pb.Event) []*pb.Event {
	byID := f.services[inst.Service]
	f.quota.replace(inst, nil)
	f.health.replace(inst, nil)
	delete(byID, inst.Id)
	delete(f.checked, checkedKey{inst.Service, inst.Id})
	if len(byID) == 0 {
		delete(f.services, inst.Service)
	}
	return append(evs, &pb.Event{Type: pb.Event_DELETE, Instance: inst, Revision: rev})
}

// putAll stores instances as put does, into maps made for them at their
// size rather than grown: a snapshot lists the instances grouped by
// service.
func (f *FSM) putAll(instances []*pb.Instance) {
	checked := 0
	for _, inst := range instances {
		if inst.Check != nil {
			checked++
		}
	}
	if len(f.checked) == 0 {
		f.checked = make(map[checkedKey]*pb.Instance, checked)
	}
	for i := 0; i < len(instances); {
		service := instances[i].Service
		j := i + 1
		for j < len(instances) && instances[j].Service == service {
			j++
		}
		if f.services[service] == nil {
			f.services[service] = make(map[string]*pb.Instance, j-i)
		}
		for _, inst := range instances[i:j] {
			f.put(inst)
		}
		i = j
	}
}

// InstanceCount returns how many instances are stored.
func (f *FSM) InstanceCount() int {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.instanceCount()
}

// instanceCount returns how many instances are stored.
func (f *FSM) instanceCount() int {
	n := 0
	for _, byID := range f.services {
		n += len(byID)
	}
	return n
}

func (f *FSM) instance(service, id string) *pb.Instance {
	return f.services[service][id]
}

// instancesWhere returns matching instances sorted by service and id, so that
// events come out in the same order on every replica.
func (f *FSM) instancesWhere(match func(*pb.Instance) bool) []*pb.Instance {
	var out []*pb.Instance
	for _, byID := range f.services {
		for _, inst := range byID {
			if match(inst) {
				out = append(out, inst)
			}
		}
	}
	sortInstances(out)
	return out
}

func sortInstances(in []*pb.Instance) {
	sort.Slice(in, func(a, b int) bool {
		if in[a].Service != in[b].Service {
			return in[a].Service < in[b].Service
		}
		return in[a].Id < in[b].Id
	})
}

// Revision returns the index of the last applied entry.
func (f *FSM) Revision() uint64 {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.revision
}

// Instances returns the instances of service sorted by id, and the revision
// they reflect.
func (f *FSM) Instances(service string) ([]*pb.Instance, uint64) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	out := make([]*pb.Instance, 0, len(f.services[service]))
	for _, inst := range f.services[service] {
		out = append(out, inst)
	}
	sortInstances(out)
	return out, f.revision
}

// Instance returns one instance, or nil.
func (f *FSM) Instance(service, id string) *pb.Instance {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.instance(service, id)
}

// AllInstances returns every instance sorted by service and id.
func (f *FSM) AllInstances() ([]*pb.Instance, uint64) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.instancesWhere(func(*pb.Instance) bool { return true }), f.revision
}

// CheckedInstances returns the instances that have a health check (TTL or
// gRPC), in no particular order.
func (f *FSM) CheckedInstances() []*pb.Instance {
	f.mu.RLock()
	defer f.mu.RUnlock()
	out := make([]*pb.Instance, 0, len(f.checked))
	for _, inst := range f.checked {
		out = append(out, inst)
	}
	return out
}

// NodeOwnsAnything reports whether any session or instance belongs to the
// node called name.
func (f *FSM) NodeOwnsAnything(name string) bool {
	f.mu.RLock()
	defer f.mu.RUnlock()
	for _, s := range f.sessions {
		if s.Node == name {
			return true
		}
	}
	for _, byID := range f.services {
		for _, inst := range byID {
			if inst.Node == name {
				return true
			}
		}
	}
	return false
}

// Services summarises every service, sorted by name.
func (f *FSM) Services() ([]*pb.ServiceSummary, uint64) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	out := make([]*pb.ServiceSummary, 0, len(f.services))
	for name, byID := range f.services {
		s := &pb.ServiceSummary{Name: name, Instances: uint32(len(byID))}
		for _, inst := range byID {
			if inst.Health == pb.Health_PASSING {
				s.Passing++
			}
		}
		out = append(out, s)
	}
	sort.Slice(out, func(a, b int) bool { return out[a].Name < out[b].Name })
	return out, f.revision
}

// Sessions returns every open session sorted by id.
func (f *FSM) Sessions() []*pb.Session {
	f.mu.RLock()
	defer f.mu.RUnlock()
	out := make([]*pb.Session, 0, len(f.sessions))
	for _, s := range f.sessions {
		out = append(out, s)
	}
	sort.Slice(out, func(a, b int) bool { return out[a].Id < out[b].Id })
	return out
}

// Nodes returns every known node sorted by name.
func (f *FSM) Nodes() []*pb.Node {
	f.mu.RLock()
	defer f.mu.RUnlock()
	out := make([]*pb.Node, 0, len(f.nodes))
	for _, n := range f.nodes {
		out = append(out, n)
	}
	sort.Slice(out, func(a, b int) bool { return out[a].Name < out[b].Name })
	return out
}

// Node returns one node, or nil.
func (f *FSM) Node(name string) *pb.Node {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.nodes[name]
}

// Snapshot captures the state for raft. Stored values are immutable, so
// copying the maps' pointers is a consistent point-in-time copy.
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	s := &fsmSnapshot{revision: f.revision}
	// Persist sorts them, off the lock: sorting a million instances here
	// would hold every write back for a second.
	s.instances = make([]*pb.Instance, 0, f.instanceCount())
	for _, byID := range f.services {
		for _, inst := range byID {
			s.instances = append(s.instances, inst)
		}
	}
	for _, ss := range f.sessions {
		s.sessions = append(s.sessions, ss)
	}
	for _, n := range f.nodes {
		s.nodes = append(s.nodes, n)
	}
	s.requests, s.requestClock = f.requests.records(), f.requests.clock
	s.cluster = f.cluster.get()
	s.aclBootstrapped, s.aclPolicies, s.aclTokens = f.acl.snapshot()
	for _, b := range f.blobs.byName {
		s.blobs = append(s.blobs, b)
	}
	for _, p := range f.blobs.pending {
		s.pending = append(s.pending, p)
	}
	return s, nil
}

// Restore replaces the state with a snapshot. On a decode error the current
// state is kept. Watchers are told to resynchronise.
func (f *FSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	st, err := readSnapshot(rc)
	if err != nil {
		return fmt.Errorf("restore registry snapshot: %w", err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reset()
	f.revision = st.revision
	f.cluster.set(st.cluster)
	f.putAll(st.instances)
	for _, s := range st.sessions {
		f.sessions[s.Id] = s
	}
	for _, n := range st.nodes {
		f.nodes[n.Name] = n
	}
	for _, b := range st.blobs {
		f.blobs.put(b)
	}
	for _, p := range st.pending {
		f.blobs.pending[p.Id] = p
	}
	f.acl.restore(st.aclBootstrapped, st.aclPolicies, st.aclTokens)
	f.requests = f.requests.restored(st.requests, st.requestClock)
	f.events.compactTo(f.revision)
	return nil
}

var _ raft.BatchingFSM = (*FSM)(nil)
