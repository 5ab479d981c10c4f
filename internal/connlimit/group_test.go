package connlimit

import (
	"net"
	"testing"
)

// TestGroupNamesAnIPv6AddressByItsSlash64: the host a refusal is logged
// under.
func TestGroupNamesAnIPv6AddressByItsSlash64(t *testing.T) {
	for _, tc := range []struct {
		addr net.Addr
		want string
	}{
		{&net.TCPAddr{IP: net.ParseIP("10.0.0.1"), Port: 5}, "10.0.0.1"},
		{&net.TCPAddr{IP: net.ParseIP("::ffff:10.0.0.1"), Port: 5}, "10.0.0.1"},
		{&net.TCPAddr{IP: net.ParseIP("2001:db8:1:2:aaaa::1"), Port: 5}, "2001:db8:1:2::/64"},
		{&net.TCPAddr{IP: net.ParseIP("2001:db8:1:2:ffff:ffff:ffff:ffff"), Port: 5}, "2001:db8:1:2::/64"},
		{&net.TCPAddr{IP: net.ParseIP("fe80::1"), Port: 5, Zone: "eth0"}, "fe80::1"},
		{&net.TCPAddr{IP: net.ParseIP("::1"), Port: 5}, "::1"},
		{&net.TCPAddr{IP: net.ParseIP("fd12:3456:789a:1::5"), Port: 5}, "fd12:3456:789a:1::/64"},
		{&net.TCPAddr{Port: 5}, "<nil>"},
		{&net.UDPAddr{IP: net.ParseIP("2001:db8::7"), Port: 5}, "2001:db8::/64"},
		{&net.UnixAddr{Name: "/run/zrpc.sock", Net: "unix"}, "/run/zrpc.sock"},
	} {
		if got := Group(tc.addr); got != tc.want {
			t.Errorf("Group(%s) = %q, want %q", tc.addr, got, tc.want)
		}
	}
}
