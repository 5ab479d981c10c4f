package raftstore

import (
	"fmt"
	"strings"
	"unicode/utf8"

	"google.golang.org/protobuf/proto"

	"github.com/zrpcio/zrpc/api/apierr"
	pb "github.com/zrpcio/zrpc/api/zrpcpb"
)

// ErrQuotaExceeded: a registration would pass one of the limits carried by
// its entry (pb.Quota).
var ErrQuotaExceeded = apierr.ErrQuotaExceeded

// What an instance and a service cost the registry's memory beyond the
// instance's encoding, which max_registry_bytes counts with them: an
// instance is a slot in its service's map (its id, its encoding's slice
// header, node, session and health: 80 bytes, in a map between 7/16 and
// 7/8 full) and its id's own copy; a service is a map of its own (one
// group of eight slots, 700 bytes, before its ninth instance), a slot in
// the map of services and its name in the shared names. Measured by
// BenchmarkFSMHeapPerInstance (Go 1.26, amd64): with 100,000 instances,
// an instance held 150-240 bytes of heap beyond its encoding, depending
// on how full its service's map was, and one that was alone in its
// service 890. Counted so, a registry holds at most about as many bytes
// of live heap as max_registry_bytes counts, whatever its instances' size
// and number per service; counting the encodings alone, a registry of
// small instances, each in a service of its own, held 21 times as much.
const (
	instanceOverheadBytes = 200
	serviceOverheadBytes  = 700
)

// quotaCounts are what the registry's limits are checked against. put and
// remove keep them current, so they are the same on every replica and are
// rebuilt by Restore.
type quotaCounts struct {
	bySession map[string]int // instances per session
	bytes     int64          // encoded size of all instances
	instances int64          // instances
}

func (q *quotaCounts) reset() {
	q.bySession = make(map[string]int)
	q.bytes = 0
	q.instances = 0
}

// replace accounts for old (zero when new) becoming inst (zero when removed).
// An instance's encoding is as long as its proto.Size.
func (q *quotaCounts) replace(old, inst storedInstance) {
	if old.valid() {
		q.bytes -= int64(len(old.enc))
		q.instances--
		if old.session != "" {
			if q.bySession[old.session]--; q.bySession[old.session] <= 0 {
				delete(q.bySession, old.session)
			}
		}
	}
	if inst.valid() {
		q.bytes += int64(len(inst.enc))
		q.instances++
		if inst.session != "" {
			q.bySession[inst.session]++
		}
	}
}

// registryBytes is what max_registry_bytes counts of a registry of
// services services: its instances' encodings, and the overhead of each
// instance and each service.
func (q *quotaCounts) registryBytes(services int) int64 {
	return q.bytes + q.instances*instanceOverheadBytes + int64(services)*serviceOverheadBytes
}

// MetadataBytes is what max_instance_metadata_bytes limits: the bytes of an
// instance's version, tags, and metadata keys and values.
func MetadataBytes(in *pb.Instance) int {
	n := len(in.Version)
	for _, t := range in.Tags {
		n += len(t)
	}
	for k, v := range in.Metadata {
		n += len(k) + len(v)
	}
	return n
}

// checkQuota refuses a registration that would pass a limit of q (nil: no
// limits). Updating an instance in place never counts as a new one. enc,
// when not nil, is the encoding in was decoded from (its entry's), whose
// length is in's proto.Size: in is not measured again.
func (f *FSM) checkQuota(q *pb.Quota, in *pb.Instance, enc []byte) error {
	if q == nil || in == nil {
		return nil
	}
	old := f.stored(in.Service, in.Id)
	if limit := q.MaxInstanceMetadataBytes; limit > 0 {
		if n := MetadataBytes(in); n > int(limit) {
			return quotaErr("max_instance_metadata_bytes", "instance %s/%s carries %d bytes of version, tags and metadata, the limit is %d",
				in.Service, in.Id, n, limit)
		}
	}
	if limit := q.MaxInstancesPerService; limit > 0 && !old.valid() {
		if n := len(f.services[in.Service]); n >= int(limit) {
			return quotaErr("max_instances_per_service", "service %s has %d instances, the limit is %d", in.Service, n, limit)
		}
	}
	if limit := q.MaxInstancesPerSession; limit > 0 && in.Session != "" && (!old.valid() || old.session != in.Session) {
		if n := f.quota.bySession[in.Session]; n >= int(limit) {
			return quotaErr("max_instances_per_session", "session %s has %d instances, the limit is %d", in.Session, n, limit)
		}
	}
	if limit := q.MaxRegistryBytes; limit > 0 && !q.RegistryOverheads {
		// As builds before state machine version 5 count, while one of
		// them may be applying the same entry.
		grow := int64(len(enc))
		if enc == nil {
			grow = int64(proto.Size(in))
		}
		if old.valid() {
			grow -= int64(len(old.enc))
		}
		if grow > 0 && f.quota.bytes+grow > int64(limit) {
			return quotaErr("max_registry_bytes", "the registry holds %d bytes of instances, %d more would pass the limit of %d; deregister instances no longer used, or raise the limit",
				f.quota.bytes, grow, limit)
		}
	} else if limit > 0 {
		if grow := f.registryGrowth(in, enc, old); grow > 0 {
			if used := f.quota.registryBytes(len(f.services)); used+grow > int64(limit) {
				return quotaErr("max_registry_bytes", "registering %s/%s would add %d bytes to the registry's %d "+
					"(its instances' %d encoded bytes, and %d bytes per instance and %d per service for its indexes: %d instances, %d services), "+
					"past the limit of %d; deregister instances no longer used, or raise the limit",
					in.Service, in.Id, grow, used, f.quota.bytes, instanceOverheadBytes, serviceOverheadBytes,
					f.quota.instances, len(f.services), limit)
			}
		}
	}
	return nil
}

// registryGrowth is how many bytes max_registry_bytes counts more once in
// replaces old (zero when in is new), less when it shrinks the registry.
// enc, when not nil, is in's encoding (checkQuota), which lacks the fields
// the state machine then stamps on it: a new instance counts the most
// those can take, an update is compared with old without them (old's are
// replaced by as many bytes, give or take a byte of a revision grown
// longer), so updates in place cannot grow an instance past the limit a
// few bytes at a time.
func (f *FSM) registryGrowth(in *pb.Instance, enc []byte, old storedInstance) int64 {
	grow := int64(len(enc))
	if enc == nil {
		grow = int64(proto.Size(in))
	}
	if old.valid() {
		return grow - int64(len(old.enc)-stampBytes(old.enc))
	}
	grow += int64(maxStampBytes) + instanceOverheadBytes
	if len(f.services[in.Service]) == 0 {
		grow += serviceOverheadBytes
	}
	return grow
}

// CutOutputMark ends a health output that max_registry_bytes left no room
// for whole (Quota.health_outputs): the output stored is its beginning
// and this mark. node/health knows it (RegistryCutMark), so that a check
// does not write again and again an output the registry keeps cutting.
const CutOutputMark = " [cut: max_registry_bytes]"

// outputThatFits returns inst's health output, which a SetHealth gives it
// in place of old's, or, when the registry would grow past
// max_registry_bytes with it, its beginning (at a character boundary) and
// CutOutputMark, as much as keeps the registry within the limit.
//
// A health output is cut, never refused: the health beside it is what
// clients route by, and a registry that is full (more often than not
// because of others' instances) must still record that an instance
// failed. The output is only its explanation, and the mark says where
// the rest went. An instance keeps room for as large an encoding as it
// had, and for an output as long as the mark: a cut output is never
// longer than the whole one, and a full registry grows by at most the
// mark's bytes per instance, once, not by every output's (and, as with
// any change, by a byte of a revision or a time grown longer).
func (f *FSM) outputThatFits(q *pb.Quota, inst *pb.Instance, old storedInstance) string {
	output := inst.HealthOutput
	size := int64(proto.Size(inst))
	used := f.quota.bytes
	if q.RegistryOverheads {
		used = f.quota.registryBytes(len(f.services))
	}
	room := max(int64(len(old.enc)), int64(q.MaxRegistryBytes)-(used-int64(len(old.enc))))
	if size <= room || len(output) <= len(CutOutputMark) {
		return output
	}
	// The output's encoding shrinks by at least the bytes cut from it.
	keep := int64(len(output)) - (size - room) - int64(len(CutOutputMark))
	if keep <= 0 {
		return CutOutputMark
	}
	for keep > 0 && !utf8.RuneStart(output[keep]) {
		keep--
	}
	return output[:keep] + CutOutputMark
}

// quotaErr names the limit, and the agent flag that sets it.
func quotaErr(key, format string, args ...any) error {
	return fmt.Errorf("%w: %s (%s, set by --%s on the leader)",
		ErrQuotaExceeded, fmt.Sprintf(format, args...), key, strings.ReplaceAll(key, "_", "-"))
}

// RegistryBytes is the size of the registry as max_registry_bytes counts
// it: the encoded size of all instances, and a fixed overhead for each
// instance and each service.
func (f *FSM) RegistryBytes() int64 {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.quota.registryBytes(len(f.services))
}

// Session returns the session with id, or nil.
func (f *FSM) Session(id string) *pb.Session {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.sessions[id]
}
