package raftstore

import (
	"fmt"
	"strings"

	"google.golang.org/protobuf/proto"

	"github.com/zrpcio/zrpc/api/apierr"
	pb "github.com/zrpcio/zrpc/api/zrpcpb"
)

// ErrQuotaExceeded: a registration would pass one of the limits carried by
// its entry (pb.Quota).
var ErrQuotaExceeded = apierr.ErrQuotaExceeded

// quotaCounts are what the registry's limits are checked against. put and
// remove keep them current, so they are the same on every replica and are
// rebuilt by Restore.
type quotaCounts struct {
	bySession map[string]int // instances per session
	bytes     int64          // encoded size of all instances
}

func (q *quotaCounts) reset() {
	q.bySession = make(map[string]int)
	q.bytes = 0
}

// replace accounts for old (zero when new) becoming inst (zero when removed).
// An instance's encoding is as long as its proto.Size.
func (q *quotaCounts) replace(old, inst storedInstance) {
	if old.valid() {
		q.bytes -= int64(len(old.enc))
		if old.session != "" {
			if q.bySession[old.session]--; q.bySession[old.session] <= 0 {
				delete(q.bySession, old.session)
			}
		}
	}
	if inst.valid() {
		q.bytes += int64(len(inst.enc))
		if inst.session != "" {
			q.bySession[inst.session]++
		}
	}
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
	if limit := q.MaxRegistryBytes; limit > 0 {
		grow := int64(len(enc))
		if enc == nil {
			grow = int64(proto.Size(in))
		}
		if old.valid() {
			grow -= int64(len(old.enc))
		}
		if grow > 0 && f.quota.bytes+grow > int64(limit) {
			return quotaErr("max_registry_bytes", "the registry holds %d bytes of instances, %d more would pass the limit of %d",
				f.quota.bytes, grow, limit)
		}
	}
	return nil
}

// quotaErr names the limit, and the agent flag that sets it.
func quotaErr(key, format string, args ...any) error {
	return fmt.Errorf("%w: %s (%s, set by --%s on the leader)",
		ErrQuotaExceeded, fmt.Sprintf(format, args...), key, strings.ReplaceAll(key, "_", "-"))
}

// RegistryBytes is the encoded size of all instances, as max_registry_bytes
// counts it.
func (f *FSM) RegistryBytes() int64 {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.quota.bytes
}

// Session returns the session with id, or nil.
func (f *FSM) Session(id string) *pb.Session {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.sessions[id]
}
