package e2e

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"io"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/internal/pki/pkitest"
	"github.com/zrpcio/zrpc/internal/testwait"
)

// TestTLSAgentListenersRefuseAllButMutualTLS scans the TCP ports a zrpcd
// process with --tls-* listens on. Its gRPC and Raft ports each refuse
// plaintext gRPC, a plaintext Raft connection, a certificate of another
// CA and an expired certificate of the cluster's CA (saying it expired);
// a client certificate of the cluster's CA reaches neither Raft nor the
// agent-to-agent services. An agent certificate gets answers on both, so
// the refusals are the agent's and not a broken probe's.
func TestTLSAgentListenersRefuseAllButMutualTLS(t *testing.T) {
	kit, other := pkitest.New(t), pkitest.New(t)
	n1 := kit.Agent("n1")
	gossipKey := filepath.Join(t.TempDir(), "gossip.key")
	key := make([]byte, 32)
	rand.Read(key)
	if err := os.WriteFile(gossipKey, []byte(base64.StdEncoding.EncodeToString(key)), 0o600); err != nil {
		t.Fatal(err)
	}
	a := newAgent(t, "n1", "--tls-ca", n1.CA, "--tls-cert", n1.Cert, "--tls-key", n1.Key, "--encrypt-file", gossipKey)
	a.ctlArgs = []string{"--tls-ca", n1.CA, "--tls-cert", n1.Cert, "--tls-key", n1.Key}
	a.start()

	grpcAddr, raftAddr := a.grpcAddr(), "127.0.0.1:"+strconv.Itoa(a.raftPort)
	checkListeners(t, a, map[int]string{
		a.grpcPort: "grpc (mutual TLS)", a.raftPort: "raft (mutual TLS)",
		a.gossipPort: "gossip (keyring encryption)", a.httpPort: "http (loopback)",
	})

	agentCert := clientTLS(t, kit.CAPEM, kit.Agent("n9"))
	waitFor(t, 30*time.Second, "n1 answers an agent certificate on gRPC", func() bool {
		return grpcStatus(t, grpcAddr, credentials.NewTLS(agentCert)) == nil
	})
	if err := raftRequestVote(t, raftAddr, agentCert); err != nil {
		t.Fatalf("Raft with an agent certificate: %v", err)
	}

	refused := []struct {
		name string
		tls  *tls.Config // nil: plaintext
		// what the refusal says (on both ports), "" for anything
		says string
	}{
		{"plaintext", nil, ""},
		{"a certificate of another CA", clientTLS(t, kit.CAPEM, other.Agent("n1")), "unknown certificate authority"},
		{"an expired agent certificate", clientTLS(t, kit.CAPEM, kit.Expired("n1")), "expired"},
	}
	for _, c := range refused {
		creds := insecure.NewCredentials()
		if c.tls != nil {
			creds = credentials.NewTLS(c.tls)
		}
		for probe, err := range map[string]error{
			"gRPC port: gRPC": grpcStatus(t, grpcAddr, creds),
			"gRPC port: Raft": raftRequestVote(t, grpcAddr, c.tls),
			"Raft port: gRPC": grpcStatus(t, raftAddr, creds),
			"Raft port: Raft": raftRequestVote(t, raftAddr, c.tls),
		} {
			if err == nil {
				t.Errorf("%s with %s: answered", probe, c.name)
			}
		}
		if c.tls == nil {
			continue
		}
		// What the agent said: the TLS alert it sent.
		for port, addr := range map[string]string{"gRPC": grpcAddr, "Raft": raftAddr} {
			if err := tlsRefusal(addr, c.tls); err == nil || !strings.Contains(err.Error(), c.says) {
				t.Errorf("%s port with %s: err %v, want a refusal saying %q", port, c.name, err, c.says)
			}
		}
	}
	if log := a.log.String(); !strings.Contains(log, "expired at") {
		t.Errorf("n1's log does not say when the refused certificate expired:\n%s", log)
	}

	// A client certificate of the cluster's CA: the public API yes, the
	// agents' own API and Raft no.
	ops := clientTLS(t, kit.CAPEM, kit.Client("ops"))
	if err := grpcStatus(t, grpcAddr, credentials.NewTLS(ops)); err != nil {
		t.Fatalf("Status with a client certificate: %v", err)
	}
	if err := raftRequestVote(t, raftAddr, ops); err == nil {
		t.Error("Raft answered a client certificate")
	}
	if err := tlsRefusal(raftAddr, ops); err == nil || !strings.Contains(err.Error(), "bad certificate") {
		t.Errorf("Raft port with a client certificate: err %v, want the agent to refuse the certificate", err)
	}
	conn, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(credentials.NewTLS(ops)))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for method, call := range map[string]func() error{
		"Internal.Apply":   func() error { _, err := pb.NewInternalClient(conn).Apply(ctx, &pb.Command{}); return err },
		"Shards.GetShard":  func() error { _, err := pb.NewShardsClient(conn).GetShard(ctx, &pb.GetShardRequest{}); return err },
		"KeyringPeer.List": func() error { _, err := pb.NewKeyringPeerClient(conn).List(ctx, &pb.KeyringListRequest{}); return err },
	} {
		if err := call(); status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "not an agent certificate") {
			t.Errorf("%s with a client certificate: err %v, want PermissionDenied saying it is not an agent certificate", method, err)
		}
	}
}

// clientTLS dials with f's certificate and trusts ca as agent.zrpc. It is
// built by hand: tlsconf refuses to load an expired certificate or one of
// another CA, and those are what the agent must refuse.
func clientTLS(t *testing.T, ca string, f pkitest.Files) *tls.Config {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(f.Cert, f.Key)
	if err != nil {
		t.Fatal(err)
	}
	caPEM, err := os.ReadFile(ca)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		t.Fatalf("no certificate in %s", ca)
	}
	return &tls.Config{
		MinVersion: tls.VersionTLS13, RootCAs: pool, ServerName: "agent.zrpc",
		// Sent whatever CAs the server says it accepts: a static
		// Certificates is left out when it does not match them.
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil },
	}
}

// tlsRefusal completes a TLS handshake with addr, sends a byte and reads
// one: a server that refuses the client's certificate answers the read
// with its alert ("remote error: tls: expired certificate").
func tlsRefusal(addr string, cfg *tls.Config) error {
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		return err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := conn.Write([]byte{0}); err != nil {
		return err
	}
	_, err = io.ReadFull(conn, make([]byte, 1))
	return err
}

// grpcStatus calls Status on addr with creds and returns its error.
func grpcStatus(t *testing.T, addr string, creds credentials.TransportCredentials) error {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = pb.NewStatusClient(conn).Status(ctx, &pb.StatusRequest{})
	return err
}

// raftRequestVote sends a RequestVote through hashicorp/raft's own
// transport to addr, over TLS with cfg, or plaintext with a nil cfg.
func raftRequestVote(t *testing.T, addr string, cfg *tls.Config) error {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	trans := raft.NewNetworkTransport(&raftStream{Listener: ln, tls: cfg}, 1, 5*time.Second, io.Discard)
	defer trans.Close()
	req := &raft.RequestVoteRequest{
		RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte("probe"), Addr: []byte(ln.Addr().String())},
	}
	return trans.RequestVote("n1", raft.ServerAddress(addr), req, &raft.RequestVoteResponse{})
}

// raftStream is a raft.StreamLayer that dials plain TCP, or TLS with tls.
type raftStream struct {
	net.Listener
	tls *tls.Config
}

func (s *raftStream) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	d := &net.Dialer{Timeout: timeout}
	if s.tls == nil {
		return d.Dial("tcp", string(addr))
	}
	return tls.DialWithDialer(d, "tcp", string(addr), s.tls)
}

// checkListeners fails when the agent process listens on a TCP port that
// is not one of want (port → what it is), or lacks one of them: a new
// listener must be added here and probed.
func checkListeners(t *testing.T, a *agent, want map[int]string) {
	t.Helper()
	// The gRPC API answers before Start has opened every listener: wait
	// (bounded) until the ones expected are there.
	var (
		got              map[int]bool
		listErr          error
		missing, unknown []string
	)
	testwait.Until(10*time.Second, func() bool {
		if got, listErr = listeningTCPPorts(a.cmd.Process.Pid); listErr != nil {
			return true
		}
		missing = missing[:0]
		for port, what := range want {
			if !got[port] {
				missing = append(missing, strconv.Itoa(port)+" "+what)
			}
		}
		return len(missing) == 0
	})
	if listErr != nil {
		t.Skipf("cannot list the agent's sockets: %v", listErr)
	}
	for port := range got {
		if _, ok := want[port]; !ok {
			unknown = append(unknown, strconv.Itoa(port))
		}
	}
	sort.Strings(missing)
	sort.Strings(unknown)
	if len(missing) > 0 || len(unknown) > 0 {
		t.Fatalf("agent's TCP listeners: missing %v, not probed by this test %v", missing, unknown)
	}
}

// listeningTCPPorts returns the ports of the TCP sockets process pid
// listens on (Linux: its socket inodes in /proc/<pid>/fd matched with
// /proc/net/tcp and tcp6).
func listeningTCPPorts(pid int) (map[int]bool, error) {
	fds, err := filepath.Glob("/proc/" + strconv.Itoa(pid) + "/fd/*")
	if err != nil || len(fds) == 0 {
		return nil, os.ErrNotExist
	}
	inodes := map[string]bool{}
	for _, fd := range fds {
		if link, err := os.Readlink(fd); err == nil && strings.HasPrefix(link, "socket:[") {
			inodes[strings.TrimSuffix(strings.TrimPrefix(link, "socket:["), "]")] = true
		}
	}
	ports := map[int]bool{}
	for _, table := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		data, err := os.ReadFile(table)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(data), "\n")[1:] {
			// sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
			f := strings.Fields(line)
			if len(f) < 10 || f[3] != "0A" || !inodes[f[9]] { // 0A: LISTEN
				continue
			}
			_, hexPort, _ := strings.Cut(f[1], ":")
			if p, err := strconv.ParseInt(hexPort, 16, 32); err == nil {
				ports[int(p)] = true
			}
		}
	}
	return ports, nil
}
