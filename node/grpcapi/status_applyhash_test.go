package grpcapi

import (
	"context"
	"testing"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
)

// chainReplicaFake is replicaFake whose replica knows its apply hash or
// knows none (restored from a snapshot of an older build).
type chainReplicaFake struct {
	replicaFake
	known bool
}

func (f chainReplicaFake) ApplyHashChainKnown() bool { return f.known }

// Status tells a replica that knows no apply hash apart from one asked
// for a revision it does not remember: apply_hash_known is false for
// both.
func TestStatusSaysWhetherTheReplicaKnowsItsApplyHash(t *testing.T) {
	for _, known := range []bool{true, false} {
		s := NewStatus(StatusConfig{Agent: "n1", Replica: chainReplicaFake{known: known}, Status: &statusFake{leader: "n2"}})
		resp, err := s.Status(context.Background(), &pb.StatusRequest{ApplyHashAt: 3})
		if err != nil {
			t.Fatal(err)
		}
		if resp.ApplyHashChainKnown != known || resp.ApplyHashKnown {
			t.Errorf("replica that knows its apply hash: %v; Status says apply_hash_chain_known %v, apply_hash_known %v; want %v, false",
				known, resp.ApplyHashChainKnown, resp.ApplyHashKnown, known)
		}
	}
}
