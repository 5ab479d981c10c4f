package clienttest

import (
	"context"
	"fmt"
	"strings"
	"sync"

	"github.com/zrpcio/zrpc/api/zrpcpb"
)

// LargeInstanceLimit is the max_instance_metadata_bytes an agent needs to
// accept LargeInstance (the default, 16 KiB, is less). The default limits
// allow services of 160 MiB (10,000 instances of 16 KiB); larger instances
// let a test pass the 64 MiB message cap with fewer registrations.
const LargeInstanceLimit = 64 << 10

// LargeInstance returns instance i of service with 48 metadata values of
// 1 KiB and 32 tags of 128 bytes: about 54 KB, within the registry's limits
// on each field but above its default limit per instance (see
// LargeInstanceLimit). 1,300 of them make a service of more than 64 MiB,
// too large for one gRPC message.
func LargeInstance(service string, i int) *zrpcpb.Instance {
	inst := &zrpcpb.Instance{
		Service:  service,
		Id:       fmt.Sprintf("i%05d", i),
		Address:  fmt.Sprintf("127.0.%d.%d:%d", i/250, i%250+1, 9000+i%1000),
		Metadata: make(map[string]string, 48),
	}
	for k := range 48 {
		inst.Metadata[fmt.Sprintf("k%02d", k)] = strings.Repeat(string(rune('a'+k%26)), 1024)
	}
	for k := range 32 {
		inst.Tags = append(inst.Tags, fmt.Sprintf("t%02d-%s", k, strings.Repeat("x", 124)))
	}
	return inst
}

// RegisterLarge registers LargeInstance(service, 0..n-1) through reg, a
// few at a time.
func RegisterLarge(ctx context.Context, reg zrpcpb.RegistryClient, service string, n int) error {
	const workers = 8
	next := make(chan int)
	errs := make(chan error, workers)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for i := range next {
				if _, err := reg.Register(ctx, &zrpcpb.RegisterRequest{Instance: LargeInstance(service, i)}); err != nil {
					errs <- fmt.Errorf("register instance %d: %w", i, err)
					return
				}
			}
		})
	}
	var err error
feed:
	for i := range n {
		select {
		case next <- i:
		case err = <-errs:
			break feed
		}
	}
	close(next)
	wg.Wait()
	if err == nil {
		select {
		case err = <-errs:
		default:
		}
	}
	return err
}
