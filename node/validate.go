package node

import (
	"net"
	"regexp"
	"strconv"
	"time"

	"github.com/zrpcio/zrpc/api/apierr"
	pb "github.com/zrpcio/zrpc/api/zrpcpb"
)

// Limits on what one registration may carry. They keep a single request
// from bloating every replica and every watcher.
const (
	maxNameLen     = 128
	maxAddressLen  = 256
	maxTags        = 32
	maxTagLen      = 128
	maxMetadata    = 64
	maxMetaKeyLen  = 128
	maxMetaValLen  = 1024
	maxWeight      = 10000
	defaultWeight  = 100
	minTTL         = time.Second
	maxTTL         = 24 * time.Hour
	minInterval    = 100 * time.Millisecond
	maxInterval    = time.Hour
	defaultTimeout = 2 * time.Second
)

var (
	serviceRE = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9._-]*$`)
	metaKeyRE = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9._/-]*$`)
)

func validName(field, v string) error {
	if v == "" {
		return apierr.Invalid(field, "is required")
	}
	if len(v) > maxNameLen {
		return apierr.Invalid(field, "is %d bytes, the limit is %d", len(v), maxNameLen)
	}
	if !serviceRE.MatchString(v) {
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
		if len(k) > maxMetaKeyLen || !metaKeyRE.MatchString(k) {
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
