package rpc_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/zrpcio/zrpc/internal/grpctest"
	"github.com/zrpcio/zrpc/internal/testwait"
	"github.com/zrpcio/zrpc/rpc"
	"github.com/zrpcio/zrpc/rpc/clientchain"
)

// stallingEcho is an echo server that, while stall is set, holds every call
// until the client cancels it, and counts the calls cancelled.
type stallingEcho struct {
	addr      string
	stall     atomic.Bool
	stalled   atomic.Int64
	cancelled atomic.Int64
}

func startStallingEcho(t *testing.T) *stallingEcho {
	e := &stallingEcho{}
	e.addr = grpctest.Serve(t, func(s *grpc.Server) {
		grpctest.RegisterEcho(s, func(ctx context.Context, in *wrapperspb.BytesValue) (*wrapperspb.BytesValue, error) {
			if e.stall.Load() {
				e.stalled.Add(1)
				<-ctx.Done()
				e.cancelled.Add(1)
				return nil, ctx.Err()
			}
			return wrapperspb.Bytes([]byte(e.addr)), nil
		})
	})
	return e
}

// A call stuck on a stalled instance is answered by the other one, within
// a caller deadline far shorter than the client's timeout, and the stuck
// attempt is cancelled.
func TestDialHedgesSlowCallsToAnotherInstance(t *testing.T) {
	slow, fast := startStallingEcho(t), startStallingEcho(t)
	reg := prometheus.NewRegistry()
	chain := clientchain.DefaultConfig()
	chain.Registerer = reg
	conn, err := rpc.Dial(context.Background(), "direct:///"+slow.addr+","+fast.addr,
		rpc.WithChain(chain), rpc.WithWaitReady(),
		rpc.WithIdempotent(grpctest.EchoMethod),
		rpc.WithHedging(clientchain.HedgeConfig{Idempotent: true, MinDelay: 5 * time.Millisecond}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	for range 50 { // learn the method's latency
		if err := conn.Invoke(context.Background(), grpctest.EchoMethod, wrapperspb.Bytes(nil), new(wrapperspb.BytesValue)); err != nil {
			t.Fatal(err)
		}
	}
	slow.stall.Store(true)
	// p2c_ewma sends a call to the stalled instance now and then (its cost
	// decays until it is tried again): call until a few did.
	deadline := time.Now().Add(10 * time.Second)
	for i := 0; slow.stalled.Load() < 3 && time.Now().Before(deadline); i++ {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		out := new(wrapperspb.BytesValue)
		err := conn.Invoke(ctx, grpctest.EchoMethod, wrapperspb.Bytes(nil), out)
		cancel()
		if err != nil {
			t.Fatalf("call %d with one instance stalled: %v", i, err)
		}
		if string(out.Value) != fast.addr {
			t.Fatalf("call %d answered by %q, want the fast instance %s", i, out.Value, fast.addr)
		}
	}
	if slow.stalled.Load() == 0 {
		t.Fatal("no call reached the stalled instance; the test proved nothing")
	}
	testwait.For(t, 10*time.Second, "the stalled instance to see its calls cancelled", func() bool {
		return slow.cancelled.Load() == slow.stalled.Load()
	})
	// Each stalled attempt was one of a hedged pair: the first (the hedge
	// won) or, when the fast instance was slower than the hedge delay, the
	// hedge (it lost).
	won, lost := hedgeCount(t, reg, "won"), hedgeCount(t, reg, "lost")
	if won+lost < float64(slow.stalled.Load()) {
		t.Fatalf("zrpc_client_hedges_total won %v + lost %v, want at least one per stalled attempt (%d)", won, lost, slow.stalled.Load())
	}
}

// hedgeCount returns zrpc_client_hedges_total for the echo method and outcome.
func hedgeCount(t *testing.T, reg *prometheus.Registry, outcome string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "zrpc_client_hedges_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["method"] == grpctest.EchoMethod && labels["outcome"] == outcome {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

func TestDialRefusesHedgingMethodsNotIdempotent(t *testing.T) {
	_, err := rpc.Dial(context.Background(), "direct:///127.0.0.1:1",
		rpc.WithHedging(clientchain.HedgeConfig{Methods: []string{"/kv.Store/Put"}}))
	if err == nil || !strings.Contains(err.Error(), `"/kv.Store/Put" is not idempotent`) {
		t.Fatalf("Dial = %v, want an error naming the method that is not idempotent", err)
	}
}

func TestDialConfigAppliesTheHedgingSection(t *testing.T) {
	cfg := rpc.DefaultClientConfig()
	cfg.Target = "direct:///127.0.0.1:1"
	cfg.Hedging = clientchain.HedgeConfig{Methods: []string{"/kv.Store/Put"}}
	_, err := rpc.DialConfig(context.Background(), cfg)
	if err == nil || !strings.Contains(err.Error(), `"/kv.Store/Put" is not idempotent`) {
		t.Fatalf("DialConfig = %v, want the hedging stage to refuse the method that is not idempotent", err)
	}
}

func TestClientConfigHedgingFromYAML(t *testing.T) {
	path := filepath.Join(t.TempDir(), "client.yaml")
	os.WriteFile(path, []byte(`Target: zrpc:///user.rpc
Hedging:
  Idempotent: true
  Methods: [/user.User/Get]
  MinDelay: 3ms
`), 0o600)
	cfg := rpc.DefaultClientConfig()
	if err := rpc.LoadConfig(path, &cfg); err != nil {
		t.Fatal(err)
	}
	if !cfg.Hedging.Idempotent || cfg.Hedging.MinDelay != 3*time.Millisecond || len(cfg.Hedging.Methods) != 1 || cfg.Hedging.Methods[0] != "/user.User/Get" {
		t.Fatalf("loaded Hedging %+v", cfg.Hedging)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	cfg.Hedging.MinDelay = -time.Millisecond
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "setting Hedging.MinDelay") {
		t.Fatalf("negative MinDelay: Validate = %v, want an error naming Hedging.MinDelay", err)
	}
}
