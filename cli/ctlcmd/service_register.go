package ctlcmd

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/client"
)

// registerFlags are the flags of `service register`.
type registerFlags struct {
	id, address, zone, version string
	weight                     uint32
	tags, meta                 []string
	ttl                        time.Duration
	grpcCheck                  bool
	checkAddress               string
	interval, checkTimeout     time.Duration
	deregisterCriticalAfter    time.Duration
}

func newServiceRegisterCommand(o *options) *cobra.Command {
	var f registerFlags
	cmd := &cobra.Command{
		Use:   "register SERVICE --id ID --address HOST:PORT",
		Short: "Register an instance of a service by hand",
		Long: `Register (or replace, by SERVICE and --id) an instance of SERVICE.

Give it a health check: --ttl D makes it critical unless someone runs
` + "`zrpcctl service renew`" + ` (or calls RenewTTL) at least every D; --grpc-check
makes the agent call grpc.health.v1.Health/Check on it every --interval.
Without either the instance is unmanaged: it counts as passing and stays until
` + "`zrpcctl service deregister`" + ` removes it, even if the process behind it is gone.
Processes that use the rpc package register themselves and need none of this.`,
		Example: `  zrpcctl service register user.rpc --id user-1 --address 10.0.0.5:9000 --ttl 30s
  zrpcctl service register user.rpc --id user-2 --address 10.0.0.6:9000 \
      --grpc-check --interval 5s --check-timeout 1s --deregister-critical-after 10m \
      --zone eu-1a --version 1.4.2 --tag canary --meta owner=team-users`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			inst, err := f.instance(cmd, args[0])
			if err != nil {
				return err
			}
			return o.run(cmd, false, func(ctx context.Context, c *client.Client, p *printer) error {
				stored, rev, err := c.Register(ctx, inst)
				if err != nil {
					return err
				}
				if stored == nil {
					stored = inst
				}
				resp := &zrpcpb.RegisterResponse{Header: &zrpcpb.ResponseHeader{Revision: rev}, Instance: stored}
				return p.sentence(resp, fmt.Sprintf("registered %s at revision %d",
					instanceName(stored.GetService(), stored.GetId()), rev))
			})
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&f.id, "id", "", "instance id, unique within the service (required)")
	fs.StringVar(&f.address, "address", "", "address clients dial, host:port (required)")
	fs.Uint32Var(&f.weight, "weight", 0, "relative share of traffic (0: the agent's default)")
	fs.StringVar(&f.zone, "zone", "", "zone or rack of the instance")
	fs.StringVar(&f.version, "version", "", "version of the instance's build")
	fs.StringArrayVar(&f.tags, "tag", nil, "tag, repeatable")
	fs.StringArrayVar(&f.meta, "meta", nil, "metadata key=value, repeatable")
	fs.DurationVar(&f.ttl, "ttl", 0, "TTL check: critical unless renewed at least this often")
	fs.BoolVar(&f.grpcCheck, "grpc-check", false, "gRPC health check run by the agent")
	fs.StringVar(&f.checkAddress, "check-address", "", "address of the gRPC health check (default: --address)")
	fs.DurationVar(&f.interval, "interval", 10*time.Second, "interval of the gRPC health check")
	fs.DurationVar(&f.checkTimeout, "check-timeout", 0, "timeout of one gRPC health check, at most --interval (default: 2s, or --interval when that is shorter)")
	fs.DurationVar(&f.deregisterCriticalAfter, "deregister-critical-after", 0, "remove the instance after it has been critical this long (0: never)")
	_ = cmd.MarkFlagRequired("id")
	_ = cmd.MarkFlagRequired("address")
	return cmd
}

// instance checks the flags' shapes and builds the instance to register. The
// agent checks the content (names, address, ranges).
func (f *registerFlags) instance(cmd *cobra.Command, service string) (*zrpcpb.Instance, error) {
	changed := cmd.Flags().Changed
	if f.ttl != 0 && f.grpcCheck {
		return nil, errors.New("--ttl and --grpc-check exclude each other: an instance has one health check")
	}
	if !f.grpcCheck {
		for _, name := range []string{"check-address", "interval", "check-timeout"} {
			if changed(name) {
				return nil, fmt.Errorf("--%s needs --grpc-check", name)
			}
		}
	}
	if f.deregisterCriticalAfter != 0 && f.ttl == 0 && !f.grpcCheck {
		return nil, errors.New("--deregister-critical-after needs a check: --ttl or --grpc-check")
	}
	meta, err := parseMeta(f.meta)
	if err != nil {
		return nil, err
	}
	inst := &zrpcpb.Instance{
		Id:       f.id,
		Service:  service,
		Address:  f.address,
		Weight:   f.weight,
		Zone:     f.zone,
		Version:  f.version,
		Tags:     f.tags,
		Metadata: meta,
	}
	switch {
	case f.ttl != 0:
		inst.Check = &zrpcpb.Check{Ttl: durationpb.New(f.ttl)}
	case f.grpcCheck:
		timeout, err := f.grpcCheckTimeout(changed("check-timeout"))
		if err != nil {
			return nil, err
		}
		inst.Check = &zrpcpb.Check{
			Grpc:        true,
			GrpcAddress: f.checkAddress,
			Interval:    durationpb.New(f.interval),
			Timeout:     durationpb.New(timeout),
		}
	}
	if f.deregisterCriticalAfter != 0 {
		inst.Check.DeregisterCriticalAfter = durationpb.New(f.deregisterCriticalAfter)
	}
	return inst, nil
}

// defaultCheckTimeout is a gRPC check's timeout when --check-timeout is
// not given and --interval is not shorter.
const defaultCheckTimeout = 2 * time.Second

// grpcCheckTimeout is the timeout of the instance's gRPC check: the one
// given (set says whether it was), which must not exceed the interval
// (one check ends before the next starts), else the default, cut to the
// interval.
func (f *registerFlags) grpcCheckTimeout(set bool) (time.Duration, error) {
	if !set {
		return min(defaultCheckTimeout, f.interval), nil
	}
	if f.checkTimeout > f.interval {
		return 0, fmt.Errorf("--check-timeout %s is longer than --interval %s: a check must end before the next one starts; lower --check-timeout or raise --interval",
			f.checkTimeout, f.interval)
	}
	return f.checkTimeout, nil
}

// parseMeta parses repeated --meta key=value flags.
func parseMeta(pairs []string) (map[string]string, error) {
	if len(pairs) == 0 {
		return nil, nil
	}
	meta := make(map[string]string, len(pairs))
	for _, kv := range pairs {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("invalid --meta %q: want key=value", kv)
		}
		meta[k] = v
	}
	return meta, nil
}
