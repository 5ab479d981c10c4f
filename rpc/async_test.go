package rpc_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/zrpcio/zrpc/rpc"
)

func TestGoReturnsFirstErrorAndCancelsTheRest(t *testing.T) {
	boom := errors.New("boom")
	var cancelled atomic.Int64
	err := rpc.Go(context.Background(),
		func(ctx context.Context) error { return boom },
		func(ctx context.Context) error {
			select {
			case <-ctx.Done():
				cancelled.Add(1)
				return ctx.Err()
			case <-time.After(10 * time.Second):
				return nil
			}
		},
	)
	if !errors.Is(err, boom) {
		t.Fatalf("Go = %v, want boom", err)
	}
	if cancelled.Load() != 1 {
		t.Fatal("the slow call was not cancelled after the first failure")
	}
	if err := rpc.Go(context.Background(), func(context.Context) error { return nil }, func(context.Context) error { return nil }); err != nil {
		t.Fatalf("all succeed: %v", err)
	}
}

func TestAsyncFutureWaitHonoursContext(t *testing.T) {
	f := rpc.Async(context.Background(), func(context.Context) (int, error) { return 42, nil })
	if v, err := f.Wait(context.Background()); v != 42 || err != nil {
		t.Fatalf("Wait = %d, %v", v, err)
	}
	block := make(chan struct{})
	defer close(block)
	slow := rpc.Async(context.Background(), func(context.Context) (int, error) { <-block; return 1, nil })
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := slow.Wait(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Wait on a cancelled context = %v", err)
	}
}

// Fan out to two services and combine the answers; the first failure
// cancels the other call.
func ExampleGo() {
	var user, orders string
	err := rpc.Go(context.Background(),
		func(ctx context.Context) error { user = "ada"; return nil },        // e.g. userClient.GetUserInfo(ctx, ...)
		func(ctx context.Context) error { orders = "3 orders"; return nil }, // e.g. orderClient.List(ctx, ...)
	)
	fmt.Println(user, orders, err)
	// Output: ada 3 orders <nil>
}
