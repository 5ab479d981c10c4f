package gossip

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
)

// Resolver looks up the IP addresses of a host name; *net.Resolver
// satisfies it. Join asks it for network "ip", so both A and AAAA records
// count.
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// errNoOtherAddress: a DNS name resolved to nothing, or only to this agent.
// It is worth retrying: a headless Kubernetes Service lists its pods as
// they start.
var errNoOtherAddress = errors.New("resolves to no other agent yet")

// joinTarget is one address Join contacts: an IP and port, and the name
// given for it when it came from DNS.
type joinTarget struct {
	addr netip.AddrPort
	name string // the DNS name it was resolved from; "" for a literal IP
}

func (t joinTarget) String() string {
	if t.name == "" {
		return t.addr.String()
	}
	return t.addr.String() + " (" + t.name + ")"
}

// expandJoin turns addrs (host or host:port; host an IP or a DNS name) into
// the addresses to contact, in order and without repeats: a literal IP as
// it is, a DNS name as every address it resolves to, looked up now (so each
// call sees the name's current addresses). A missing port is defaultPort.
// It returns one error per address that could not be parsed or resolved,
// and whether any of addrs was a DNS name.
func expandJoin(ctx context.Context, r Resolver, addrs []string, defaultPort uint16) (targets []joinTarget, errs []error, named bool) {
	seen := make(map[netip.AddrPort]bool)
	add := func(t joinTarget) {
		if !seen[t.addr] {
			seen[t.addr] = true
			targets = append(targets, t)
		}
	}
	for _, a := range addrs {
		host, port, err := splitJoinAddr(a, defaultPort)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if ip, err := netip.ParseAddr(host); err == nil {
			add(joinTarget{addr: netip.AddrPortFrom(ip.Unmap(), port)})
			continue
		}
		named = true
		ips, err := r.LookupNetIP(ctx, "ip", host)
		if err != nil {
			errs = append(errs, fmt.Errorf("resolve %s: %w", host, err))
			continue
		}
		for _, ip := range ips {
			add(joinTarget{addr: netip.AddrPortFrom(ip.Unmap(), port), name: host})
		}
	}
	return targets, errs, named
}

// splitJoinAddr splits host[:port]; an IPv6 address with a port is
// written [addr]:port.
func splitJoinAddr(a string, defaultPort uint16) (string, uint16, error) {
	host, p, err := net.SplitHostPort(a)
	if err != nil {
		// No port: a host name, an IPv4 address or a bare IPv6 address.
		if ip, perr := netip.ParseAddr(a); perr == nil {
			return ip.String(), defaultPort, nil
		}
		if a == "" || !validHostName(a) {
			return "", 0, fmt.Errorf("join address %q is not host[:port] with an IP address or DNS name", a)
		}
		return a, defaultPort, nil
	}
	port, err := strconv.ParseUint(p, 10, 16)
	if err != nil || port == 0 {
		return "", 0, fmt.Errorf("join address %q: port %q must be 1-65535", a, p)
	}
	if _, perr := netip.ParseAddr(host); perr != nil && !validHostName(host) {
		return "", 0, fmt.Errorf("join address %q: %q is neither an IP address nor a DNS name", a, host)
	}
	return host, uint16(port), nil
}

// ValidJoinAddr reports whether a is an address Join accepts: host or
// host:port, host an IP address or a DNS name.
func ValidJoinAddr(a string) error {
	_, _, err := splitJoinAddr(a, 1)
	return err
}

// validHostName reports whether s is a DNS name: dot-separated labels of
// letters, digits, hyphens and underscores, none empty (a trailing dot
// aside) or longer than 63 bytes, at most 253 bytes in all.
func validHostName(s string) bool {
	if len(s) > 0 && s[len(s)-1] == '.' {
		s = s[:len(s)-1]
	}
	if s == "" || len(s) > 253 {
		return false
	}
	label := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '.':
			if label == 0 {
				return false
			}
			label = 0
			continue
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '-', c == '_':
		default:
			return false
		}
		label++
		if label > 63 {
			return false
		}
	}
	return label > 0
}
