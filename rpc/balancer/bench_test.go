package balancer

import (
	"context"
	"strconv"
	"testing"

	"google.golang.org/grpc/balancer"
	"google.golang.org/grpc/metadata"
)

// keyedContexts returns n contexts with distinct hash keys.
func keyedContexts(n int) []context.Context {
	ctxs := make([]context.Context, n)
	for i := range ctxs {
		ctxs[i] = WithHashKey(context.Background(), "user-"+strconv.Itoa(i))
	}
	return ctxs
}

func BenchmarkPick(b *testing.B) {
	scs := newSubConns(8)
	ctxs := keyedContexts(64)
	for name, pb := range pickerBuilders() {
		b.Run(name, func(b *testing.B) {
			p := pb.Build(buildInfo(scs, 1, 2, 3, 4, 5, 6, 7, 8))
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				i := 0
				for pb.Next() {
					res, err := p.Pick(balancer.PickInfo{Ctx: ctxs[i%len(ctxs)]})
					if err != nil {
						b.Fatal(err)
					}
					if res.Done != nil {
						res.Done(balancer.DoneInfo{})
					}
					i++
				}
			})
		})
	}
}

func TestPickDoesNotAllocate(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector makes sync.Pool drop items")
	}
	scs := newSubConns(8)
	info := balancer.PickInfo{Ctx: WithHashKey(context.Background(), "user-1")}
	for name, pb := range pickerBuilders() {
		t.Run(name, func(t *testing.T) {
			p := pb.Build(buildInfo(scs, 1, 2, 3, 4, 5, 6, 7, 8))
			allocs := testing.AllocsPerRun(1000, func() {
				res, _ := p.Pick(info)
				if res.Done != nil {
					res.Done(balancer.DoneInfo{})
				}
			})
			if allocs != 0 {
				t.Fatalf("%v allocations per pick, want 0", allocs)
			}
		})
	}
}

func BenchmarkPickHashKeyFromMetadata(b *testing.B) {
	p := consistentHashPickerBuilder{}.Build(buildInfo(newSubConns(8)))
	ctx := metadata.AppendToOutgoingContext(context.Background(), HashKeyMetadataKey, "user-1")
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := p.Pick(balancer.PickInfo{Ctx: ctx}); err != nil {
				b.Fatal(err)
			}
		}
	})
}
