package raftstore

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/internal/instcodec"
)

// FSM is the registry state machine. Raft calls Apply, ApplyBatch, Snapshot
// and Restore from its FSM goroutine, one at a time; readers call the query
// methods from any goroutine.
//
// Instances are stored encoded (storedInstance): query methods return
// messages decoded for the caller. Sessions and nodes are immutable once
// stored: a change stores a new copy. Query methods return the stored
// pointers, which callers must not modify.
type FSM struct {
	// decoded, when set, is called by ApplyBatch once it has decoded a
	// batch's entries, before it locks mu (tests hold it there).
	decoded func()
	// waiting, when set, is called when WaitRevision has to wait (the
	// store then looks for entries the FSM never sees more often).
	waiting func()

	mu       sync.RWMutex
	revision uint64
	// applied is revision, stored with it under mu once the state holds
	// it, for Revision: readers that only need the number do not wait
	// for mu, which an apply stuck behind a reader holds or waits for.
	applied  atomic.Uint64
	services map[string]map[string]storedInstance // service -> id -> instance
	sessions map[string]*pb.Session
	nodes    map[string]*pb.Node
	// checked counts the instances of each service that have a health
	// check, so that listing them skips the services without any.
	checked map[string]int
	// peaks is the most instances each service of at least shrinkFrom
	// has held since its map was made: a Go map keeps the room it grew
	// to, so one that has lost most of them is made again (remove).
	peaks map[string]int
	// shared holds the names stored instances share (shared.go).
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
	// hash is the apply hash of the commands applied (applyhash.go).
	hash applyHash

	events *eventLog
}

// NewFSM returns an empty state machine whose event ring keeps ringSize
// events for resuming watchers.
func NewFSM(ringSize int) *FSM { return newFSM(ringSize, 0) }

// newFSM returns an empty state machine whose event ring keeps at most
// ringSize events of at most ringBytes encoded bytes together (0: no
// bound on the bytes).
func newFSM(ringSize, ringBytes int) *FSM {
	f := &FSM{events: newEventLog(ringSize, ringBytes), requests: newRequestLog(DedupWindow, maxRequestIDs), cluster: newClusterState()}
	f.reset()
	f.hash.start(0, 0, true)
	return f
}

// reset empties the registry's state. RestoreWithin loads a snapshot
// into a state reset so and moves each of these into the replica.
func (f *FSM) reset() {
	f.services = make(map[string]map[string]storedInstance)
	f.sessions = make(map[string]*pb.Session)
	f.nodes = make(map[string]*pb.Node)
	f.checked = make(map[string]int)
	f.peaks = make(map[string]int)
	f.shared = newSharedValues()
	f.blobs.reset()
	f.quota.reset()
	f.health.reset()
	f.acl.reset()
}

// put stores inst encoded; the caller may keep inst (an event holds it)
// but must not change it afterwards.
func (f *FSM) put(inst *pb.Instance) (storedInstance, error) {
	inst.Service = f.shared.string(inst.Service)
	st, err := encodeInstance(f.shared, inst)
	if err != nil {
		return st, err
	}
	f.store(inst.Service, inst.Id, st)
	return st, nil
}

// store stores st as the instance id of service, keeping the counts and
// the check index current.
func (f *FSM) store(service, id string, st storedInstance) {
	byID := f.services[service]
	if byID == nil {
		byID = make(map[string]storedInstance)
		f.services[service] = byID
	}
	old := byID[id]
	f.quota.replace(old, st)
	f.health.replace(old, st)
	f.countChecked(service, old, st)
	byID[id] = st
	if n := len(byID); n >= shrinkFrom && n > f.peaks[service] {
		f.peaks[service] = n
	}
}

// shrinkFrom is the fewest instances a service's map must have held for
// remove to make it again, smaller, once an eighth of them are left: a
// service scaled from thousands of instances down to a few would
// otherwise keep the memory of thousands for good. Made again only past
// seven eighths removed, a map costs its removals O(1) each.
const shrinkFrom = 1024

// countChecked accounts for old (zero when new) becoming st (zero when
// removed) in the check index.
func (f *FSM) countChecked(service string, old, st storedInstance) {
	n := f.checked[service]
	if old.checked {
		n--
	}
	if st.checked {
		n++
	}
	if n > 0 {
		f.checked[service] = n
	} else {
		delete(f.checked, service)
	}
}

// Apply applies one committed log entry. It returns nil or an error that
// belongs to the proposer (a deterministic rejection such as ErrNotFound);
// the state stays as it was when it returns an error.
func (f *FSM) Apply(l *raft.Log) any {
	return f.ApplyBatch([]*raft.Log{l})[0]
}

// ApplyBatch applies consecutive committed entries under one lock, and
// publishes their events to watchers once. The entries are decoded before
// the lock is taken: readers wait only for the changes.
func (f *FSM) ApplyBatch(logs []*raft.Log) []any {
	out := make([]any, len(logs))
	cmds := make([]*pb.Command, len(logs))
	for i, l := range logs {
		if l.Type != raft.LogCommand {
			continue
		}
		cmd := &pb.Command{}
		if err := instcodec.DecodeCommand(l.Data, cmd); err != nil {
			out[i] = fmt.Errorf("%w: decode raft entry %d: %v", ErrInvalidArgument, l.Index, err)
			continue
		}
		cmds[i] = cmd
	}
	if f.decoded != nil {
		f.decoded()
	}
	var evs []*ringEvent
	f.mu.Lock()
	for i, l := range logs {
		if l.Index > f.revision {
			f.revision = l.Index
		}
		if l.Type == raft.LogCommand {
			f.hash.add(l.Index, l.Data)
		}
		cmd := cmds[i]
		if cmd == nil {
			continue
		}
		f.requests.advance(cmd.Time, cmd.ClockStep)
		if first, ok := f.requests.get(cmd.RequestId); ok {
			out[i] = first
			continue
		}
		var err error
		evs, err = f.apply(cmd, l.Data, l.Index, evs)
		if err != nil {
			out[i] = err
		}
		f.requests.put(cmd.RequestId, Duplicate{Revision: l.Index, Err: err})
	}
	rev := f.revision
	f.applied.Store(rev)
	f.events.append(evs, rev)
	f.mu.Unlock()
	return out
}

// apply changes the state for one command, decoded from data, and appends
// the events it caused. It validates before it changes anything.
func (f *FSM) apply(cmd *pb.Command, data []byte, rev uint64, evs []*ringEvent) ([]*ringEvent, error) {
	switch k := cmd.Kind.(type) {
	case *pb.Command_Register:
		enc := commandRegister(data)
		if err := f.checkQuota(cmd.Quota, k.Register, enc); err != nil {
			return evs, err
		}
		return f.applyRegister(k.Register, enc, cmd.Time, rev, evs)
	case *pb.Command_Deregister:
		ref := k.Deregister
		old := f.stored(ref.GetService(), ref.GetId())
		if !old.valid() {
			return evs, fmt.Errorf("%w: instance %s/%s", ErrNotFound, ref.GetService(), ref.GetId())
		}
		if !unchangedSince(ref, old) {
			return evs, fmt.Errorf("%w: instance %s/%s changed at revision %d, after revision %d the removal was judged on; left in place",
				ErrFailedPrecondition, ref.Service, ref.Id, encodedModRevision(old.enc), ref.ModRevision)
		}
		return f.remove(instanceRecord{ref.Service, ref.Id, old}, rev, evs), nil
	case *pb.Command_SetHealth:
		return f.applySetHealth(k.SetHealth, cmd.Quota, cmd.Time, rev, evs), nil
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
		return f.applyNodeRemove(k.NodeRemove, cmd.Time, rev, evs), nil
	case *pb.Command_BlobPending:
		return evs, f.applyBlobPending(k.BlobPending, cmd.Time)
	case *pb.Command_BlobRenew:
		return evs, f.applyBlobRenew(k.BlobRenew, cmd.Time)
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
	case *pb.Command_ApplyHashRestart:
		f.hash.restart(rev)
		return evs, nil
	case *pb.Command_AclBootstrap, *pb.Command_AclPolicySet, *pb.Command_AclPolicyDelete,
		*pb.Command_AclTokenSet, *pb.Command_AclTokenDelete:
		return evs, f.applyACL(cmd, rev)
	default:
		return evs, fmt.Errorf("%w: unknown raft command %T", ErrInvalidArgument, cmd.Kind)
	}
}

// applyRegister stores in, which it takes over: the command it belongs to
// was decoded from the entry for this apply alone (ApplyBatch), so it is
// stored without a copy. enc, when not nil, is in's encoding as the
// entry carries it, which the stored encoding is made from instead of
// encoding in again (stampedInstance).
func (f *FSM) applyRegister(in *pb.Instance, enc []byte, now int64, rev uint64, evs []*ringEvent) ([]*ringEvent, error) {
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
	if old := f.stored(in.Service, in.Id); old.valid() {
		create, _, since := encodedStamp(old.enc)
		inst.CreateRevision = create
		if old.health == inst.Health {
			inst.HealthSince = since
		}
	}
	var (
		st  storedInstance
		err error
	)
	if stamped, ok := stampedInstance(enc, inst); ok {
		inst.Service = f.shared.string(inst.Service)
		st = storedFrom(f.shared, inst, stamped)
		f.store(inst.Service, inst.Id, st)
	} else if st, err = f.put(inst); err != nil {
		return evs, err
	}
	return append(evs, newRingEvent(pb.Event_PUT, inst, st.enc, rev)), nil
}

// applySetHealth applies c under the limits q, nil when its leader
// stamped none.
func (f *FSM) applySetHealth(c *pb.SetHealth, q *pb.Quota, now int64, rev uint64, evs []*ringEvent) []*ringEvent {
	var targets []instanceRecord
	if c.Node != "" {
		// A whole agent changes health (it died, or came back): the node
		// and every instance it owns change in this one entry.
		if n := f.nodes[c.Node]; n != nil && n.Health != c.Health {
			n = proto.Clone(n).(*pb.Node)
			n.Health = c.Health
			f.nodes[c.Node] = n
		}
		targets = f.instancesWhere(func(i storedInstance) bool { return i.node == c.Node })
	} else {
		for _, ref := range c.Instances {
			if st := f.stored(ref.Service, ref.Id); st.valid() && unchangedSince(ref, st) {
				targets = append(targets, instanceRecord{ref.Service, ref.Id, st})
			}
		}
	}
	return f.setHealth(targets, c.Health, c.Output, q, now, rev, evs)
}

// unchangedSince reports whether the instance st is still the version
// ref's writer judged: ref names no version (mod_revision 0), or the one
// st is.
func unchangedSince(ref *pb.InstanceRef, st storedInstance) bool {
	return ref.ModRevision == 0 || encodedModRevision(st.enc) == ref.ModRevision
}

// setHealth gives the instances targets health and output, the output
// cut to what max_registry_bytes leaves room for when q bounds health
// outputs (outputThatFits), and appends a PUT event for each that changed.
func (f *FSM) setHealth(targets []instanceRecord, health pb.Health, output string, q *pb.Quota, now int64, rev uint64, evs []*ringEvent) []*ringEvent {
	for _, old := range targets {
		inst := old.stored.instance()
		was, wasOutput := inst.Health, inst.HealthOutput
		if inst.Health != health {
			inst.HealthSince = now
		}
		inst.Health = health
		inst.HealthOutput = output
		inst.ModRevision = rev
		if q.GetHealthOutputs() && q.GetMaxRegistryBytes() > 0 {
			inst.HealthOutput = f.outputThatFits(q, inst, old.stored)
		}
		if was == health && wasOutput == inst.HealthOutput {
			continue
		}
		st, err := f.put(inst)
		if err != nil {
			continue // it was stored encoded: encoding it again cannot fail
		}
		evs = append(evs, newRingEvent(pb.Event_PUT, inst, st.enc, rev))
	}
	return evs
}

func (f *FSM) applySessionDestroy(ids []string, rev uint64, evs []*ringEvent) []*ringEvent {
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
	for _, r := range f.instancesWhere(func(i storedInstance) bool { return gone[i.session] }) {
		evs = f.remove(r, rev, evs)
	}
	return evs
}

func (f *FSM) applyNodeRemove(c *pb.NodeRemove, now int64, rev uint64, evs []*ringEvent) []*ringEvent {
	name := c.Name
	delete(f.nodes, name)
	gone := make(map[string]bool)
	for id, s := range f.sessions {
		if s.Node == name {
			delete(f.sessions, id)
			gone[id] = true
		}
	}
	// The node's instances, and any instance bound to one of its sessions:
	// an instance never outlives its session. With keep_unbound, the
	// node's instances bound to no session stay, critical.
	var kept []instanceRecord
	for _, r := range f.instancesWhere(func(i storedInstance) bool { return i.node == name || gone[i.session] }) {
		if c.KeepUnbound && r.stored.session == "" {
			kept = append(kept, r)
			continue
		}
		evs = f.remove(r, rev, evs)
	}
	// The reap's output is the leader's own, short, and read back by its
	// prefix (KeptInstances): never cut.
	return f.setHealth(kept, pb.Health_CRITICAL, c.Output, nil, now, rev, evs)
}

// remove deletes the instance r and appends its DELETE event.
func (f *FSM) remove(r instanceRecord, rev uint64, evs []*ringEvent) []*ringEvent {
	byID := f.services[r.service]
	f.quota.replace(r.stored, storedInstance{})
	f.health.replace(r.stored, storedInstance{})
	f.countChecked(r.service, r.stored, storedInstance{})
	delete(byID, r.id)
	switch n, peak := len(byID), f.peaks[r.service]; {
	case n == 0:
		delete(f.services, r.service)
		delete(f.peaks, r.service)
	case peak >= shrinkFrom && n <= peak/8:
		smaller := make(map[string]storedInstance, n)
		for id, st := range byID {
			smaller[id] = st
		}
		f.services[r.service] = smaller
		if n >= shrinkFrom {
			f.peaks[r.service] = n
		} else {
			delete(f.peaks, r.service)
		}
	}
	return append(evs, newRingEvent(pb.Event_DELETE, r.stored.instance(), r.stored.enc, rev))
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

// stored returns the stored instance, or the zero storedInstance.
func (f *FSM) stored(service, id string) storedInstance {
	return f.services[service][id]
}

// instancesWhere returns matching instances sorted by service and id, so that
// events come out in the same order on every replica.
func (f *FSM) instancesWhere(match func(storedInstance) bool) []instanceRecord {
	var out []instanceRecord
	for service, byID := range f.services {
		for id, st := range byID {
			if match(st) {
				out = append(out, instanceRecord{service, id, st})
			}
		}
	}
	sortRecords(out)
	return out
}

// decodeAll decodes recs, in their order.
func decodeAll(recs []instanceRecord) []*pb.Instance {
	out := make([]*pb.Instance, len(recs))
	for i, r := range recs {
		out[i] = r.stored.instance()
	}
	return out
}

// Revision returns the index of the last applied entry. It does not wait
// for a batch being applied: the state holds at least that revision.
func (f *FSM) Revision() uint64 { return f.applied.Load() }

// Instances returns the instances of service sorted by id, and the revision
// they reflect. They are decoded for the caller, off the FSM's lock.
func (f *FSM) Instances(service string) ([]*pb.Instance, uint64) {
	encs, rev := f.EncodedInstances(service)
	out := make([]*pb.Instance, len(encs))
	for i, e := range encs {
		out[i] = storedInstance{enc: e.Encoding}.instance()
	}
	return out, rev
}

// EncodedInstance is a stored instance as a reader that only forwards it
// sees it: its protobuf encoding, shared with the state machine and never
// changed (read it, never write it), with the fields a reader picks
// instances by.
type EncodedInstance struct {
	ID       string
	Health   pb.Health
	Encoding []byte
}

// ModRevision reads the instance's mod_revision from its encoding.
func (e EncodedInstance) ModRevision() uint64 { return encodedModRevision(e.Encoding) }

// EncodedInstances returns the instances of service in id order, as
// Instances does, without decoding them, and the revision they are at.
func (f *FSM) EncodedInstances(service string) ([]EncodedInstance, uint64) {
	f.mu.RLock()
	out := make([]EncodedInstance, 0, len(f.services[service]))
	for id, st := range f.services[service] {
		out = append(out, EncodedInstance{ID: id, Health: st.health, Encoding: st.enc})
	}
	rev := f.revision
	f.mu.RUnlock()
	slices.SortFunc(out, func(a, b EncodedInstance) int { return strings.Compare(a.ID, b.ID) })
	return out, rev
}

// Instance returns one instance, decoded for the caller, or nil.
func (f *FSM) Instance(service, id string) *pb.Instance {
	f.mu.RLock()
	st := f.stored(service, id)
	f.mu.RUnlock()
	if !st.valid() {
		return nil
	}
	return st.instance()
}

// InstanceStamp returns what the state machine set on the instance id of
// service when it stored it (its create and mod revisions and health
// time), without decoding the instance; ok is false when there is none.
func (f *FSM) InstanceStamp(service, id string) (create, mod uint64, healthSince int64, ok bool) {
	f.mu.RLock()
	st := f.stored(service, id)
	f.mu.RUnlock()
	if !st.valid() {
		return 0, 0, 0, false
	}
	create, mod, healthSince = encodedStamp(st.enc)
	return create, mod, healthSince, true
}

// AllInstances returns every instance sorted by service and id.
func (f *FSM) AllInstances() ([]*pb.Instance, uint64) {
	f.mu.RLock()
	recs := f.instancesWhere(func(storedInstance) bool { return true })
	rev := f.revision
	f.mu.RUnlock()
	return decodeAll(recs), rev
}

// CheckedInstances returns the instances that have a health check (TTL or
// gRPC), in no particular order, with every field but their tags and
// metadata, which health checks do not read: an agent that starts
// checking a million instances decodes no million metadata maps. Equal
// checks are one message, which callers must not modify.
func (f *FSM) CheckedInstances() []*pb.Instance {
	f.mu.RLock()
	var recs []instanceRecord
	for service := range f.checked {
		for id, st := range f.services[service] {
			if st.checked {
				recs = append(recs, instanceRecord{service, id, st})
			}
		}
	}
	f.mu.RUnlock()
	out := make([]*pb.Instance, len(recs))
	var buf []byte
	checks := make(map[string]*pb.Check)
	for i, r := range recs {
		out[i], buf = r.stored.instanceWithout(buf, tagsField, metadataField)
		out[i].Check = sameCheck(checks, out[i].Check)
	}
	return out
}

// sameCheck returns the check of checks equal to c, adding c when there
// is none.
func sameCheck(checks map[string]*pb.Check, c *pb.Check) *pb.Check {
	key, err := proto.MarshalOptions{Deterministic: true}.Marshal(c)
	if err != nil {
		return c
	}
	if shared, ok := checks[string(key)]; ok {
		return shared
	}
	checks[string(key)] = c
	return c
}

// NodeOwnsAnything reports whether any session or instance belongs to the
// node called name.
func (f *FSM) NodeOwnsAnything(name string) bool {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.nodeHasSessions(name) {
		return true
	}
	for _, byID := range f.services {
		for _, st := range byID {
			if st.node == name {
				return true
			}
		}
	}
	return false
}

// ReapedOutputPrefix begins the health output the leader gives the
// instances it keeps when it reaps their agent (NodeRemove.keep_unbound):
// "removed with its agent NAME: ...".
const ReapedOutputPrefix = "removed with its agent"

// KeptInstances lists the instances of the node called name that its
// reap kept: bound to no session, critical, with the reap's output.
func (f *FSM) KeptInstances(name string) []*pb.InstanceRef {
	prefix := ReapedOutputPrefix + " " + name + ":"
	f.mu.RLock()
	defer f.mu.RUnlock()
	var out []*pb.InstanceRef
	for _, r := range f.instancesWhere(func(i storedInstance) bool { return i.node == name && i.session == "" }) {
		if inst := r.stored.instance(); inst.Health == pb.Health_CRITICAL && strings.HasPrefix(inst.HealthOutput, prefix) {
			out = append(out, &pb.InstanceRef{Service: r.service, Id: r.id})
		}
	}
	return out
}

// NodeHasSessions reports whether any session belongs to the node called
// name.
func (f *FSM) NodeHasSessions(name string) bool {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.nodeHasSessions(name)
}

// nodeHasSessions is NodeHasSessions; the caller holds f.mu.
func (f *FSM) nodeHasSessions(name string) bool {
	for _, s := range f.sessions {
		if s.Node == name {
			return true
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
		for _, st := range byID {
			if st.health == pb.Health_PASSING {
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
// copying the maps' pointers (and instances' encodings) is a consistent
// point-in-time copy.
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	s := &fsmSnapshot{revision: f.revision, hash: f.hash.sum, hashKnown: f.hash.known}
	// Persist sorts them, off the lock: sorting a million instances here
	// would hold every write back for a second.
	s.instances = make([]instanceRecord, 0, f.instanceCount())
	for service, byID := range f.services {
		for id, st := range byID {
			s.instances = append(s.instances, instanceRecord{service, id, st})
		}
	}
	for _, ss := range f.sessions {
		s.sessions = append(s.sessions, ss)
	}
	for _, n := range f.nodes {
		s.nodes = append(s.nodes, n)
	}
	s.requests, s.requestClock, s.requestLast = f.requests.remembered(), f.requests.clock, f.requests.last
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

var _ raft.BatchingFSM = (*FSM)(nil)
