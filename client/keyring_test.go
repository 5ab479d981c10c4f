package client

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc"

	"github.com/zrpcio/zrpc/api/apierr"
	"github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/client/clienttest"
	"github.com/zrpcio/zrpc/internal/grpctest"
)

// keyringAgent is a fake agent's Keyring service: it answers for agents
// a and b, and b fails every call.
type keyringAgent struct {
	zrpcpb.UnimplementedKeyringServer
	mu   sync.Mutex
	keys []string // keys of the calls received
}

func (k *keyringAgent) answer(key string) (*zrpcpb.KeyringResponse, error) {
	if key == "" {
		return nil, apierr.ToStatus(apierr.Invalid("key", "is empty"))
	}
	k.mu.Lock()
	k.keys = append(k.keys, key)
	k.mu.Unlock()
	return &zrpcpb.KeyringResponse{Agents: []*zrpcpb.KeyringAgentResult{
		{Agent: "a", Ok: true},
		{Agent: "b", Error: "key is not installed on this agent"},
	}}, nil
}

func (k *keyringAgent) List(context.Context, *zrpcpb.KeyringListRequest) (*zrpcpb.KeyringResponse, error) {
	return &zrpcpb.KeyringResponse{
		Agents: []*zrpcpb.KeyringAgentResult{{Agent: "a", Ok: true, PrimaryKey: "K1", Keys: []string{"K1"}}},
		Keys:   []*zrpcpb.KeyringKeyCount{{Key: "K1", Agents: 1, Primary: 1}},
	}, nil
}

func (k *keyringAgent) Install(_ context.Context, req *zrpcpb.KeyringKeyRequest) (*zrpcpb.KeyringResponse, error) {
	return k.answer(req.Key)
}

func (k *keyringAgent) Use(_ context.Context, req *zrpcpb.KeyringKeyRequest) (*zrpcpb.KeyringResponse, error) {
	return k.answer(req.Key)
}

func (k *keyringAgent) Remove(_ context.Context, req *zrpcpb.KeyringKeyRequest) (*zrpcpb.KeyringResponse, error) {
	return k.answer(req.Key)
}

func TestKeyringCallsFailWhenAnAgentFailed(t *testing.T) {
	k := &keyringAgent{}
	// The first endpoint is down: the call goes to the next.
	c := newTestClient(t, clienttest.ClosedAddr(t), grpctest.Serve(t, func(s *grpc.Server) { zrpcpb.RegisterKeyringServer(s, k) }))
	ctx := testContext(t)

	calls := map[string]func(context.Context, string) (*zrpcpb.KeyringResponse, error){
		"install": c.KeyringInstall, "use": c.KeyringUse, "remove": c.KeyringRemove,
	}
	for op, call := range calls {
		resp, err := call(ctx, "KEY-"+op)
		if !errors.Is(err, ErrKeyringIncomplete) || !strings.Contains(err.Error(), "1 of 2 agents (b)") {
			t.Errorf("%s with agent b failing: %v, want ErrKeyringIncomplete naming b", op, err)
		}
		if len(resp.GetAgents()) != 2 {
			t.Errorf("%s: the per-agent answer is not returned with the error: %v", op, resp)
		}
		if _, err := call(ctx, ""); !errors.Is(err, apierr.ErrInvalidArgument) {
			t.Errorf("%s with an empty key: %v, want ErrInvalidArgument", op, err)
		}
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if len(k.keys) != 3 || !strings.HasPrefix(k.keys[0], "KEY-") {
		t.Errorf("the agent received keys %v, want the three sent", k.keys)
	}

	resp, err := c.KeyringList(ctx)
	if err != nil || len(resp.GetKeys()) != 1 || resp.Keys[0].Agents != 1 {
		t.Fatalf("KeyringList: %v, %v", resp, err)
	}
}
