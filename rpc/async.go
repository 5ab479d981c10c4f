package rpc

import (
	"context"
	"sync"
)

// Go runs every fn concurrently and waits for all of them. The context
// they get is cancelled as soon as one fails, so a fan-out stops early; Go
// returns the first error (nil when all succeed).
func Go(ctx context.Context, fns ...func(ctx context.Context) error) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var (
		wg    sync.WaitGroup
		once  sync.Once
		first error
	)
	for _, fn := range fns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := fn(ctx); err != nil {
				once.Do(func() {
					first = err
					cancel(err)
				})
			}
		}()
	}
	wg.Wait()
	return first
}

// Future is the pending result of a call started with Async.
type Future[T any] struct {
	done chan struct{}
	val  T
	err  error
}

// Async starts fn in a goroutine and returns its future; cancel ctx to stop
// the call.
func Async[T any](ctx context.Context, fn func(ctx context.Context) (T, error)) *Future[T] {
	f := &Future[T]{done: make(chan struct{})}
	go func() {
		defer close(f.done)
		f.val, f.err = fn(ctx)
	}()
	return f
}

// Wait returns the result once the call has finished, or ctx's error if ctx
// ends first (the call goes on until its own context ends).
func (f *Future[T]) Wait(ctx context.Context) (T, error) {
	select {
	case <-f.done:
		return f.val, f.err
	case <-ctx.Done():
		var zero T
		return zero, ctx.Err()
	}
}
