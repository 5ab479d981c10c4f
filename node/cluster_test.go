package node_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/testcluster"
)

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// roles returns NAME:ROLE:STATUS of every member as agent i sees them.
func roles(t testing.TB, c *testcluster.Cluster, i int) map[string]string {
	resp, err := c.Status(i).Members(ctxT(t), &pb.MembersRequest{})
	if err != nil {
		return nil
	}
	out := map[string]string{}
	for _, m := range resp.Members {
		out[m.Name] = m.Role + "/" + m.Status
	}
	return out
}

func countRoles(m map[string]string) (voters, nonvoters int) {
	for _, r := range m {
		switch r {
		case "leader/alive", "voter/alive":
			voters++
		case "nonvoter/alive":
			nonvoters++
		}
	}
	return
}

func TestJoinThreeAndFiveAgents(t *testing.T) {
	for _, tc := range []struct{ agents, voters, nonvoters int }{{3, 3, 0}, {5, 3, 2}} {
		t.Run(fmt.Sprintf("%d agents", tc.agents), func(t *testing.T) {
			c := testcluster.New(t, tc.agents)
			for i := 0; i < tc.agents; i++ {
				c.WaitFor(20*time.Second, fmt.Sprintf("agent %d sees %d voters + %d nonvoters", i, tc.voters, tc.nonvoters), func() bool {
					v, nv := countRoles(roles(t, c, i))
					return v == tc.voters && nv == tc.nonvoters
				})
			}
			// Any agent takes a write; every agent answers the same.
			if _, err := c.Registry(tc.agents-1).Register(ctxT(t), &pb.RegisterRequest{Instance: &pb.Instance{Service: "user.rpc", Id: "u1", Address: "127.0.0.1:9001"}}); err != nil {
				t.Fatal(err)
			}
			for i := 0; i < tc.agents; i++ {
				c.WaitFor(10*time.Second, fmt.Sprintf("agent %d lists user.rpc", i), func() bool {
					resp, err := c.Registry(i).List(ctxT(t), &pb.ListRequest{Consistency: pb.Consistency_STALE})
					return err == nil && len(resp.Services) == 1 && resp.Services[0].Instances == 1
				})
			}
		})
	}
}
