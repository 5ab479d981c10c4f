package resolver

import (
	"sync"

	"google.golang.org/grpc/resolver"
)

// Schemes of the resolvers in this package.
const (
	// Scheme resolves a service through the zrpc registry.
	Scheme = "zrpc"
	// DirectScheme resolves a fixed, comma-separated list of host:port.
	DirectScheme = "direct"
)

var registerOnce sync.Once

// Register registers the "zrpc" resolver (with default options) and the
// "direct" resolver in grpc's global registry. It is safe to call more than
// once and from several goroutines; only the first call registers. Like
// resolver.Register, it should be called during initialization, before any
// ClientConn is created.
func Register() {
	registerOnce.Do(func() {
		resolver.Register(NewBuilder())
		resolver.Register(NewDirectBuilder())
	})
}
