package rpc

import (
	"context"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
)

// DialConfig connects as c says: its Target, agents, balancer, timeout,
// hedging, TLS, agent token, telemetry and metrics; opts apply after c. The
// generated clients' DialConfig calls it with the service's target and
// idempotent methods.
func DialConfig(ctx context.Context, c ClientConfig, opts ...DialOption) (*grpc.ClientConn, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	var o []DialOption
	if len(c.Agents) > 0 {
		o = append(o, WithAgents(c.Agents...))
	}
	if c.Balancer != "" {
		o = append(o, WithBalancer(c.Balancer))
	}
	if c.Timeout > 0 {
		o = append(o, WithTimeout(c.Timeout))
	}
	if c.Hedging.Enabled() {
		o = append(o, WithHedging(c.Hedging))
	}
	if c.TLS.Enabled() {
		o = append(o, WithTLS(c.TLS))
	}
	token, err := c.AgentToken.Resolve()
	if err != nil {
		return nil, err
	}
	if token != "" {
		o = append(o, WithAgentToken(token))
	}
	o = append(o, WithTelemetry(c.Telemetry))
	if c.Metrics {
		o = append(o, WithMetrics(prometheus.DefaultRegisterer))
	}
	return Dial(ctx, c.Target, append(o, opts...)...)
}
