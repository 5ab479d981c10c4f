package rpc

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/zrpcio/zrpc/rpc/resolver"
)

// ServerConfig configures a Server. Its YAML keys follow go-zero's
// RpcServerConf where they mean the same thing, so a service's etc/*.yaml
// can drive it.
type ServerConfig struct {
	// Name is the service name instances register under ("user.rpc").
	Name string `yaml:"Name"`
	// ListenOn is the listen address, ":9001" or "127.0.0.1:9001".
	ListenOn string `yaml:"ListenOn"`
	// Advertise is the address clients dial; empty means ListenOn, with an
	// unspecified host replaced by 127.0.0.1.
	Advertise string `yaml:"Advertise"`
	// ID is the instance id; empty means "<hostname>-<port>".
	ID string `yaml:"ID"`
	// Agents are the gRPC addresses of agents to register with (the local
	// one first). Empty means $ZRPC_ADDR or 127.0.0.1:8400.
	Agents  []string          `yaml:"Agents"`
	Weight  uint32            `yaml:"Weight"`
	Zone    string            `yaml:"Zone"`
	Version string            `yaml:"Version"`
	Tags    []string          `yaml:"Tags"`
	Meta    map[string]string `yaml:"Meta"`
	// AgentToken is the ACL token to register with (YAML token or
	// token_file; default $ZRPC_TOKEN).
	AgentToken `yaml:",inline"`
	// CheckInterval, when set (100ms to 1h), asks the agent that owns the
	// instance to call the server's grpc.health.v1 this often, on top of
	// the session: a server that says NOT_SERVING (Server.Health), or
	// stops answering, turns critical. With TLS the agent checks over
	// mutual TLS with its agent certificate.
	CheckInterval time.Duration `yaml:"CheckInterval"`
	// NoRegister serves without registering (tests, direct:/// clients).
	NoRegister bool `yaml:"NoRegister"`
	// DrainDelay is how long Stop waits after deregistering before it stops
	// accepting calls, so clients move away first.
	DrainDelay time.Duration `yaml:"DrainDelay"`
	// StopTimeout bounds the graceful stop; calls still running then are
	// cancelled.
	StopTimeout time.Duration `yaml:"StopTimeout"`

	// The default interceptor chain (rpc/serverchain): recover → metrics and
	// slow-call log → auth → rate limit → load shedding → timeout.

	// Timeout bounds each unary call (default 2s; never extends the
	// caller's deadline). Negative turns it off.
	Timeout time.Duration `yaml:"Timeout"`
	// SlowThreshold: calls at least this slow are logged (default 500ms).
	SlowThreshold time.Duration `yaml:"SlowThreshold"`
	// Tokens, when set, are the accepted bearer tokens; calls without one
	// get Unauthenticated (health and reflection excepted).
	Tokens []string `yaml:"Tokens"`
	// RateLimit is calls per second per method (0: off); RateBurst its burst.
	RateLimit float64 `yaml:"RateLimit"`
	RateBurst int     `yaml:"RateBurst"`
	// NoShedding turns adaptive load shedding off; MaxInFlight is its hard
	// cap on concurrent calls (0: adaptive limit only).
	NoShedding  bool `yaml:"NoShedding"`
	MaxInFlight int  `yaml:"MaxInFlight"`
	// NoChain serves without the default interceptor chain.
	NoChain bool `yaml:"NoChain"`
	// TLS, when set, is mutual TLS for the server and its agents (tls.go).
	TLS TLSConfig `yaml:"TLS"`

	// Telemetry, when its Endpoint is set, exports the spans of the calls
	// the server handles over OTLP (telemetry.go).
	Telemetry TelemetryConfig `yaml:"Telemetry"`
	// Prometheus, when its Host is set, serves the server's metrics over
	// HTTP from Start to Stop (promserver.go).
	Prometheus PrometheusConfig `yaml:"Prometheus"`
	// Log builds the server's logger when WithServerLogger passes none
	// (logconf.go).
	Log LogConfig `yaml:"Log"`
}

// The bounds of CheckInterval, the agent's for a gRPC check's interval.
const (
	minCheckInterval = 100 * time.Millisecond
	maxCheckInterval = time.Hour
)

// DefaultServerConfig returns the defaults: weight 100, a 1 s drain delay
// and a 10 s stop timeout.
func DefaultServerConfig() ServerConfig {
	return ServerConfig{Weight: 100, DrainDelay: time.Second, StopTimeout: 10 * time.Second}
}

// Validate reports every invalid field at once.
func (c ServerConfig) Validate() error {
	var errs []error
	if c.Name == "" {
		errs = append(errs, errors.New("setting Name: required (the service name, e.g. user.rpc)"))
	}
	if _, port, err := net.SplitHostPort(c.ListenOn); err != nil {
		errs = append(errs, fmt.Errorf("setting ListenOn: %q is not host:port", c.ListenOn))
	} else if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
		errs = append(errs, fmt.Errorf("setting ListenOn: %q has no valid port", c.ListenOn))
	}
	if c.Advertise != "" {
		if err := validAdvertise(c.Advertise); err != nil {
			errs = append(errs, err)
		}
	}
	if c.Weight > 10000 {
		errs = append(errs, fmt.Errorf("setting Weight: %d exceeds 10000", c.Weight))
	}
	if c.RateLimit < 0 || c.RateBurst < 0 || c.MaxInFlight < 0 {
		errs = append(errs, errors.New("settings RateLimit, RateBurst, MaxInFlight: must not be negative"))
	}
	if c.DrainDelay < 0 || c.StopTimeout < 0 {
		errs = append(errs, errors.New("settings DrainDelay, StopTimeout: must not be negative"))
	}
	if c.CheckInterval != 0 && (c.CheckInterval < minCheckInterval || c.CheckInterval > maxCheckInterval) {
		errs = append(errs, fmt.Errorf("setting CheckInterval: %v must be 0 (no gRPC check) or between %v and %v", c.CheckInterval, minCheckInterval, maxCheckInterval))
	}
	if err := c.TLS.validateServer(); err != nil {
		errs = append(errs, err)
	}
	errs = append(errs, c.Telemetry.validate(), c.Prometheus.validate(), c.Log.validate())
	return errors.Join(errs...)
}

// validAdvertise checks an address callers dial: a host they can reach
// and a port, as the agent requires of a registration.
func validAdvertise(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || host == "" {
		return fmt.Errorf("setting Advertise: %q is not host:port (the address callers dial, e.g. 10.0.0.5:9001)", addr)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		return fmt.Errorf("setting Advertise: %q has no valid port (1 to 65535; the port ListenOn serves)", addr)
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		return fmt.Errorf("setting Advertise: %q is not an address callers can dial (an unspecified IP); give the address this machine is reached at", addr)
	}
	return nil
}

func (c ServerConfig) agents() []string {
	if len(c.Agents) > 0 {
		return c.Agents
	}
	if env := resolver.EnvAgents(); len(env) > 0 {
		return env // several, comma-separated, as rpc.Dial and zrpcctl read it
	}
	return []string{"127.0.0.1:8400"}
}
