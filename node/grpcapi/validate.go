package grpcapi

import (
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/zrpcio/zrpc/api/apierr"
	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/gossip"
	"github.com/zrpcio/zrpc/node/health"
	"github.com/zrpcio/zrpc/storage"
)

// Limits on what one registration may carry. They keep a single request
// from bloating every replica and every watcher.
const (
	maxNameLen    = 128
	maxAddressLen = 256
	maxTags       = 32
	maxTagLen     = 128
	maxMetadata   = 64
	maxMetaKeyLen = 128
	maxMetaValLen = 1024
	maxWeight     = 10000
	defaultWeight = 100
	minTTL        = time.Second
	maxTTL        = 24 * time.Hour
	minInterval   = 100 * time.Millisecond
	maxInterval   = time.Hour
)

// Names (services, ids, zones) are a letter or digit followed by
// letters, digits, '.', '_' and '-'; metadata keys may also hold '/'.
// Checked byte by byte, not with a regexp: every registration checks
// several.
const (
	namePunct    = "._-"
	metaKeyPunct = "._/-"
)

// isName reports whether v is an ASCII letter or digit followed by ASCII
// letters, digits and bytes of punct.
func isName(v, punct string) bool {
	if v == "" || !isAlnum(v[0]) {
		return false
	}
	for i := 1; i < len(v); i++ {
		if c := v[i]; !isAlnum(c) && strings.IndexByte(punct, c) < 0 {
			return false
		}
	}
	return true
}

func isAlnum(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
}

// ValidServiceName checks a service name as every RPC that takes one
// does: an InvalidArgument error naming field "service" and saying what
// a name may hold.
func ValidServiceName(name string) error { return validName("service", name) }

func validName(field, v string) error {
	if v == "" {
		return apierr.Invalid(field, "is required")
	}
	if len(v) > maxNameLen {
		return apierr.Invalid(field, "is %d bytes, the limit is %d", len(v), maxNameLen)
	}
	if !isName(v, namePunct) {
		return apierr.Invalid(field, "%q may contain only letters, digits, '.', '_' and '-', and must start with a letter or digit", v)
	}
	return nil
}

func validHostPort(field, v string) error {
	if len(v) > maxAddressLen {
		return apierr.Invalid(field, "is %d bytes, the limit is %d", len(v), maxAddressLen)
	}
	host, port, err := net.SplitHostPort(v)
	if err != nil || host == "" {
		return apierr.Invalid(field, "%q is not host:port", v)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		return apierr.Invalid(field, "%q has no valid port (1-65535)", v)
	}
	return nil
}

// validateInstance checks a registration and fills defaults (weight). It
// returns InvalidArgument naming the first bad field.
func validateInstance(in *pb.Instance) error {
	if in == nil {
		return apierr.Invalid("instance", "is required")
	}
	if err := validName("instance.service", in.Service); err != nil {
		return err
	}
	if err := validName("instance.id", in.Id); err != nil {
		return err
	}
	if err := validHostPort("instance.address", in.Address); err != nil {
		return err
	}
	if in.Weight == 0 {
		in.Weight = defaultWeight
	}
	if in.Weight > maxWeight {
		return apierr.Invalid("instance.weight", "%d exceeds the maximum %d", in.Weight, maxWeight)
	}
	if in.Zone != "" {
		if err := validName("instance.zone", in.Zone); err != nil {
			return err
		}
	}
	if len(in.Version) > maxNameLen {
		return apierr.Invalid("instance.version", "is %d bytes, the limit is %d", len(in.Version), maxNameLen)
	}
	if len(in.Tags) > maxTags {
		return apierr.Invalid("instance.tags", "has %d tags, the limit is %d", len(in.Tags), maxTags)
	}
	for i, t := range in.Tags {
		if t == "" || len(t) > maxTagLen {
			return apierr.Invalid("instance.tags", "tag %d must be 1-%d bytes", i, maxTagLen)
		}
	}
	if len(in.Metadata) > maxMetadata {
		return apierr.Invalid("instance.metadata", "has %d keys, the limit is %d", len(in.Metadata), maxMetadata)
	}
	for k, v := range in.Metadata {
		if len(k) > maxMetaKeyLen || !isName(k, metaKeyPunct) {
			return apierr.Invalid("instance.metadata", "key %q must be 1-%d letters, digits, '.', '_', '/' or '-'", k, maxMetaKeyLen)
		}
		if len(v) > maxMetaValLen {
			return apierr.Invalid("instance.metadata", "value of %q is %d bytes, the limit is %d", k, len(v), maxMetaValLen)
		}
	}
	switch in.Health {
	case pb.Health_HEALTH_UNSPECIFIED, pb.Health_PASSING, pb.Health_WARNING, pb.Health_CRITICAL:
	default:
		return apierr.Invalid("instance.health", "unknown value %d", in.Health)
	}
	return validateCheck(in)
}

func validateCheck(in *pb.Instance) error {
	c := in.Check
	if c == nil {
		return nil
	}
	// A malformed Duration (nanos out of range, ...) would be stored and
	// then break every JSON encoding of the instance.
	if err := checkTimes(c.ProtoReflect(), "instance.check"); err != nil {
		return err
	}
	hasTTL := c.Ttl != nil
	if hasTTL && c.Grpc {
		return apierr.Invalid("instance.check", "set either ttl or grpc, not both")
	}
	if hasTTL {
		if err := durationIn("instance.check.ttl", c.Ttl.AsDuration(), minTTL, maxTTL); err != nil {
			return err
		}
	}
	if c.Grpc {
		if c.Interval == nil {
			return apierr.Invalid("instance.check.interval", "is required for a grpc check")
		}
		if err := durationIn("instance.check.interval", c.Interval.AsDuration(), minInterval, maxInterval); err != nil {
			return err
		}
		if c.Timeout != nil {
			if err := durationIn("instance.check.timeout", c.Timeout.AsDuration(), 10*time.Millisecond, c.Interval.AsDuration()); err != nil {
				return err
			}
		}
		if c.GrpcAddress != "" {
			if err := validHostPort("instance.check.grpc_address", c.GrpcAddress); err != nil {
				return err
			}
		}
		if len(c.GrpcService) > maxNameLen {
			return apierr.Invalid("instance.check.grpc_service", "is longer than %d bytes", maxNameLen)
		}
	}
	if c.DeregisterCriticalAfter != nil {
		if err := durationIn("instance.check.deregister_critical_after", c.DeregisterCriticalAfter.AsDuration(), time.Second, 30*24*time.Hour); err != nil {
			return err
		}
	}
	return nil
}

func durationIn(field string, d, lo, hi time.Duration) error {
	if d < lo || d > hi {
		return apierr.Invalid(field, "%s is outside %s..%s", d, lo, hi)
	}
	return nil
}

// Membership is what the leader knows of the cluster's agents and
// sessions, to check a command a peer forwarded.
type Membership interface {
	// Self is the leader's own name.
	Self() string
	Node(name string) *pb.Node
	Session(id string) *pb.Session
	// GossipStatus is the agent's state in this agent's gossip view, the
	// last it knew for a member gossip no longer lists ("unknown" when
	// gossip has never seen it).
	GossipStatus(name string) string
}

// Limits on forwarded commands beyond what the public API checks.
const (
	maxRequestIDLen = 256
	maxHealthOutput = health.MaxOutput
)

// validateForwarded checks a command a peer forwarded through
// Internal.Apply before the leader proposes it. A peer may forward only
// what agents propose through the leader (registrations, health results,
// sessions, blob metadata, removal of a failed agent), each checked as the
// public API checks it; what the leader writes on its own from gossip
// (node records, a whole agent's health) is refused. It returns
// InvalidArgument or FailedPrecondition naming the problem.
func validateForwarded(cmd *pb.Command, m Membership) error {
	if len(cmd.RequestId) > maxRequestIDLen {
		return apierr.Invalid("command.request_id", "is %d bytes, the limit is %d", len(cmd.RequestId), maxRequestIDLen)
	}
	switch k := cmd.Kind.(type) {
	case *pb.Command_Register:
		return validateForwardedRegister(m, k.Register)
	case *pb.Command_Deregister:
		if err := validName("deregister.service", k.Deregister.GetService()); err != nil {
			return err
		}
		return validName("deregister.id", k.Deregister.GetId())
	case *pb.Command_SetHealth:
		return validateForwardedHealth(k.SetHealth)
	case *pb.Command_SessionCreate:
		return validateForwardedSession(m, k.SessionCreate.GetSession())
	case *pb.Command_SessionDestroy:
		return validIDs("session_destroy.ids", k.SessionDestroy.Ids, validID)
	case *pb.Command_NodeRemove:
		if n := len(k.NodeRemove.GetOutput()); n > maxHealthOutput {
			return apierr.Invalid("node_remove.output", "is %d bytes, the limit is %d", n, maxHealthOutput)
		}
		return validateForwardedNodeRemove(m, k.NodeRemove.GetName())
	case *pb.Command_BlobPending, *pb.Command_BlobCommit, *pb.Command_BlobAbort, *pb.Command_BlobDelete, *pb.Command_BlobShards,
		*pb.Command_BlobRenew:
		return validateForwardedBlob(m, cmd)
	case *pb.Command_AclBootstrap, *pb.Command_AclPolicySet, *pb.Command_AclPolicyDelete, *pb.Command_AclTokenSet, *pb.Command_AclTokenDelete:
		return validateForwardedACL(cmd)
	case *pb.Command_NodeUpsert:
		return apierr.Invalid("command.node_upsert", "agent records are written by the leader from gossip; a peer may not forward them")
	case nil:
		return apierr.Invalid("command", "is empty")
	default:
		return apierr.Invalid("command", "a peer may not forward %T", k)
	}
}

// knownNode checks that name is an agent in the registry.
func knownNode(m Membership, field, name string) error {
	if m.Node(name) != nil {
		return nil
	}
	switch m.GossipStatus(name) {
	case gossip.StatusAlive:
		// A running agent the registry does not list yet: it was reaped
		// (a long partition) or just joined, and the leader's reconcile
		// adds it back within moments. Unavailable, so the write is retried.
		return status.Errorf(codes.Unavailable, "%s: agent %s is rejoining the cluster (gossip sees it, the registry does not list it yet); retry", field, name)
	case gossip.StatusSuspect, gossip.StatusFailed:
		// Reaped after a long partition, and this agent's gossip has not
		// yet heard that it is back, though a write naming it (usually
		// forwarded by that agent itself) says it may be. Whether it is
		// back is known within a gossip round or two: Unavailable, so the
		// write is retried rather than refused for good.
		return status.Errorf(codes.Unavailable, "%s: agent %s is not reachable (gossip marks it failed) and the registry does not list it; retry when it is back", field, name)
	}
	return apierr.Invalid(field, "%q is not an agent of this cluster", name)
}

// validateForwardedSession checks a new session: its id, its owner's
// length, its agent, and that it does not take over another session.
func validateForwardedSession(m Membership, s *pb.Session) error {
	if err := validID("session_create.session.id", s.GetId()); err != nil {
		return err
	}
	if len(s.Owner) > maxMetaValLen {
		return apierr.Invalid("session_create.session.owner", "is %d bytes, the limit is %d", len(s.Owner), maxMetaValLen)
	}
	if err := knownNode(m, "session_create.session.node", s.Node); err != nil {
		return err
	}
	if old := m.Session(s.Id); old != nil && !proto.Equal(old, s) {
		return apierr.Invalid("session_create.session.id", "session %s already exists on agent %s", s.Id, old.Node)
	}
	return nil
}

// validateForwardedBlob checks the blob metadata commands a put, a delete
// or repair forwards: blob names and ids, and the agents they name.
func validateForwardedBlob(m Membership, cmd *pb.Command) error {
	switch k := cmd.Kind.(type) {
	case *pb.Command_BlobPending:
		p := k.BlobPending
		if err := validBlobID("blob_pending.id", p.Id); err != nil {
			return err
		}
		if err := validBlobName("blob_pending.name", p.Name); err != nil {
			return err
		}
		return knownNode(m, "blob_pending.node", p.Node)
	case *pb.Command_BlobCommit:
		b := k.BlobCommit.GetBlob()
		if b == nil {
			return apierr.Invalid("blob_commit.blob", "is required")
		}
		if err := validBlobID("blob_commit.blob.id", b.Id); err != nil {
			return err
		}
		// Its holders are not checked: one may have been reaped during a
		// long put, and repair rebuilds what it held.
		return validBlobName("blob_commit.blob.name", b.Name)
	case *pb.Command_BlobAbort:
		return validIDs("blob_abort.ids", k.BlobAbort.Ids, validBlobID)
	case *pb.Command_BlobRenew:
		if err := validBlobID("blob_renew.id", k.BlobRenew.Id); err != nil {
			return err
		}
		return validBlobName("blob_renew.name", k.BlobRenew.Name)
	case *pb.Command_BlobDelete:
		return validBlobName("blob_delete.name", k.BlobDelete.GetName())
	case *pb.Command_BlobShards:
		if err := validBlobID("blob_shards.id", k.BlobShards.Id); err != nil {
			return err
		}
		for _, s := range k.BlobShards.Shards {
			if err := knownNode(m, "blob_shards.shards.node", s.Node); err != nil {
				return err
			}
		}
	}
	return nil
}

// validateForwardedRegister checks an instance as Register does, and that
// its owner and session exist and belong together. Register sets an
// instance's health output itself; a forwarded one carries it as the
// agent set it, bounded as a forwarded health result is.
func validateForwardedRegister(m Membership, in *pb.Instance) error {
	if err := validateInstance(in); err != nil {
		return err
	}
	if len(in.HealthOutput) > maxHealthOutput {
		return apierr.Invalid("instance.health_output", "is %d bytes, the limit is %d", len(in.HealthOutput), maxHealthOutput)
	}
	if err := knownNode(m, "instance.node", in.Node); err != nil {
		return err
	}
	if in.Session == "" {
		return nil
	}
	s := m.Session(in.Session)
	if s == nil {
		return fmt.Errorf("%w: instance.session %s does not exist (expired or closed)", apierr.ErrSessionRequired, in.Session)
	}
	if s.Node != in.Node {
		return apierr.Invalid("instance.session", "session %s belongs to agent %s, not to the instance's agent %s", in.Session, s.Node, in.Node)
	}
	return nil
}

// validateForwardedHealth checks a health result of single instances; a
// whole agent's health is the leader's to change, from gossip.
func validateForwardedHealth(c *pb.SetHealth) error {
	if c.Node != "" {
		return apierr.Invalid("set_health.node", "an agent's health is set by the leader from gossip; a peer may not forward it")
	}
	if len(c.Instances) == 0 {
		return apierr.Invalid("set_health.instances", "is empty")
	}
	for _, ref := range c.Instances {
		if err := validName("set_health.instances.service", ref.GetService()); err != nil {
			return err
		}
		if err := validName("set_health.instances.id", ref.GetId()); err != nil {
			return err
		}
	}
	switch c.Health {
	case pb.Health_PASSING, pb.Health_WARNING, pb.Health_CRITICAL:
	default:
		return apierr.Invalid("set_health.health", "must be passing, warning or critical, got %d", c.Health)
	}
	if len(c.Output) > maxHealthOutput {
		return apierr.Invalid("set_health.output", "is %d bytes, the limit is %d", len(c.Output), maxHealthOutput)
	}
	return nil
}

// validateForwardedNodeRemove allows removing an agent only when gossip
// reports it failed or left, and never the leader itself: followers find
// the leader through its node record.
func validateForwardedNodeRemove(m Membership, name string) error {
	if name == "" {
		return apierr.Invalid("node_remove.name", "is required")
	}
	if name == m.Self() {
		return fmt.Errorf("%w: node_remove.name: %s is the leader; it cannot be removed while it leads", apierr.ErrFailedPrecondition, name)
	}
	if st := m.GossipStatus(name); st != gossip.StatusFailed && st != gossip.StatusLeft {
		return fmt.Errorf("%w: node_remove.name: agent %s is %s to gossip; only a failed or departed agent may be removed",
			apierr.ErrFailedPrecondition, name, st)
	}
	return nil
}

// validID checks an agent-generated id (session ids are hex).
func validID(field, id string) error {
	if id == "" || len(id) > maxNameLen || !isName(id, namePunct) {
		return apierr.Invalid(field, "%q is not an id (1-%d letters, digits, '.', '_' or '-')", id, maxNameLen)
	}
	return nil
}

func validBlobID(field, id string) error {
	if !storage.ValidBlobID(id) {
		return apierr.Invalid(field, "%q is not a blob id (16-64 lowercase hex digits)", id)
	}
	return nil
}

func validBlobName(field, name string) error {
	if err := storage.ValidateName(name); err != nil {
		return fmt.Errorf("%s: %w", field, err)
	}
	return nil
}

// validIDs checks a non-empty list of ids with valid.
func validIDs(field string, ids []string, valid func(field, id string) error) error {
	if len(ids) == 0 {
		return apierr.Invalid(field, "is empty")
	}
	for _, id := range ids {
		if err := valid(field, id); err != nil {
			return err
		}
	}
	return nil
}

// checkTimes reports the first google.protobuf.Duration or Timestamp in m
// that is not well-formed (CheckValid: nanos out of range, sign mismatch,
// out of the representable range), naming its field path under path. The
// agent's interceptors run it on every request, so it skips fields whose
// type holds no Duration or Timestamp (a blob commit's block table) and
// builds the field path only for the bad one.
func checkTimes(m protoreflect.Message, path string) error {
	rel, err := badTime(m)
	if err == nil {
		return nil
	}
	switch {
	case path == "":
		path = rel
	case rel != "" && rel[0] != '[':
		path += "." + rel
	default:
		path += rel
	}
	return apierr.Invalid(path, "%v", err)
}

// badTime finds the first malformed Duration or Timestamp in m and returns
// its field path relative to m.
func badTime(m protoreflect.Message) (string, error) {
	if isTime(m.Descriptor()) {
		return "", timeValid(m)
	}
	for _, fd := range timeFields(m.Descriptor()) {
		if !m.Has(fd) {
			continue
		}
		v := m.Get(fd)
		var (
			sub string
			err error
		)
		switch {
		case fd.IsList():
			l := v.List()
			for i := 0; i < l.Len() && err == nil; i++ {
				if sub, err = badTime(l.Get(i).Message()); err != nil {
					sub = fmt.Sprintf("[%d]", i) + dotted(sub)
				}
			}
		case fd.IsMap():
			sub, err = badTimeInMap(v.Map())
		default:
			sub, err = badTime(v.Message())
			sub = dotted(sub)
		}
		if err != nil {
			return string(fd.Name()) + sub, err
		}
	}
	return "", nil
}

// badTimeInMap is badTime for the message values of a map (on its own, so
// that the variables its closure shares do not go to the heap for every
// message badTime looks at).
func badTimeInMap(mm protoreflect.Map) (sub string, err error) {
	mm.Range(func(k protoreflect.MapKey, mv protoreflect.Value) bool {
		if sub, err = badTime(mv.Message()); err != nil {
			sub = fmt.Sprintf("[%v]", k.Interface()) + dotted(sub)
		}
		return err == nil
	})
	return sub, err
}

// dotted joins a relative field path below a field: ".x", "[i]" or "".
func dotted(sub string) string {
	if sub == "" || sub[0] == '[' {
		return sub
	}
	return "." + sub
}

func isTime(d protoreflect.MessageDescriptor) bool {
	n := d.FullName()
	return n == "google.protobuf.Duration" || n == "google.protobuf.Timestamp"
}

// holdsTimes reports whether a field's values can contain a Duration or
// Timestamp, at any depth.
func holdsTimes(fd protoreflect.FieldDescriptor) bool {
	md := fd.Message()
	if fd.IsMap() {
		md = fd.MapValue().Message()
	}
	return md != nil && typeHoldsTimes(md)
}

// timeFields returns the fields of a message type whose values can
// contain a Duration or Timestamp, so that a request is checked without
// visiting its other fields (cached by type).
func timeFields(md protoreflect.MessageDescriptor) []protoreflect.FieldDescriptor {
	if v, ok := timeFieldsOf.Load(md); ok {
		return v.([]protoreflect.FieldDescriptor)
	}
	var holding []protoreflect.FieldDescriptor
	fields := md.Fields()
	for i := range fields.Len() {
		if fd := fields.Get(i); holdsTimes(fd) {
			holding = append(holding, fd)
		}
	}
	timeFieldsOf.Store(md, holding)
	return holding
}

// timeFieldsOf caches timeFields by message descriptor.
var timeFieldsOf sync.Map // protoreflect.MessageDescriptor -> []protoreflect.FieldDescriptor

// timeTypes caches typeHoldsTimes by message type.
var timeTypes sync.Map // protoreflect.FullName -> bool

func typeHoldsTimes(md protoreflect.MessageDescriptor) bool {
	if v, ok := timeTypes.Load(md.FullName()); ok {
		return v.(bool)
	}
	holds := searchTimes(md, map[protoreflect.FullName]bool{})
	timeTypes.Store(md.FullName(), holds)
	return holds
}

func searchTimes(md protoreflect.MessageDescriptor, seen map[protoreflect.FullName]bool) bool {
	if isTime(md) {
		return true
	}
	if seen[md.FullName()] {
		return false // a recursive type: its other fields decide
	}
	seen[md.FullName()] = true
	fields := md.Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		sub := fd.Message()
		if fd.IsMap() {
			sub = fd.MapValue().Message()
		}
		if sub != nil && searchTimes(sub, seen) {
			return true
		}
	}
	return false
}

// timeValid checks one Duration or Timestamp message.
func timeValid(m protoreflect.Message) error {
	fields := m.Descriptor().Fields()
	secs, nanos := m.Get(fields.ByName("seconds")).Int(), int32(m.Get(fields.ByName("nanos")).Int())
	duration := m.Descriptor().FullName() == "google.protobuf.Duration"
	// What requests carry (a TTL, an interval, a time since 1970 and
	// before 10000) is well-formed without asking CheckValid, which would
	// cost a message on the heap; anything else gets its verdict and words.
	maxSecs := int64(maxTimestampSeconds)
	if duration {
		maxSecs = maxDurationSeconds
	}
	if 0 <= secs && secs <= maxSecs && 0 <= nanos && nanos < 1e9 {
		return nil
	}
	if duration {
		return (&durationpb.Duration{Seconds: secs, Nanos: nanos}).CheckValid()
	}
	return (&timestamppb.Timestamp{Seconds: secs, Nanos: nanos}).CheckValid()
}

// The largest seconds of a well-formed Duration (10,000 years) and
// Timestamp (9999-12-31T23:59:59Z), as durationpb and timestamppb check
// them.
const (
	maxDurationSeconds  = 315576000000
	maxTimestampSeconds = 253402300799
)
