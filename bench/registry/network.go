package registry

import (
	"context"
	"net"
	"net/http"
	"time"

	"github.com/zrpcio/zrpc/internal/netlab"
)

// network is where a cluster's members run and how this process, the load
// generator, reaches them: loopback (every phase but partition), or a
// netlab lab whose hosts the partition phase cuts apart.
type network interface {
	// ip is the address member i binds and is reached at.
	ip(i int) string
	// command returns the program and arguments that run bin with args
	// on member i's host.
	command(i int, bin string, args []string) (string, []string)
	// dial connects this process to addr.
	dial(ctx context.Context, addr string) (net.Conn, error)
}

// loopback runs every member on 127.0.0.1.
type loopback struct{}

func (loopback) ip(int) string { return "127.0.0.1" }

func (loopback) command(_ int, bin string, args []string) (string, []string) { return bin, args }

func (loopback) dial(ctx context.Context, addr string) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, "tcp", addr)
}

// labNet runs member i on host i of a lab; the load generator's
// connections start from host client, which no partition of the phase
// cuts from the majority.
type labNet struct {
	lab    *netlab.Lab
	client int
}

func (n labNet) ip(i int) string { return n.lab.Host(i).IP }

func (n labNet) command(i int, bin string, args []string) (string, []string) {
	return "ip", append([]string{"netns", "exec", n.lab.Host(i).NS, bin}, args...)
}

func (n labNet) dial(ctx context.Context, addr string) (net.Conn, error) {
	return n.lab.Host(n.client).DialContext(ctx, "tcp", addr)
}

// httpClient is an HTTP client whose connections nw dials, with timeout
// per request.
func httpClient(nw network, timeout time.Duration) *http.Client {
	return &http.Client{Timeout: timeout, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) { return nw.dial(ctx, addr) },
	}}
}
