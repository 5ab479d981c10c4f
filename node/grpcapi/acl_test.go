package grpcapi

import (
	"errors"
	"strings"
	"testing"

	"github.com/zrpcio/zrpc/acl"
	"github.com/zrpcio/zrpc/api/apierr"
	pb "github.com/zrpcio/zrpc/api/zrpcpb"
)

func TestACLForwardedCommandsAreValidated(t *testing.T) {
	tok, _, _ := acl.NewToken("p")
	good := &pb.ACLToken{AccessorId: tok.AccessorID, SecretHash: tok.SecretHash[:], Policies: tok.Policies}
	for _, tc := range []struct {
		cmd   *pb.Command
		field string
	}{
		{&pb.Command{Kind: &pb.Command_AclPolicySet{AclPolicySet: &pb.ACLPolicySet{Policy: &pb.ACLPolicy{Name: "p", Rules: "nope"}}}}, "acl_policy_set.policy.rules"},
		{&pb.Command{Kind: &pb.Command_AclTokenSet{AclTokenSet: &pb.ACLTokenSet{Token: &pb.ACLToken{AccessorId: good.AccessorId, Policies: []string{"p"}}}}}, "acl_token_set.token.secret_hash"},
		{&pb.Command{Kind: &pb.Command_AclTokenDelete{AclTokenDelete: &pb.ACLTokenDelete{AccessorId: "zz"}}}, "acl_token_delete.accessor_id"},
	} {
		err := validateForwarded(tc.cmd, fakeMembership{})
		if !errors.Is(err, apierr.ErrInvalidArgument) || !strings.Contains(err.Error(), tc.field) {
			t.Errorf("forwarded %v: %v, want InvalidArgument naming %s", tc.cmd, err, tc.field)
		}
	}
	ok := &pb.Command{Kind: &pb.Command_AclTokenSet{AclTokenSet: &pb.ACLTokenSet{Token: good}}}
	if err := validateForwarded(ok, fakeMembership{}); err != nil {
		t.Errorf("a valid forwarded token: %v", err)
	}
}
