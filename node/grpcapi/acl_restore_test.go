package grpcapi_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"sync/atomic"
	"testing"
	"time"

	"github.com/zrpcio/zrpc/acl"
	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/internal/acltest"
	"github.com/zrpcio/zrpc/internal/testwait"
	"github.com/zrpcio/zrpc/node/grpcapi"
	"github.com/zrpcio/zrpc/raftstore"
	"github.com/zrpcio/zrpc/snapshot"
)

// restoringAgent restores a snapshot file by replacing the ACL state
// with one that lacks the restoring token: it deletes the token, as a
// restore of a file saved before the token was made does. It returns
// once the interceptors have checked the open streams against that
// change (and one more).
type restoringAgent struct {
	cl      *acltest.Cluster
	token   string // accessor id of the token the file lacks
	changed *atomic.Int64
}

func (restoringAgent) WriteSnapshot(context.Context, io.Writer) (snapshot.Header, error) {
	return snapshot.Header{}, errors.New("not saved here")
}

func (restoringAgent) CheckSnapshotFile(f io.ReadSeeker) (snapshot.Header, error) {
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return snapshot.Header{}, err
	}
	h, _, err := snapshot.Verify(f)
	return h, err
}

func (a restoringAgent) RestoreSnapshot(ctx context.Context, f io.ReadSeeker) (uint64, error) {
	if _, err := a.CheckSnapshotFile(f); err != nil {
		return 0, err
	}
	// The goroutine checking open streams asks for the next change's
	// channel before it checks them; once it asks after a second change,
	// it has checked them after the first.
	seen := a.changed.Load()
	rev, err := a.cl.Propose(ctx, &pb.Command{Kind: &pb.Command_AclTokenDelete{AclTokenDelete: &pb.ACLTokenDelete{AccessorId: a.token}}})
	if err != nil {
		return 0, err
	}
	if !testwait.Until(10*time.Second, func() bool { return a.changed.Load() > seen }) {
		return 0, errors.New("the interceptors did not see the restore's change of the ACL state")
	}
	if _, err := a.cl.Propose(ctx, &pb.Command{Kind: &pb.Command_AclPolicySet{AclPolicySet: &pb.ACLPolicySet{Policy: &pb.ACLPolicy{Name: "restored"}}}}); err != nil {
		return 0, err
	}
	if !testwait.Until(10*time.Second, func() bool { return a.changed.Load() > seen+1 }) {
		return 0, errors.New("the interceptors did not see the second change of the ACL state")
	}
	return rev, nil
}

// A snapshot restore whose file lacks the restoring token (a backup
// restored into a cluster bootstrapped anew) is answered with its
// result: the restore's own change of the ACL state does not turn the
// restore that was done into an error saying the token was deleted.
func TestSnapshotRestoreIsAnsweredWhenTheRestoredStateLacksItsToken(t *testing.T) {
	fsm := raftstore.NewFSM(16)
	cl := &acltest.Cluster{FSM: fsm}
	var changed atomic.Int64
	ic := acl.NewInterceptors(acl.InterceptorConfig{Resolver: acl.NewReplicaResolver(fsm),
		Changed: func() <-chan struct{} {
			changed.Add(1)
			return fsm.ACLChanged()
		}})
	agent := &restoringAgent{cl: cl, changed: &changed}
	srv := grpcapi.NewServer(grpcapi.ServerConfig{Metrics: noMetrics{}, Proofs: grpcapi.AgentProofs{Secret: func() []byte { return nil }}, ACL: ic},
		grpcapi.Services{
			ACL: grpcapi.NewACL(grpcapi.ACLConfig{Agent: "a1", Replica: fsm, Cluster: cl}),
			Snapshot: grpcapi.NewSnapshots(grpcapi.SnapshotConfig{Agent: "a1", Snapshots: agent, Cluster: cl,
				TempDir: t.TempDir(), RestorePattern: "restore-*.tmp"}),
		})
	cc := serveAgentAPI(t, srv)

	acls := pb.NewACLClient(cc)
	boot, err := acls.Bootstrap(testContext(t), &pb.ACLBootstrapRequest{})
	if err != nil {
		t.Fatal(err)
	}
	admin := withSecret(testContext(t), boot.Secret)
	if _, err := acls.PolicyCreate(admin, &pb.ACLPolicyCreateRequest{Policy: &pb.ACLPolicy{Name: "restorer", Rules: `acl { write }`}}); err != nil {
		t.Fatal(err)
	}
	tok, err := acls.TokenCreate(admin, &pb.ACLTokenCreateRequest{Policies: []string{"restorer"}})
	if err != nil {
		t.Fatal(err)
	}
	agent.token = tok.Token.AccessorId

	state := []byte("state")
	var file bytes.Buffer
	w, _ := snapshot.NewWriter(&file, snapshot.Header{Index: 3, Term: 1, Revision: 3, Size: uint64(len(state))})
	w.Write(state)
	w.Close()
	stream, err := pb.NewSnapshotClient(cc).Restore(withSecret(testContext(t), tok.Secret))
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&pb.SnapshotChunk{Data: file.Bytes()}); err != nil {
		t.Fatal(err)
	}
	resp, err := stream.CloseAndRecv()
	if err != nil {
		t.Fatalf("restore that removed its own token: %v; want its answer", err)
	}
	if resp.FileRevision != 3 || resp.GetHeader().GetRevision() == 0 {
		t.Fatalf("restore answered %v; want the file's revision 3 and the revision after it", resp)
	}
	if fsm.ACLToken(tok.Token.AccessorId) != nil {
		t.Fatal("the restoring token is still stored")
	}
}
