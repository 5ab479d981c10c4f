package ctlcmd

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/zrpcio/zrpc/api/apierr"
	"github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/client/clienttest"
	"github.com/zrpcio/zrpc/internal/testlog"
)

// fakeAgent is a fake agent with a small canned cluster, and the requests it
// received, for the zrpcctl tests.
type fakeAgent struct {
	*clienttest.Agent

	mu         sync.Mutex
	registered []*zrpcpb.Instance
	gets       []*zrpcpb.GetRequest
}

func startFake(t *testing.T) *fakeAgent {
	t.Helper()
	f := &fakeAgent{Agent: &clienttest.Agent{}}
	a := f.Agent
	header := &zrpcpb.ResponseHeader{Revision: 42, ServedBy: "node-1"}
	a.OnList = func(context.Context, *zrpcpb.ListRequest) (*zrpcpb.ListResponse, error) {
		return &zrpcpb.ListResponse{Header: header, Services: []*zrpcpb.ServiceSummary{
			{Name: "order.rpc", Instances: 1, Passing: 1},
			{Name: "user.rpc", Instances: 2, Passing: 1},
		}}, nil
	}
	a.OnGet = func(_ context.Context, req *zrpcpb.GetRequest) (*zrpcpb.GetResponse, error) {
		f.mu.Lock()
		f.gets = append(f.gets, req)
		f.mu.Unlock()
		if req.GetService() != "user.rpc" {
			return nil, apierr.ToStatus(fmt.Errorf("%w: service %s", apierr.ErrNotFound, req.GetService()))
		}
		return &zrpcpb.GetResponse{Header: header, Instances: fakeInstances()}, nil
	}
	a.OnRegister = func(_ context.Context, req *zrpcpb.RegisterRequest) (*zrpcpb.RegisterResponse, error) {
		f.mu.Lock()
		f.registered = append(f.registered, req.GetInstance())
		f.mu.Unlock()
		return &zrpcpb.RegisterResponse{Header: header, Instance: req.GetInstance()}, nil
	}
	a.OnDeregister = func(_ context.Context, req *zrpcpb.DeregisterRequest) (*zrpcpb.DeregisterResponse, error) {
		if req.GetId() != "user-1" {
			return nil, apierr.ToStatus(fmt.Errorf("%w: instance %s/%s", apierr.ErrNotFound, req.GetService(), req.GetId()))
		}
		return &zrpcpb.DeregisterResponse{Header: &zrpcpb.ResponseHeader{Revision: 43}}, nil
	}
	a.OnStatus = func(context.Context, *zrpcpb.StatusRequest) (*zrpcpb.StatusResponse, error) {
		return &zrpcpb.StatusResponse{
			Header: header, Node: "node-1", Leader: "node-2", LeaderAddress: "10.0.0.2:8401",
			Term: 3, RaftState: "Follower", ClusterId: "5f0c2a9e41d7b3c8a6e19f2d4b7c0e83", CommitIndex: 42, AppliedIndex: 41, LastLogIndex: 42,
			Build: "0.1.0", LastContact: durationpb.New(12 * time.Millisecond),
		}, nil
	}
	a.OnPeers = func(context.Context, *zrpcpb.PeersRequest) (*zrpcpb.PeersResponse, error) {
		return &zrpcpb.PeersResponse{Header: header, Peers: []*zrpcpb.Peer{
			{Id: "node-1", Address: "10.0.0.1:8401", Suffrage: "voter", LastIndex: 41},
			{Id: "node-2", Address: "10.0.0.2:8401", Suffrage: "voter", Leader: true, LastIndex: 42},
			{Id: "node-3", Address: "10.0.0.3:8401", Suffrage: "voter", Unreachable: true},
		}}, nil
	}
	a.OnMembers = func(context.Context, *zrpcpb.MembersRequest) (*zrpcpb.MembersResponse, error) {
		return &zrpcpb.MembersResponse{Header: header, Members: []*zrpcpb.Member{
			{Name: "node-1", Address: "10.0.0.1:8402", Status: "alive", Role: "voter", Build: "0.1.0", Zone: "eu-1a",
				StatusFor: durationpb.New(75*time.Second + 400*time.Millisecond)},
			{Name: "node-2", RaftAddress: "10.0.0.2:8401", Status: "unknown", Role: "voter"},
			{Name: "node-3", Address: "10.0.0.3:8402", Status: "alive", Role: "voter", Build: "0.1.0", Zone: "eu-1b",
				StatusFor: durationpb.New(time.Minute), ClockOffset: durationpb.New(-(time.Hour + 2*time.Second + 340*time.Millisecond))},
			{Name: "node-4", Address: "10.0.0.4:8402", Status: "alive", Role: "nonvoter", Build: "0.1.0", Zone: "eu-1b",
				StatusFor: durationpb.New(time.Minute), ClockOffset: durationpb.New(900 * time.Millisecond), Leaving: true},
			{Name: "node-5", Address: "10.0.0.5:8402", Status: "left", Role: "none", Build: "0.1.0", Zone: "eu-1b",
				StatusFor: durationpb.New(time.Second), Leaving: true},
		}}, nil
	}
	a.OnVersion = func(context.Context, *zrpcpb.VersionRequest) (*zrpcpb.VersionResponse, error) {
		return &zrpcpb.VersionResponse{Version: "9.9.9", Commit: "abc123", GoVersion: "go1.26"}, nil
	}
	a.OnWatch = func(_ *zrpcpb.WatchRequest, stream zrpcpb.Registry_WatchServer) error {
		insts := fakeInstances()
		snapshot := &zrpcpb.WatchResponse{Header: &zrpcpb.ResponseHeader{Revision: 10}, Snapshot: true}
		for _, in := range insts {
			snapshot.Events = append(snapshot.Events, &zrpcpb.Event{Type: zrpcpb.Event_PUT, Instance: in, Revision: 10})
		}
		change := &zrpcpb.WatchResponse{Header: &zrpcpb.ResponseHeader{Revision: 11}, Events: []*zrpcpb.Event{
			{Type: zrpcpb.Event_DELETE, Instance: insts[1], Revision: 11},
		}}
		for _, resp := range []*zrpcpb.WatchResponse{snapshot, change} {
			if err := stream.Send(resp); err != nil {
				return err
			}
		}
		<-stream.Context().Done()
		return nil
	}
	a.Start(t)
	return f
}

func fakeInstances() []*zrpcpb.Instance {
	return []*zrpcpb.Instance{
		{Id: "user-1", Service: "user.rpc", Address: "10.0.0.5:9000", Node: "node-1", Health: zrpcpb.Health_PASSING,
			Weight: 100, Zone: "eu-1a", Version: "1.2.0", Tags: []string{"canary", "v1"}},
		{Id: "user-2", Service: "user.rpc", Address: "10.0.0.6:9000", Node: "node-3", Health: zrpcpb.Health_CRITICAL, Weight: 100,
			HealthOutput: "agent failed: no gossip contact"},
	}
}

// runResult is what one zrpcctl run printed and returned.
type runResult struct {
	stdout, stderr string
	err            error
}

// runZrpcctl runs zrpcctl with args (and --addr addr, when addr is set).
func runZrpcctl(ctx context.Context, t *testing.T, addr string, args ...string) runResult {
	t.Helper()
	var out, errOut testlog.Buffer
	return runZrpcctlTo(ctx, t, &out, &errOut, addr, args...)
}

func runZrpcctlTo(ctx context.Context, t *testing.T, out, errOut *testlog.Buffer, addr string, args ...string) runResult {
	t.Helper()
	cmd := NewCommand()
	cmd.SetOut(out)
	cmd.SetErr(errOut)
	if addr != "" {
		args = append([]string{"--addr", addr}, args...)
	}
	cmd.SetArgs(args)
	err := cmd.ExecuteContext(ctx)
	return runResult{stdout: out.String(), stderr: errOut.String(), err: err}
}

// testContext returns a context that ends with the test or after 30s.
func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}
