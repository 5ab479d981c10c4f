package e2e

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
)

// A stranger reaches every port of a zrpcd process and sends what no
// client or peer would: garbage, commands cut short, lengths of 4 GiB,
// connections held open and silent, huge headers and bad query values.
// The agent keeps serving (Status answers, a registration is stored), its
// memory stays bounded, and it warns of the Raft and gossip strangers
// naming their addresses.
func TestStrangerAtEveryPortLeavesTheAgentServing(t *testing.T) {
	dnsPort := freePort(t)
	a := newAgent(t, "n1", "--dns-port", strconv.Itoa(dnsPort))
	a.start()
	a.waitLeader()
	local := func(port int) string { return "127.0.0.1:" + strconv.Itoa(port) }

	// Raft: garbage; an AppendEntries cut short; a RequestVote whose
	// candidate claims 4 GiB, 64 KiB of it sent; a connection that says
	// nothing.
	raftGarbage := tcpSend(t, local(a.raftPort), []byte("GET / HTTP/1.1\r\n\r\n"), true)
	tcpSend(t, local(a.raftPort), []byte{0, 0x8a, 0xa4}, false)
	vote := append([]byte{1, 0x81, 0xa9}, "Candidate"...)
	vote = append(append(vote, 0xc6, 0xff, 0xff, 0xff, 0xff), make([]byte, 64<<10)...)
	for range 8 {
		tcpSend(t, local(a.raftPort), vote, true)
	}
	raftSilent := tcpSend(t, local(a.raftPort), nil, true)

	// Gossip: garbage over TCP and UDP, and a push/pull header announcing
	// a million members (memberlist would allocate 112 MiB for it).
	tcpSend(t, a.gossipAddr(), []byte{0xff, 0xfe, 0x00}, true)
	for range 8 {
		tcpSend(t, a.gossipAddr(), append([]byte{6, 0x83, 0xa5}, "Nodes\xce\x00\x10\x00\x00\xacUserStateLen\x00\xa4Join\xc2"...), true)
	}
	udpSend(t, a.gossipAddr(), [][]byte{{0xff}, {}, []byte("garbage"), make([]byte, 1400)})

	// DNS: garbage over UDP and a TCP length prefix with nothing after.
	udpSend(t, local(dnsPort), [][]byte{{0}, []byte("not a DNS message"), make([]byte, 512)})
	tcpSend(t, local(dnsPort), []byte{0xff, 0xff}, true)

	// gRPC: not HTTP/2 at all, and a preface followed by garbage.
	tcpSend(t, a.grpcAddr(), []byte("hello\r\n\r\n"), false)
	tcpSend(t, a.grpcAddr(), append([]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff), false)

	// HTTP: unknown paths, a long URL, huge headers, bad query values.
	base := "http://" + local(a.httpPort)
	for _, c := range []struct {
		path   string
		header string
		want   int
	}{
		{"/nope", "", http.StatusNotFound},
		{"/ui/api/" + strings.Repeat("x", 64<<10), "", http.StatusNotFound},
		{"/metrics", strings.Repeat("h", 2<<20), http.StatusRequestHeaderFieldsTooLarge},
		{"/debug/pprof/profile?seconds=abc", "", http.StatusBadRequest},
		{"/debug/pprof/trace?seconds=1e300", "", http.StatusBadRequest},
		{"/debug/pprof/heap?seconds=-1", "", http.StatusBadRequest},
		{"/debug/zrpc/config?%zz", "", http.StatusOK},
	} {
		req, err := http.NewRequest(http.MethodGet, base+c.path, nil)
		if err != nil {
			t.Fatal(err)
		}
		if c.header != "" {
			req.Header.Set("X-Big", c.header)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("GET %.60s: %v", c.path, err)
		}
		resp.Body.Close()
		if resp.StatusCode != c.want {
			t.Errorf("GET %.60s: %d, want %d", c.path, resp.StatusCode, c.want)
		}
	}

	// The agent warns of the Raft and gossip strangers by address, and
	// closes the silent Raft connection.
	for _, want := range []string{
		`msg="dropped a Raft connection whose bytes are not a Raft command"`, "address=" + raftGarbage.LocalAddr().String(),
		`msg="closed a Raft connection that sent nothing"`, "address=" + raftSilent.LocalAddr().String(),
		`msg="closed a gossip stream announcing more than a zrpc cluster sends"`,
	} {
		waitFor(t, 30*time.Second, "the agent's log to say "+want, func() bool { return strings.Contains(a.log.String(), want) })
	}
	// Memberlist's lines about the gossip garbage warn once a minute per
	// sending host: whichever of the TCP or UDP garbage came first names
	// its sender, the rest are counted.
	waitFor(t, 30*time.Second, "a gossip warning naming the garbage's sender", func() bool {
		for _, line := range strings.Split(a.log.String(), "\n") {
			if strings.Contains(line, "level=WARN") && strings.Contains(line, "component=gossip") &&
				strings.Contains(line, "from=127.0.0.1:") && !strings.Contains(line, "closed a gossip stream") {
				return true
			}
		}
		return false
	})
	if strings.Contains(a.log.String(), "level=ERROR") || strings.Contains(a.log.String(), "panic") {
		t.Errorf("strangers made the agent log an error or a panic:\n%s", a.log.String())
	}

	// It still serves: Status, and a registration stored through Raft.
	conn, err := grpc.NewClient(a.grpcAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := pb.NewStatusClient(conn).Status(ctx, &pb.StatusRequest{}); err != nil {
		t.Fatalf("Status after the strangers: %v", err)
	}
	if _, err := pb.NewRegistryClient(conn).Register(ctx, &pb.RegisterRequest{Instance: &pb.Instance{Service: "user.rpc", Id: "u1", Address: "127.0.0.1:9000"}}); err != nil {
		t.Fatalf("Register after the strangers: %v", err)
	}
	if rss := residentMiB(t, a.cmd.Process.Pid); rss > 512 {
		t.Errorf("the agent holds %d MiB after the strangers", rss)
	}
}

// tcpSend connects to addr and writes b; with hold the connection stays
// open (closed when the test ends), otherwise it is closed at once.
func tcpSend(t *testing.T, addr string, b []byte, hold bool) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	if len(b) > 0 {
		if _, err := c.Write(b); err != nil {
			t.Fatalf("write to %s: %v", addr, err)
		}
	}
	if !hold {
		c.Close()
		return c
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// udpSend sends each of packets to addr.
func udpSend(t *testing.T, addr string, packets [][]byte) {
	t.Helper()
	c, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, p := range packets {
		c.Write(p) // a refused datagram is the agent's answer too
	}
}

// residentMiB is the resident memory of process pid (Linux).
func residentMiB(t *testing.T, pid int) int {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Skipf("no /proc: %v", err)
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if v, ok := strings.CutPrefix(s.Text(), "VmRSS:"); ok {
			kb, err := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
			if err != nil {
				t.Fatalf("VmRSS %q: %v", v, err)
			}
			return kb >> 10
		}
	}
	t.Fatal("no VmRSS in /proc status")
	return 0
}
