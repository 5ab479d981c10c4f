package resolver

import (
	"fmt"
	"net"
	"strconv"
	"strings"

	"google.golang.org/grpc/resolver"
)

// directBuilder builds resolvers of scheme "direct".
type directBuilder struct{}

// NewDirectBuilder returns the resolver.Builder of scheme [DirectScheme]:
// "direct:///host1:port1,host2:port2" resolves to those addresses, once.
func NewDirectBuilder() resolver.Builder { return directBuilder{} }

func (directBuilder) Scheme() string { return DirectScheme }

// Build sends the target's addresses to cc, or reports the first malformed
// one through cc.ReportError.
func (directBuilder) Build(target resolver.Target, cc resolver.ClientConn, _ resolver.BuildOptions) (resolver.Resolver, error) {
	addrs, err := parseDirect(target.Endpoint())
	if err != nil {
		cc.ReportError(fmt.Errorf("direct resolver: target %q: %w", target.URL.String(), err))
		return directResolver{}, nil
	}
	if err := cc.UpdateState(resolver.State{Addresses: addrs}); err != nil {
		return nil, fmt.Errorf("direct resolver: target %q: %w", target.URL.String(), err)
	}
	return directResolver{}, nil
}

// parseDirect parses a comma-separated list of host:port.
func parseDirect(list string) ([]resolver.Address, error) {
	if list == "" {
		return nil, fmt.Errorf("no addresses: want direct:///host:port[,host:port...]")
	}
	var addrs []resolver.Address
	for _, a := range strings.Split(list, ",") {
		if err := validHostPort(a); err != nil {
			return nil, fmt.Errorf("address %q: %w", a, err)
		}
		addrs = append(addrs, resolver.Address{Addr: a})
	}
	return addrs, nil
}

// validHostPort checks that a is host:port with a non-empty host and a port
// in 1..65535.
func validHostPort(a string) error {
	host, port, err := net.SplitHostPort(a)
	if err != nil {
		return fmt.Errorf("want host:port: %w", err)
	}
	if host == "" {
		return fmt.Errorf("want host:port: missing host")
	}
	if p, err := strconv.ParseUint(port, 10, 16); err != nil || p == 0 {
		return fmt.Errorf("want host:port: port %q is not in 1..65535", port)
	}
	return nil
}

// directResolver has nothing to do after Build: its list never changes.
type directResolver struct{}

func (directResolver) ResolveNow(resolver.ResolveNowOptions) {}
func (directResolver) Close()                                {}
