package testcluster

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/internal/pki"
	"github.com/zrpcio/zrpc/internal/pki/pkitest"
	"github.com/zrpcio/zrpc/internal/tlsconf"
)

// TestTLSClusterServesOnlyMutualTLS: three agents with TLS form a
// cluster over TLS Raft and gRPC, register and read; a plaintext client
// gets nothing, and a client certificate reaches neither the
// agent-to-agent API nor Raft.
func TestTLSClusterServesOnlyMutualTLS(t *testing.T) {
	kit := pkitest.New(t)
	c := New(t, 3, WithTLS(func(agent string) (string, string, string) {
		f := kit.Agent(agent)
		return f.CA, f.Cert, f.Key
	}))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	in := &pb.Instance{Service: "user.rpc", Id: "u1", Address: "127.0.0.1:9000"}
	follower := (c.LeaderIndex() + 1) % 3
	if _, err := c.Registry(follower).Register(ctx, &pb.RegisterRequest{Instance: in}); err != nil {
		t.Fatalf("register through follower %s: %v", c.Name(follower), err)
	}
	for i := range 3 {
		c.WaitFor(20*time.Second, "user.rpc/u1 on "+c.Name(i), func() bool {
			resp, err := c.Registry(i).Get(ctx, &pb.GetRequest{Service: "user.rpc", Consistency: pb.Consistency_STALE})
			return err == nil && len(resp.Instances) == 1
		})
	}

	// Plaintext gets no answer.
	refusesPlaintext(ctx, t, c.GRPCAddr(0))

	// A client certificate may use the public API, not the agents' own.
	ops := kit.Client("ops")
	opsTLS, err := tlsconf.Client(tlsconf.Files(ops), tlsconf.AgentServerName)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(c.GRPCAddr(0), grpc.WithTransportCredentials(credentials.NewTLS(opsTLS)))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := pb.NewStatusClient(conn).Status(ctx, &pb.StatusRequest{}); err != nil {
		t.Fatalf("Status with a client certificate: %v", err)
	}
	_, err = pb.NewInternalClient(conn).Apply(ctx, &pb.Command{})
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "not an agent certificate") {
		t.Fatalf("Internal.Apply with a client certificate: err %v, want PermissionDenied saying it is not an agent certificate", err)
	}

	// Raft takes agent certificates only.
	raftAddr := c.Node(0).Store().RaftAddr()
	raft, err := tls.Dial("tcp", raftAddr, opsTLS)
	if err != nil {
		t.Fatalf("dial Raft: %v", err)
	}
	defer raft.Close()
	raft.SetDeadline(time.Now().Add(10 * time.Second))
	raft.Write([]byte{0})
	if _, err := io.ReadFull(raft, make([]byte, 1)); err == nil || !strings.Contains(err.Error(), "bad certificate") {
		t.Fatalf("Raft with a client certificate: read err %v, want the agent to refuse the certificate", err)
	}
	plainRaft, err := tls.Dial("tcp", raftAddr, &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13})
	if err == nil {
		plainRaft.SetDeadline(time.Now().Add(10 * time.Second))
		plainRaft.Write([]byte{0})
		_, err = io.ReadFull(plainRaft, make([]byte, 1))
		plainRaft.Close()
	}
	if err == nil || !strings.Contains(err.Error(), "certificate required") {
		t.Fatalf("Raft without a certificate: err %v, want the agent to ask for one", err)
	}
}

// TestTLSAgentReloadsCertificates: ReloadTLS (zrpcd's SIGHUP) serves the
// files' new certificate to new connections; a broken file keeps the old.
func TestTLSAgentReloadsCertificates(t *testing.T) {
	kit := pkitest.New(t)
	live := pkitest.Files{CA: kit.CAPEM, Cert: kit.Dir + "/live.pem", Key: kit.Dir + "/live-key.pem"}
	first, second := kit.Agent("n1"), kit.Agent("n1")
	pkitest.Copy(t, first, live)
	c := New(t, 1, WithTLS(func(string) (string, string, string) { return live.CA, live.Cert, live.Key }))
	ops, err := tlsconf.Client(tlsconf.Files(kit.Client("ops")), tlsconf.AgentServerName)
	if err != nil {
		t.Fatal(err)
	}
	servedSerial := func() string {
		conn, err := tls.Dial("tcp", c.GRPCAddr(0), ops)
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0].SerialNumber.String()
	}
	if got, want := servedSerial(), pkitest.Serial(t, first); got != want {
		t.Fatalf("agent serves serial %s, want %s", got, want)
	}
	pkitest.Copy(t, second, live)
	if err := c.Node(0).ReloadTLS(); err != nil {
		t.Fatal(err)
	}
	if got, want := servedSerial(), pkitest.Serial(t, second); got != want {
		t.Fatalf("after ReloadTLS the agent serves serial %s, want the new %s", got, want)
	}
	if err := os.WriteFile(live.Key, []byte("broken"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := c.Node(0).ReloadTLS(); err == nil || !strings.Contains(err.Error(), live.Key) {
		t.Fatalf("ReloadTLS of a broken key: err %v, want one naming %s", err, live.Key)
	}
	if got, want := servedSerial(), pkitest.Serial(t, second); got != want {
		t.Fatalf("after a failed ReloadTLS the agent serves serial %s, want the kept %s", got, want)
	}
}

// TestClusterTokenAloneSecuresTheCluster: agents given only a cluster
// token make their certificates and gossip key from it, form a cluster
// over mutual TLS and serve it; plaintext is refused, and so is an agent
// certificate made from another token.
func TestClusterTokenAloneSecuresTheCluster(t *testing.T) {
	const token = "test-cluster-token-0123456789abcdef"
	c := New(t, 3, WithClusterToken(token))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	in := &pb.Instance{Service: "user.rpc", Id: "u1", Address: "127.0.0.1:9000"}
	follower := (c.LeaderIndex() + 1) % 3
	if _, err := c.Registry(follower).Register(ctx, &pb.RegisterRequest{Instance: in}); err != nil {
		t.Fatalf("register through follower %s: %v", c.Name(follower), err)
	}
	c.WaitFor(20*time.Second, "user.rpc/u1 on every agent", func() bool {
		for i := range 3 {
			resp, err := c.Registry(i).Get(ctx, &pb.GetRequest{Service: "user.rpc", Consistency: pb.Consistency_STALE})
			if err != nil || len(resp.Instances) != 1 {
				return false
			}
		}
		return true
	})
	_, _, keyFile := c.members[0].cfg.TokenCertificateFiles()
	if fi, err := os.Stat(keyFile); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("agent key %s: %v, mode %v; want it written with mode 0600", keyFile, err, fi.Mode().Perm())
	}

	refusesPlaintext(ctx, t, c.GRPCAddr(0))

	otherCA, err := pki.TokenCA(token + "-other")
	if err != nil {
		t.Fatal(err)
	}
	cert, key, err := otherCA.Sign(pki.CertRequest{Kind: pki.Agent, Name: "intruder"})
	if err != nil {
		t.Fatal(err)
	}
	// The intruder does not check the server, so only the agent's check of
	// the intruder's certificate decides.
	intruder := &tls.Config{
		Certificates:       []tls.Certificate{{Certificate: [][]byte{cert.Raw}, PrivateKey: key}},
		InsecureSkipVerify: true, MinVersion: tls.VersionTLS13,
	}
	conn, err := tls.Dial("tcp", c.Node(0).Store().RaftAddr(), intruder)
	if err == nil {
		// TLS 1.3 reports the server's refusal of the client certificate
		// on the first read; an accepted connection would just wait.
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err = conn.Read(make([]byte, 1))
		conn.Close()
	}
	var ne net.Error
	if err == nil || (errors.As(err, &ne) && ne.Timeout()) {
		t.Fatalf("Raft accepted an agent certificate of another token: err %v", err)
	}
}

// refusesPlaintext fails the test unless the agent at addr gives a
// plaintext client no answer.
func refusesPlaintext(ctx context.Context, t *testing.T, addr string) {
	t.Helper()
	plain, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	if _, err := pb.NewStatusClient(plain).Status(ctx, &pb.StatusRequest{}); status.Code(err) != codes.Unavailable {
		t.Fatalf("plaintext Status: err %v, want Unavailable", err)
	}
}
