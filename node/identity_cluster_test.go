package node_test

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/client"
	"github.com/zrpcio/zrpc/testcluster"
)

func TestStatusShowsTheSameClusterIDOnEveryAgent(t *testing.T) {
	c := testcluster.New(t, 3)
	id := ""
	c.WaitFor(10*time.Second, "the leader knows the cluster id", func() bool {
		l := c.Leader()
		if l == nil {
			return false
		}
		id = l.Store().FSM().ClusterID()
		return id != ""
	})
	if len(id) != 32 {
		t.Fatalf("cluster id %q is not 128 bits of hex", id)
	}
	for i := range c.Size() {
		c.WaitFor(10*time.Second, fmt.Sprintf("agent %d's Status shows cluster %s", i, id), func() bool {
			st, err := c.Status(i).Status(ctxT(t), &pb.StatusRequest{})
			return err == nil && st.ClusterId == id
		})
	}
}

// followers returns the indexes of two agents that do not lead.
func followers(t *testing.T, c *testcluster.Cluster) (int, int) {
	t.Helper()
	var out []int
	for i := range c.Size() {
		if i != c.LeaderIndex() {
			out = append(out, i)
		}
	}
	if len(out) < 2 {
		t.Fatalf("want two followers, have %v", out)
	}
	return out[0], out[1]
}

func TestAgentsCallEachOthersAgentAPIOthersCannot(t *testing.T) {
	c := testcluster.New(t, 3)
	c.WaitFor(20*time.Second, "every agent registered and passing", func() bool {
		for i := range c.Size() {
			nodes := c.Node(i).Store().FSM().Nodes()
			if len(nodes) != 3 {
				return false
			}
			for _, nd := range nodes {
				if nd.Health != pb.Health_PASSING {
					return false
				}
			}
		}
		return true
	})
	f1, f2 := followers(t, c)

	// A write to a follower is forwarded to the leader (Internal.Apply).
	register(t, c, f1, "user.rpc", "u1")

	// A blob put through a follower sends shards to the other agents
	// (Shards.PutShard, SyncShards); a get through the other follower's
	// Get reads them back (Shards.GetShard).
	put, err := client.New(client.Config{Endpoints: []string{c.GRPCAddr(f1)}})
	if err != nil {
		t.Fatal(err)
	}
	defer put.Close()
	data := bytes.Repeat([]byte("0123456789abcdef"), 40<<10) // 640 KiB: shards on 2+1 agents
	if _, err := put.PutBlob(ctxT(t), "model.bin", bytes.NewReader(data), client.PutOptions{}); err != nil {
		t.Fatalf("PutBlob via agent %d: %v", f1, err)
	}
	get, err := client.New(client.Config{Endpoints: []string{c.GRPCAddr(f2)}})
	if err != nil {
		t.Fatal(err)
	}
	defer get.Close()
	r, err := get.GetBlob(ctxT(t), "model.bin", client.GetOptions{ThroughAgent: true})
	if err != nil {
		t.Fatalf("GetBlob via agent %d: %v", f2, err)
	}
	var got bytes.Buffer
	if _, err := got.ReadFrom(r); err != nil {
		t.Fatalf("read blob: %v", err)
	}
	r.Close()
	if !bytes.Equal(got.Bytes(), data) {
		t.Fatalf("blob read back differs (%d bytes, want %d)", got.Len(), len(data))
	}

	// A plain client is refused by the leader's agent-to-agent API.
	conn, err := grpc.NewClient(c.GRPCAddr(c.LeaderIndex()), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	rev := c.Leader().Store().FSM().Revision()
	_, err = pb.NewInternalClient(conn).Apply(ctxT(t), &pb.Command{Kind: &pb.Command_NodeRemove{NodeRemove: &pb.NodeRemove{Name: c.Name(f1)}}})
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("Internal.Apply from a plain client: %v, want PermissionDenied", err)
	}
	if got := c.Leader().Store().FSM().Revision(); got != rev || c.Leader().Store().FSM().Node(c.Name(f1)) == nil {
		t.Fatalf("the refused Apply changed the registry (revision %d -> %d)", rev, got)
	}
}
