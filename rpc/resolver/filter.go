package resolver

import (
	"slices"

	"github.com/zrpcio/zrpc/api/zrpcpb"
)

// Filter reports whether an instance may receive calls. It is called from the
// resolver's watch goroutine and must not block.
type Filter func(*zrpcpb.Instance) bool

// VersionFilter keeps instances whose version is one of versions.
func VersionFilter(versions ...string) Filter {
	versions = slices.Clone(versions)
	return func(in *zrpcpb.Instance) bool {
		return slices.Contains(versions, in.GetVersion())
	}
}

// TagFilter keeps instances that carry every one of tags.
func TagFilter(tags ...string) Filter {
	tags = slices.Clone(tags)
	return func(in *zrpcpb.Instance) bool {
		for _, t := range tags {
			if !slices.Contains(in.GetTags(), t) {
				return false
			}
		}
		return true
	}
}
