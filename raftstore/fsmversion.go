package raftstore

import (
	"time"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/internal/monotime"
)

// The state machine's versions, and the gate that proposes a command's
// newer semantics only once every Raft server applies them.

// FSMVersion is the newest command semantics this build's state machine
// applies. A command that replicas of an older build would apply
// differently, and so leave replicas diverged, is proposed only once
// every Raft server announces at least the version that brought it (the
// agents say it in their gossip meta; builds from before say nothing and
// count as 1):
//
//	1: the commands of builds that announce no version;
//	2: NodeRemove.keep_unbound (a reap keeps the instances without a
//	   session; version 1 replicas delete them);
//	3: Command.clock_step (the request clock moves by bounded steps;
//	   older replicas would forget request ids at other entries);
//	4: InstanceRef.mod_revision (a Deregister or SetHealth of a version
//	   that has changed since leaves the instance; older replicas would
//	   change it anyway);
//	5: Quota.registry_overheads (max_registry_bytes counts a fixed cost
//	   per instance and per service; older replicas count the encoded
//	   bytes alone, and would accept what newer ones refuse). Builds of
//	   version 5 also prove agent-to-agent calls bound to the agent
//	   called (node/grpcapi/agentproof.go), and accept the unbound proof
//	   of older builds only while a Raft server is of one: the version
//	   every agent announces serves that gate too;
//	6: Quota.health_outputs (max_registry_bytes bounds the health outputs
//	   a SetHealth stores, cutting one that does not fit; older replicas
//	   store every output whole);
//	7: Command.apply_hash_restart (every replica restarts its apply hash
//	   at the entry; older replicas refuse the command and keep theirs).
const FSMVersion = 7

// clockStepVersion is the state machine version that brought
// Command.clock_step.
const clockStepVersion = 3

// conditionalVersion is the state machine version that brought
// InstanceRef.mod_revision.
const conditionalVersion = 4

// healthOutputsVersion is the state machine version that brought
// Quota.health_outputs.
const healthOutputsVersion = 6

// ApplyHashRestartVersion is the state machine version that brought
// Command.apply_hash_restart: the leader proposes one only once every
// Raft server applies it.
const ApplyHashRestartVersion = 7

// ClusterAt reports whether every Raft server runs a build of state
// machine version v or later (Config.ClusterFSMVersion), asking at most
// once a second: it is asked for every write.
func (s *Store) ClusterAt(v int) bool {
	if s.cfg.ClusterFSMVersion == nil {
		return v <= 1
	}
	now := monotime.Now()
	if next := s.fsmVersionNext.Load(); now >= next && s.fsmVersionNext.CompareAndSwap(next, now+int64(time.Second)) {
		s.fsmVersion.Store(int64(s.cfg.ClusterFSMVersion()))
	}
	return s.fsmVersion.Load() >= int64(v)
}

// DropUnsupported takes out of cmd what not every Raft server would apply
// alike (Config.ClusterFSMVersion): the versions a Deregister or SetHealth
// is conditional on (InstanceRef.mod_revision), until every server applies
// state machine version 4; such a write is then unconditional, as older
// builds make it. And the bound on health outputs (Quota.health_outputs),
// until every server applies version 6: outputs are then stored whole,
// as older builds store them. Apply calls it; an agent that forwards a
// write calls it too, since the leader it forwards to may be of an older
// build, which would pass the condition on without knowing it.
func (s *Store) DropUnsupported(cmd *pb.Command) {
	if cmd.Quota != nil && !s.ClusterAt(healthOutputsVersion) {
		cmd.Quota.HealthOutputs = false
	}
	if s.ClusterAt(conditionalVersion) {
		return
	}
	switch k := cmd.Kind.(type) {
	case *pb.Command_Deregister:
		if k.Deregister != nil {
			k.Deregister.ModRevision = 0
		}
	case *pb.Command_SetHealth:
		for _, ref := range k.SetHealth.GetInstances() {
			if ref != nil {
				ref.ModRevision = 0
			}
		}
	}
}
