package raftstore

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protodelim"
	"google.golang.org/protobuf/proto"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/snapshot"
)

func aclToken(accessor, secret string, policies ...string) *pb.ACLToken {
	h := sha256.Sum256([]byte(secret))
	return &pb.ACLToken{AccessorId: accessor, SecretHash: h[:], Policies: policies}
}

func aclBootstrapCmd(t *pb.ACLToken) *pb.Command {
	return &pb.Command{Kind: &pb.Command_AclBootstrap{AclBootstrap: &pb.ACLBootstrap{Token: t}}}
}

func aclPolicyCmd(name, rules string) *pb.Command {
	return &pb.Command{Kind: &pb.Command_AclPolicySet{AclPolicySet: &pb.ACLPolicySet{Policy: &pb.ACLPolicy{Name: name, Rules: rules}}}}
}

func aclPolicyDeleteCmd(name string) *pb.Command {
	return &pb.Command{Kind: &pb.Command_AclPolicyDelete{AclPolicyDelete: &pb.ACLPolicyDelete{Name: name}}}
}

func aclTokenCmd(t *pb.ACLToken) *pb.Command {
	return &pb.Command{Kind: &pb.Command_AclTokenSet{AclTokenSet: &pb.ACLTokenSet{Token: t}}}
}

func aclTokenDeleteCmd(id string) *pb.Command {
	return &pb.Command{Kind: &pb.Command_AclTokenDelete{AclTokenDelete: &pb.ACLTokenDelete{AccessorId: id}}}
}

func hashOf(secret string) []byte {
	h := sha256.Sum256([]byte(secret))
	return h[:]
}

func TestFSMACLBootstrapAppliesOnce(t *testing.T) {
	d := newFSMDriver(t, 16)
	if d.fsm.ACLBootstrapped() {
		t.Fatal("a new FSM is bootstrapped")
	}
	rev := d.mustApply(aclBootstrapCmd(aclToken("a1", "root", ManagementPolicy)))
	if !d.fsm.ACLBootstrapped() {
		t.Fatal("not bootstrapped after the bootstrap entry")
	}
	tok := d.fsm.ACLTokenByHash(hashOf("root"))
	if tok.GetAccessorId() != "a1" || tok.CreateRevision != rev || tok.Created != int64(rev)*1000 {
		t.Fatalf("token by hash = %v, want a1 created at revision %d", tok, rev)
	}
	_, err := d.apply(aclBootstrapCmd(aclToken("a2", "root2", ManagementPolicy)))
	if !errors.Is(err, ErrFailedPrecondition) || !strings.Contains(err.Error(), "ACLs already bootstrapped") {
		t.Fatalf("second bootstrap: %v, want FailedPrecondition \"ACLs already bootstrapped\"", err)
	}
	if d.fsm.ACLToken("a2") != nil || d.fsm.ACLTokenByHash(hashOf("root2")) != nil {
		t.Fatal("the refused bootstrap stored its token")
	}
}

// A bootstrap or token create applied again with the same secret and
// policies (a client's retry after a lost answer) changes nothing and
// succeeds; a bootstrap with another secret is still refused.
func TestFSMACLRepeatedCreateWithTheSameSecretIsTheSameWrite(t *testing.T) {
	d := newFSMDriver(t, 16)
	d.mustApply(aclBootstrapCmd(aclToken("a1", "root", ManagementPolicy)))
	if _, err := d.apply(aclBootstrapCmd(aclToken("a1", "root", ManagementPolicy))); err != nil {
		t.Fatalf("bootstrap repeated with its secret: %v, want success", err)
	}
	if _, err := d.apply(aclBootstrapCmd(aclToken("a2", "other", ManagementPolicy))); !errors.Is(err, ErrFailedPrecondition) {
		t.Fatalf("bootstrap with another secret: %v, want FailedPrecondition", err)
	}
	d.mustApply(aclPolicyCmd("svc-user", `service "user." { write }`))
	rev := d.mustApply(aclTokenCmd(aclToken("t1", "s1", "svc-user")))
	if _, err := d.apply(aclTokenCmd(aclToken("t1", "s1", "svc-user"))); err != nil {
		t.Fatalf("token create repeated with its secret: %v, want success", err)
	}
	if _, err := d.apply(aclTokenCmd(aclToken("t2", "s1", "svc-user"))); err != nil {
		t.Fatalf("token create repeated with its secret by an agent naming another accessor: %v, want success", err)
	}
	toks := d.fsm.ACLTokens()
	if len(toks) != 2 || d.fsm.ACLToken("t1").GetCreateRevision() != rev || d.fsm.ACLToken("t2") != nil {
		t.Fatalf("tokens after repeated creates = %v, want the bootstrap token and t1 of revision %d", toks, rev)
	}
}

func TestFSMACLRefusesMalformedCommands(t *testing.T) {
	for _, tc := range []struct {
		name  string
		cmd   *pb.Command
		field string
	}{
		{"bootstrap without token", aclBootstrapCmd(nil), "acl_bootstrap.token"},
		{"bootstrap with other policies", aclBootstrapCmd(aclToken("a", "s", "p")), "acl_bootstrap.token.policies"},
		{"token without hash", aclTokenCmd(&pb.ACLToken{AccessorId: "a"}), "acl_token_set.token.secret_hash"},
		{"token without accessor", aclTokenCmd(aclToken("", "s")), "acl_token_set.token.accessor_id"},
		{"policy without name", aclPolicyCmd("", ""), "acl_policy_set.policy.name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := newFSMDriver(t, 16)
			_, err := d.apply(tc.cmd)
			if !errors.Is(err, ErrInvalidArgument) || !strings.Contains(err.Error(), tc.field) {
				t.Fatalf("apply: %v, want InvalidArgument naming %s", err, tc.field)
			}
			if d.fsm.ACLBootstrapped() || len(d.fsm.ACLTokens()) > 0 || len(d.fsm.ACLPolicies()) > 0 {
				t.Fatal("a refused command changed the ACL state")
			}
		})
	}
}

func TestFSMACLTokensNeedExistingPoliciesAndUniqueSecrets(t *testing.T) {
	d := newFSMDriver(t, 16)
	if _, err := d.apply(aclTokenCmd(aclToken("a1", "s1", "svc-user"))); !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), `"svc-user"`) {
		t.Fatalf("token naming a missing policy: %v, want NotFound naming it", err)
	}
	d.mustApply(aclPolicyCmd("svc-user", `service "user." { write }`))
	if _, err := d.apply(aclPolicyCmd("svc-user", "")); !errors.Is(err, ErrAlreadyExists) {
		t.Fatalf("second policy of one name: %v, want AlreadyExists", err)
	}
	if _, err := d.apply(aclPolicyCmd(ManagementPolicy, "")); !errors.Is(err, ErrAlreadyExists) {
		t.Fatalf("policy named %s: %v, want AlreadyExists", ManagementPolicy, err)
	}
	d.mustApply(aclTokenCmd(aclToken("a1", "s1", "svc-user")))
	if _, err := d.apply(aclTokenCmd(aclToken("a2", "s1", ManagementPolicy))); !errors.Is(err, ErrAlreadyExists) {
		t.Fatalf("token with a taken secret and other policies: %v, want AlreadyExists", err)
	}
	if _, err := d.apply(aclTokenCmd(aclToken("a1", "s2"))); !errors.Is(err, ErrAlreadyExists) {
		t.Fatalf("token with a taken accessor id: %v, want AlreadyExists", err)
	}
	d.mustApply(aclTokenDeleteCmd("a1"))
	if d.fsm.ACLTokenByHash(hashOf("s1")) != nil || d.fsm.ACLToken("a1") != nil {
		t.Fatal("a deleted token is still found")
	}
	if _, err := d.apply(aclTokenDeleteCmd("a1")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("deleting a deleted token: %v, want NotFound", err)
	}
}

// A policy named by a token is not deleted: the delete is refused, naming
// the tokens, and succeeds once they are gone.
func TestFSMACLPolicyDeleteIsRefusedWhileATokenNamesIt(t *testing.T) {
	d := newFSMDriver(t, 16)
	d.mustApply(aclPolicyCmd("svc-user", `service "user." { write }`))
	d.mustApply(aclTokenCmd(aclToken("a1", "s1", "svc-user")))
	_, err := d.apply(aclPolicyDeleteCmd("svc-user"))
	if !errors.Is(err, ErrFailedPrecondition) || !strings.Contains(err.Error(), "a1") {
		t.Fatalf("deleting a policy token a1 names: %v, want FailedPrecondition naming a1", err)
	}
	if d.fsm.ACLPolicy("svc-user") == nil {
		t.Fatal("the refused delete removed the policy")
	}
	d.mustApply(aclTokenDeleteCmd("a1"))
	d.mustApply(aclPolicyDeleteCmd("svc-user"))
	if d.fsm.ACLPolicy("svc-user") != nil {
		t.Fatal("policy still there after its delete")
	}
	if _, err := d.apply(aclPolicyDeleteCmd("svc-user")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("deleting a deleted policy: %v, want NotFound", err)
	}
}

func TestFSMACLStateSurvivesSnapshotRestore(t *testing.T) {
	d := newFSMDriver(t, 16)
	d.mustApply(aclBootstrapCmd(aclToken("a0", "root", ManagementPolicy)))
	d.mustApply(aclPolicyCmd("svc-user", `service "user." { write }`))
	d.mustApply(aclPolicyCmd("models", `blob "models/" { read }`))
	d.mustApply(aclTokenCmd(aclToken("a1", "s1", "svc-user", "models")))
	data := snapshotBytes(t, d.fsm)

	restored := NewFSM(16)
	if err := restored.Restore(io.NopCloser(bytes.NewReader(data))); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	if !restored.ACLBootstrapped() {
		t.Fatal("restored replica is not bootstrapped")
	}
	wantP, gotP := d.fsm.ACLPolicies(), restored.ACLPolicies()
	wantT, gotT := d.fsm.ACLTokens(), restored.ACLTokens()
	if len(gotP) != len(wantP) || len(gotT) != len(wantT) {
		t.Fatalf("restored %d policies and %d tokens, want %d and %d", len(gotP), len(gotT), len(wantP), len(wantT))
	}
	for i := range wantP {
		if !proto.Equal(wantP[i], gotP[i]) {
			t.Errorf("policy %d: restored %v, want %v", i, gotP[i], wantP[i])
		}
	}
	for i := range wantT {
		if !proto.Equal(wantT[i], gotT[i]) {
			t.Errorf("token %d: restored %v, want %v", i, gotT[i], wantT[i])
		}
	}
	if restored.ACLTokenByHash(hashOf("s1")).GetAccessorId() != "a1" {
		t.Fatal("restored replica does not find a token by its secret's hash")
	}
	l := commandLog(t, d.next, aclBootstrapCmd(aclToken("a9", "again", ManagementPolicy)))
	if err := responseError(t, restored.Apply(l)); !errors.Is(err, ErrFailedPrecondition) {
		t.Fatalf("bootstrap after restore: %v, want FailedPrecondition", err)
	}
	if bytes.Contains(data, []byte("root")) || bytes.Contains(data, []byte("s1\x00")) {
		t.Fatal("the snapshot holds a secret")
	}
}

// snapshotFormatOf reads the format of a snapshot's header.
func snapshotFormatOf(t *testing.T, data []byte) uint32 {
	t.Helper()
	br := bufio.NewReader(bytes.NewReader(data[len(snapshot.StateMagic):]))
	var hdr pb.SnapshotHeader
	if err := protodelim.UnmarshalFrom(br, &hdr); err != nil {
		t.Fatal(err)
	}
	return hdr.Format
}

// A snapshot without ACL state keeps the format agents before ACLs read,
// and restoring it (as restoring any snapshot from before ACLs) leaves no
// ACL state behind.
func TestFSMSnapshotWithoutACLStateRestoresWithNone(t *testing.T) {
	plain := newFSMDriver(t, 16)
	plain.mustApply(registerCmd(testInstance("user.rpc", "i1", "n1")))
	old := snapshotBytes(t, plain.fsm)
	if f := snapshotFormatOf(t, old); f != snapshot.StateFormat {
		t.Fatalf("snapshot without ACL state has format %d, want %d", f, snapshot.StateFormat)
	}

	d := newFSMDriver(t, 16)
	d.mustApply(aclBootstrapCmd(aclToken("a0", "root", ManagementPolicy)))
	d.mustApply(aclPolicyCmd("p", ""))
	if f := snapshotFormatOf(t, snapshotBytes(t, d.fsm)); f != snapshot.StateFormatACL {
		t.Fatalf("snapshot with ACL state has format %d, want %d", f, snapshot.StateFormatACL)
	}
	if err := d.fsm.Restore(io.NopCloser(bytes.NewReader(old))); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	if d.fsm.ACLBootstrapped() || len(d.fsm.ACLPolicies()) > 0 || d.fsm.ACLTokenByHash(hashOf("root")) != nil {
		t.Fatal("ACL state left after restoring a snapshot without any")
	}
	if d.fsm.Instance("user.rpc", "i1") == nil {
		t.Fatal("the snapshot's registry was not restored")
	}
}

// TestFSMACLChangedFiresAtEachChange: the channel ACLChanged returns is
// closed when an ACL write applies or a snapshot is restored, and not by
// a refused ACL write or a registry write.
func TestFSMACLChangedFiresAtEachChange(t *testing.T) {
	d := newFSMDriver(t, 16)
	closed := func(ch <-chan struct{}) bool {
		select {
		case <-ch:
			return true
		default:
			return false
		}
	}
	steps := []struct {
		what   string
		do     func()
		change bool
	}{
		{"bootstrap", func() { d.mustApply(aclBootstrapCmd(aclToken("a0", "root", ManagementPolicy))) }, true},
		{"a registration", func() { d.mustApply(registerCmd(testInstance("api", "1", "n1"))) }, false},
		{"a refused second bootstrap", func() { d.apply(aclBootstrapCmd(aclToken("a2", "other", ManagementPolicy))) }, false},
		{"a policy", func() { d.mustApply(aclPolicyCmd("p", `service "" { read }`)) }, true},
		{"a token", func() { d.mustApply(aclTokenCmd(aclToken("a1", "s1", "p"))) }, true},
		{"a refused delete of an unknown token", func() { d.apply(aclTokenDeleteCmd("nobody")) }, false},
		{"a token deleted", func() { d.mustApply(aclTokenDeleteCmd("a1")) }, true},
		{"a snapshot restored", func() {
			if err := d.fsm.Restore(io.NopCloser(bytes.NewReader(snapshotBytes(t, d.fsm)))); err != nil {
				t.Fatal(err)
			}
		}, true},
	}
	for _, s := range steps {
		ch := d.fsm.ACLChanged()
		s.do()
		if closed(ch) != s.change {
			t.Fatalf("after %s: channel closed %v, want %v", s.what, closed(ch), s.change)
		}
	}
}
