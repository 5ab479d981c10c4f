package node

import (
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
)

// TestSessionRemovedByTheClusterEndsItsStream: when the cluster removes a
// session whose stream this agent still serves (the leader reaped the
// agent while it was unreachable), the agent ends the stream with
// FailedPrecondition, so that its process opens a new session and
// registers again, instead of serving a session that no longer exists.
func TestSessionRemovedByTheClusterEndsItsStream(t *testing.T) {
	n := startNode(t, testConfig(t))
	_, c := dial(t, n.GRPCAddr())
	stream, err := c.Session(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&pb.SessionRequest{Seq: 1, Kind: &pb.SessionRequest_Open{Open: &pb.SessionOpen{Owner: "test"}}}); err != nil {
		t.Fatal(err)
	}
	open, err := stream.Recv()
	if err != nil || open.Session == "" {
		t.Fatalf("open: %v, %v", open, err)
	}
	if err := stream.Send(&pb.SessionRequest{Seq: 2, Kind: &pb.SessionRequest_Register{
		Register: &pb.RegisterRequest{Instance: inst("sess.rpc", "s1", "127.0.0.1:9001")}}}); err != nil {
		t.Fatal(err)
	}
	if r, err := stream.Recv(); err != nil || r.Error != nil {
		t.Fatalf("register: %v, %v", r, err)
	}

	// What the leader's reap writes: the agent's node goes, with its
	// sessions and instances.
	if _, err := n.Store().Apply(ctxT(t), &pb.Command{Kind: &pb.Command_NodeRemove{NodeRemove: &pb.NodeRemove{Name: n.Name()}}}); err != nil {
		t.Fatal(err)
	}
	ended := make(chan error, 1)
	go func() {
		for {
			if _, err := stream.Recv(); err != nil {
				ended <- err
				return
			}
		}
	}()
	select {
	case err = <-ended:
	case <-time.After(8 * time.Second):
		t.Fatal("the stream of a removed session was not ended")
	}
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(status.Convert(err).Message(), "register again") {
		t.Fatalf("stream ended with %v, want FailedPrecondition telling the process to register again", err)
	}
	// The agent does not write anything more for the removed session.
	if got := len(getInstances(t, c, "sess.rpc")); got != 0 {
		t.Fatalf("%d instances left", got)
	}
}
