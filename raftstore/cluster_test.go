package raftstore

import (
	"bytes"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
)

func clusterInitCmd(c *pb.ClusterInit) *pb.Command {
	return &pb.Command{Kind: &pb.Command_ClusterInit{ClusterInit: c}}
}

func mustClusterInit(t *testing.T) *pb.ClusterInit {
	t.Helper()
	c, err := NewClusterInit()
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestFSMClusterInitIsWrittenOnce(t *testing.T) {
	d := newFSMDriver(t, 16)
	if d.fsm.ClusterID() != "" || d.fsm.ClusterSecret() != nil {
		t.Fatal("a new FSM has a cluster identity")
	}
	select {
	case <-d.fsm.ClusterIDKnown():
		t.Fatal("ClusterIDKnown is closed before any ClusterInit")
	default:
	}
	first := mustClusterInit(t)
	d.mustApply(clusterInitCmd(first))
	if d.fsm.ClusterID() != first.ClusterId || !bytes.Equal(d.fsm.ClusterSecret(), first.Secret) {
		t.Fatalf("after ClusterInit: id %q, want %q (secret equal: %v)", d.fsm.ClusterID(), first.ClusterId, bytes.Equal(d.fsm.ClusterSecret(), first.Secret))
	}
	select {
	case <-d.fsm.ClusterIDKnown():
	default:
		t.Fatal("ClusterIDKnown is not closed after ClusterInit")
	}
	if _, err := d.apply(clusterInitCmd(mustClusterInit(t))); !errors.Is(err, ErrAlreadyExists) {
		t.Fatalf("second ClusterInit: %v, want ErrAlreadyExists", err)
	}
	if d.fsm.ClusterID() != first.ClusterId || !bytes.Equal(d.fsm.ClusterSecret(), first.Secret) {
		t.Fatal("a refused second ClusterInit changed the cluster identity")
	}
}

func TestFSMClusterInitRejectsBadFields(t *testing.T) {
	good := mustClusterInit(t)
	for _, tc := range []struct {
		name  string
		init  *pb.ClusterInit
		field string
	}{
		{"empty", &pb.ClusterInit{}, "cluster_id"},
		{"id not hex", &pb.ClusterInit{ClusterId: "not-hex-not-hex-not-hex-not-hex!", Secret: good.Secret}, "cluster_id"},
		{"short id", &pb.ClusterInit{ClusterId: "abcd", Secret: good.Secret}, "cluster_id"},
		{"short secret", &pb.ClusterInit{ClusterId: good.ClusterId, Secret: []byte("short")}, "secret"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := newFSMDriver(t, 16)
			_, err := d.apply(clusterInitCmd(tc.init))
			if !errors.Is(err, ErrInvalidArgument) || !bytes.Contains([]byte(err.Error()), []byte(tc.field)) {
				t.Fatalf("apply: %v, want InvalidArgument naming %s", err, tc.field)
			}
			if d.fsm.ClusterID() != "" {
				t.Fatal("a rejected ClusterInit was stored")
			}
		})
	}
}

func TestFSMClusterInitSurvivesSnapshot(t *testing.T) {
	d := newFSMDriver(t, 16)
	init := mustClusterInit(t)
	d.mustApply(clusterInitCmd(init))
	data := snapshotBytes(t, d.fsm)

	restored := NewFSM(16)
	if err := restored.Restore(io.NopCloser(bytes.NewReader(data))); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	if restored.ClusterID() != init.ClusterId || !bytes.Equal(restored.ClusterSecret(), init.Secret) {
		t.Fatalf("restored id %q, want %q (secret equal: %v)", restored.ClusterID(), init.ClusterId, bytes.Equal(restored.ClusterSecret(), init.Secret))
	}
	select {
	case <-restored.ClusterIDKnown():
	default:
		t.Fatal("ClusterIDKnown is not closed after restoring a snapshot with a cluster identity")
	}
	// The restored replica refuses a second identity like the original.
	l := commandLog(t, d.next, clusterInitCmd(mustClusterInit(t)))
	if err := responseError(t, restored.Apply(l)); !errors.Is(err, ErrAlreadyExists) {
		t.Fatalf("ClusterInit after restore: %v, want ErrAlreadyExists", err)
	}
}

// TestFSMRenewedIdentitySurvivesSnapshot: outage recovery's new identity
// (renewIdentity) keeps the ids before it, oldest first, in the snapshot;
// a snapshot whose recovered_from is not a list of cluster ids is refused
// and leaves the replica as it was; a ClusterInit command cannot set it.
func TestFSMRenewedIdentitySurvivesSnapshot(t *testing.T) {
	idless := newFSMDriver(t, 16)
	if prev, next, err := idless.fsm.renewIdentity(); err != nil || prev != "" || !isClusterID(next) || idless.fsm.ClusterID() != next ||
		len(idless.fsm.ClusterSecret()) == 0 || len(idless.fsm.RecoveredFrom()) != 0 {
		t.Fatalf("renewIdentity without an identity: %q -> %q (%v), FSM at %q recovered from %v; want a new id and secret, recovered from nothing",
			prev, next, err, idless.fsm.ClusterID(), idless.fsm.RecoveredFrom())
	}
	d := newFSMDriver(t, 16)
	first := mustClusterInit(t)
	first.RecoveredFrom = []string{"00112233445566778899aabbccddeeff"}
	d.mustApply(clusterInitCmd(first))
	if got := d.fsm.RecoveredFrom(); len(got) != 0 {
		t.Fatalf("a ClusterInit command set recovered_from: %v", got)
	}
	var ids []string
	for range 2 {
		prev, next, err := d.fsm.renewIdentity()
		if err != nil || prev == next || next != d.fsm.ClusterID() {
			t.Fatalf("renewIdentity: %q -> %q (%v), FSM at %q", prev, next, err, d.fsm.ClusterID())
		}
		ids = append(ids, prev)
	}
	if ids[0] != first.ClusterId || bytes.Equal(d.fsm.ClusterSecret(), first.Secret) {
		t.Fatalf("renewed from %q (want %q), secret kept: %v", ids[0], first.ClusterId, bytes.Equal(d.fsm.ClusterSecret(), first.Secret))
	}
	data := snapshotBytes(t, d.fsm)
	restored := NewFSM(16)
	if err := restored.Restore(io.NopCloser(bytes.NewReader(data))); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	if restored.ClusterID() != d.fsm.ClusterID() || !slices.Equal(restored.RecoveredFrom(), ids) {
		t.Fatalf("restored %q recovered from %v, want %q from %v", restored.ClusterID(), restored.RecoveredFrom(), d.fsm.ClusterID(), ids)
	}

	bad := NewFSM(16)
	bad.cluster.set(&pb.ClusterInit{ClusterId: first.ClusterId, Secret: first.Secret, RecoveredFrom: []string{"not a cluster id"}})
	if err := restored.Restore(io.NopCloser(bytes.NewReader(snapshotBytes(t, bad)))); !errors.Is(err, ErrInvalidArgument) ||
		!strings.Contains(err.Error(), "recovered_from") {
		t.Fatalf("restore of a snapshot with a bad recovered_from: %v, want InvalidArgument naming it", err)
	}
	if restored.ClusterID() != d.fsm.ClusterID() {
		t.Fatal("a refused snapshot changed the replica's identity")
	}
}
