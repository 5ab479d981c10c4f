// Command zrpcidle fills a running zrpc agent with TTL instances, so that
// what the agent costs while idle can be read from its process afterwards
// (/proc/PID/stat utime+stime, VmRSS):
//
//	bin/zrpcd agent --data-dir /tmp/idle --name n1 &
//	go run ./cmd/zrpcidle --agent 127.0.0.1:8400 --instances 100000
//
// Instances are spread over --services services (each service may hold
// max_instances_per_service instances) and get a TTL long enough that
// they stay passing without renewals while the agent idles.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/client"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "zrpcidle:", err)
		os.Exit(1)
	}
}

func run() error {
	var (
		agent     = flag.String("agent", "127.0.0.1:8400", "gRPC address of the agent")
		instances = flag.Int("instances", 100_000, "TTL instances to register")
		services  = flag.Int("services", 100, "services to spread them over")
		ttl       = flag.Duration("ttl", time.Hour, "TTL of every instance")
		writers   = flag.Int("writers", 32, "concurrent registrations")
	)
	flag.Parse()
	if *instances < 0 || *services < 1 || *writers < 1 || *ttl <= 0 {
		return fmt.Errorf("--instances must be >= 0, --services and --writers >= 1, --ttl > 0")
	}
	c, err := client.New(client.Config{Endpoints: []string{*agent}})
	if err != nil {
		return err
	}
	defer c.Close()
	ctx := context.Background()
	start := time.Now()
	var next, failed atomic.Int64
	var wg sync.WaitGroup
	for range *writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := next.Add(1) - 1; i < int64(*instances); i = next.Add(1) - 1 {
				inst := &pb.Instance{
					Service: fmt.Sprintf("idle%03d.rpc", i%int64(*services)),
					Id:      fmt.Sprintf("i%07d", i),
					Address: fmt.Sprintf("127.0.0.%d:%d", 1+i%200, 10000+i%50000),
					Check:   &pb.Check{Ttl: durationpb.New(*ttl)},
				}
				if _, _, err := c.Register(ctx, inst); err != nil {
					if failed.Add(1) <= 5 {
						fmt.Fprintln(os.Stderr, "register:", err)
					}
				}
			}
		}()
	}
	wg.Wait()
	fmt.Printf("registered %d TTL instances (%d failed) in %s\n", int64(*instances)-failed.Load(), failed.Load(), time.Since(start).Round(time.Millisecond))
	if failed.Load() > 0 {
		return fmt.Errorf("%d registrations failed", failed.Load())
	}
	return nil
}
