package node_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/zrpcio/zrpc/api/apierr"
	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/client"
	"github.com/zrpcio/zrpc/gossip"
	"github.com/zrpcio/zrpc/node"
	"github.com/zrpcio/zrpc/node/grpcapi"
	"github.com/zrpcio/zrpc/testcluster"
)

// membersWatch polls every agent's member list until stopped and keeps
// every status other than alive it saw.
type membersWatch struct {
	stop, done chan struct{}
	mu         sync.Mutex
	seen       []string
}

func watchMembers(t *testing.T, c *testcluster.Cluster) *membersWatch {
	w := &membersWatch{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			for i := range c.Size() {
				resp, err := c.Status(i).Members(ctxT(t), &pb.MembersRequest{})
				if err != nil {
					continue
				}
				for _, m := range resp.Members {
					if m.Status != gossip.StatusAlive {
						w.mu.Lock()
						w.seen = append(w.seen, fmt.Sprintf("%s saw %s %s", c.Name(i), m.Name, m.Status))
						w.mu.Unlock()
					}
				}
			}
			select {
			case <-w.stop:
				return
			case <-tick.C:
			}
		}
	}()
	return w
}

func (w *membersWatch) end() []string {
	close(w.stop)
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.seen
}

func TestKeyringRotationWhileRegistrationsFlow(t *testing.T) {
	oldKey, newKey, c, cl := encryptedCluster(t)

	// Registrations flow through every agent while the key rotates.
	var acked []string
	var ackMu sync.Mutex
	var stopWrites atomic.Bool
	writesDone := make(chan struct{})
	go func() {
		defer close(writesDone)
		for i := 0; !stopWrites.Load(); i++ {
			id := fmt.Sprintf("u%d", i)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_, err := c.Registry(i%3).Register(ctx, &pb.RegisterRequest{Instance: &pb.Instance{Service: "user.rpc", Id: id, Address: "127.0.0.1:9001"}})
			cancel()
			if err == nil {
				ackMu.Lock()
				acked = append(acked, id)
				ackMu.Unlock()
			}
		}
	}()
	c.WaitFor(20*time.Second, "every agent's gossip sees every agent alive", func() bool {
		for i := range c.Size() {
			resp, err := c.Status(i).Members(ctxT(t), &pb.MembersRequest{})
			if err != nil || len(resp.Members) != c.Size() {
				return false
			}
			for _, m := range resp.Members {
				if m.Status != gossip.StatusAlive {
					return false
				}
			}
		}
		return true
	})
	watch := watchMembers(t, c)

	steps := []struct {
		name string
		call func(context.Context, string) (*pb.KeyringResponse, error)
		key  string
	}{
		{"install", cl.KeyringInstall, newKey},
		{"use", cl.KeyringUse, newKey},
		{"remove", cl.KeyringRemove, oldKey},
	}
	for _, step := range steps {
		resp, err := step.call(ctxT(t), step.key)
		if err != nil {
			t.Fatalf("keyring %s: %v (%v)", step.name, err, resp.GetAgents())
		}
		if len(resp.Agents) != 3 {
			t.Fatalf("keyring %s answered for %d agents, want 3: %v", step.name, len(resp.Agents), resp.Agents)
		}
		ackMu.Lock()
		before := len(acked)
		ackMu.Unlock()
		c.WaitFor(20*time.Second, "registrations acknowledged after keyring "+step.name, func() bool {
			ackMu.Lock()
			defer ackMu.Unlock()
			return len(acked) >= before+3
		})
	}
	stopWrites.Store(true)
	<-writesDone
	if seen := watch.end(); len(seen) > 0 {
		t.Errorf("members were not alive throughout the rotation: %v", seen)
	}

	// Every agent reports the new key as its only and primary key.
	resp, err := cl.KeyringList(ctxT(t))
	if err != nil {
		t.Fatalf("keyring list: %v", err)
	}
	for _, a := range resp.Agents {
		if a.PrimaryKey != newKey || !slices.Equal(a.Keys, []string{newKey}) {
			t.Errorf("agent %s: primary %s, %d keys; want only the new key", a.Agent, gossip.KeyFingerprint(a.PrimaryKey), len(a.Keys))
		}
	}
	if len(resp.Keys) != 1 || resp.Keys[0].Agents != 3 || resp.Keys[0].Primary != 3 {
		t.Errorf("key counts %v, want the new key on 3 agents", resp.Keys)
	}

	// No acknowledged registration was lost.
	ackMu.Lock()
	want := slices.Clone(acked)
	ackMu.Unlock()
	if len(want) == 0 {
		t.Fatal("no registration was acknowledged during the rotation")
	}
	for i := range c.Size() {
		c.WaitFor(20*time.Second, fmt.Sprintf("agent %s to hold all %d acknowledged registrations", c.Name(i), len(want)), func() bool {
			got := instances(t, c, i, "user.rpc", pb.Consistency_STALE)
			for _, id := range want {
				if got[id] == nil {
					return false
				}
			}
			return true
		})
	}

	// A restarted agent, whose encrypt setting still holds the old key,
	// starts from its keyring file and rejoins.
	c.Restart(2)
	c.WaitFor(30*time.Second, "the restarted agent to list the others alive with the new key", func() bool {
		resp, err := cl.KeyringList(ctxT(t))
		if err != nil || len(resp.Agents) != 3 {
			return false
		}
		for _, a := range resp.Agents {
			if a.PrimaryKey != newKey {
				return false
			}
		}
		return true
	})
}

func TestKeyringPeerIsRefusedToClients(t *testing.T) {
	key, err := gossip.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	c := testcluster.New(t, 1, testcluster.WithConfig(func(cfg *node.Config) { cfg.EncryptKey = key }))
	cl, err := client.New(client.Config{Endpoints: []string{c.GRPCAddr(0)}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	newKey, err := gossip.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	// A client reaches the agent-only KeyringPeer service on the agent's
	// public port, without the cluster's proof.
	conn, err := grpc.NewClient(c.GRPCAddr(0), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	peer := pb.NewKeyringPeerClient(conn)
	_, err = peer.Install(ctxT(t), &pb.KeyringKeyRequest{Key: newKey})
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("KeyringPeer.Install by a client: %v, want PermissionDenied", err)
	}
	resp, err := cl.KeyringList(ctxT(t))
	if err != nil || len(resp.Agents) != 1 || len(resp.Agents[0].Keys) != 1 {
		t.Fatalf("keyring after a refused install: %v, %v", resp, err)
	}
}

// A key made primary while an alive agent lacks it would cut that agent
// off from gossip: keyring use refuses, and no agent changes its primary
// key.
func TestKeyringUseRefusedWhileAnAgentLacksTheKey(t *testing.T) {
	oldKey, newKey, c, cl := encryptedCluster(t)
	c.WaitFor(20*time.Second, "every agent to list every agent's keys", func() bool {
		resp, err := cl.KeyringList(ctxT(t))
		return err == nil && len(resp.Agents) == c.Size()
	})

	// The new key reaches agents 0 and 1 only, as when an install failed
	// on agent 2.
	for i := range 2 {
		conn, err := grpc.NewClient(c.GRPCAddr(i), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		method := pb.KeyringPeer_Install_FullMethodName
		ctx := metadata.AppendToOutgoingContext(ctxT(t), grpcapi.AgentProofKey, grpcapi.AgentProof(c.Node(i).Store().FSM().ClusterSecret(), method, c.GRPCAddr(i)))
		if res, err := pb.NewKeyringPeerClient(conn).Install(ctx, &pb.KeyringKeyRequest{Key: newKey}); err != nil || !res.Ok {
			t.Fatalf("install on %s: %v, %v", c.Name(i), res, err)
		}
	}

	resp, err := cl.KeyringUse(ctxT(t), newKey)
	if !errors.Is(err, apierr.ErrFailedPrecondition) || !strings.Contains(err.Error(), "not installed on "+c.Name(2)) {
		t.Fatalf("keyring use while %s lacks the key: %v, %v; want FailedPrecondition naming it", c.Name(2), resp.GetAgents(), err)
	}
	list, err := cl.KeyringList(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range list.Agents {
		if a.PrimaryKey != oldKey {
			t.Errorf("agent %s encrypts with key %s after the refused use, want the old key", a.Agent, gossip.KeyFingerprint(a.PrimaryKey))
		}
	}
}

// encryptedCluster starts three agents whose gossip is encrypted with
// oldKey, and a client of the first; newKey is another fresh key.
func encryptedCluster(t *testing.T) (oldKey, newKey string, c *testcluster.Cluster, cl *client.Client) {
	t.Helper()
	var err error
	if oldKey, err = gossip.GenerateKey(); err != nil {
		t.Fatal(err)
	}
	if newKey, err = gossip.GenerateKey(); err != nil {
		t.Fatal(err)
	}
	c = testcluster.New(t, 3, testcluster.WithConfig(func(cfg *node.Config) { cfg.EncryptKey = oldKey }))
	if cl, err = client.New(client.Config{Endpoints: []string{c.GRPCAddr(0)}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	return oldKey, newKey, c, cl
}
