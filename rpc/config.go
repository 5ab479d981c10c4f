package rpc

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/zrpcio/zrpc/rpc/clientchain"
)

// ClientConfig configures a client connection from YAML, like go-zero's
// RpcClientConf.
type ClientConfig struct {
	// Target is "zrpc:///<service>" or "direct:///host:port,...".
	Target string `yaml:"Target"`
	// Agents resolve zrpc:/// targets (default $ZRPC_ADDR or 127.0.0.1:8400).
	Agents []string `yaml:"Agents"`
	// AgentToken is the ACL token to watch the registry with (YAML token
	// or token_file; default $ZRPC_TOKEN); pass it with WithAgentToken.
	AgentToken `yaml:",inline"`
	// Balancer names the load balancer (default zrpc_p2c_ewma).
	Balancer string `yaml:"Balancer"`
	// Timeout is the default per-call timeout (default 2s).
	Timeout time.Duration `yaml:"Timeout"`
	// TLS, when set, is mutual TLS to the service and its agents (tls.go).
	TLS TLSConfig `yaml:"TLS"`
	// Telemetry, when its Endpoint is set, exports the spans of the calls
	// made over OTLP (telemetry.go).
	Telemetry TelemetryConfig `yaml:"Telemetry"`
	// Metrics counts the calls in the zrpc_client_* metrics of
	// prometheus.DefaultRegisterer, which a Server's Prometheus section
	// serves.
	Metrics bool `yaml:"Metrics"`
	// Hedging sends a second attempt of a call of an idempotent method
	// that has not answered after the method's recent 95th-percentile
	// latency (at least MinDelay, default 5ms) to another instance; the
	// first answer wins. List Methods, or set Idempotent to hedge every
	// method the client knows to be idempotent (a generated client's
	// IdempotentMethods). Off by default. See clientchain.HedgeConfig.
	Hedging clientchain.HedgeConfig `yaml:"Hedging"`
}

// DefaultClientConfig returns the defaults: p2c_ewma and a 2 s timeout.
func DefaultClientConfig() ClientConfig {
	return ClientConfig{Balancer: "zrpc_p2c_ewma", Timeout: 2 * time.Second}
}

// Validate reports every invalid field at once.
func (c ClientConfig) Validate() error {
	var errs []error
	if !strings.HasPrefix(c.Target, "zrpc:///") && !strings.HasPrefix(c.Target, "direct:///") {
		errs = append(errs, fmt.Errorf("setting Target: %q must be zrpc:///<service> or direct:///host:port[,host:port]", c.Target))
	}
	if c.Timeout < 0 {
		errs = append(errs, fmt.Errorf("setting Timeout: %s must not be negative", c.Timeout))
	}
	if c.Hedging.MinDelay < 0 {
		errs = append(errs, fmt.Errorf("setting Hedging.MinDelay: %s must not be negative", c.Hedging.MinDelay))
	}
	if err := c.TLS.validateFor(c.Target); err != nil {
		errs = append(errs, err)
	}
	errs = append(errs, c.Telemetry.validate())
	return errors.Join(errs...)
}

// LoadConfig fills v (a *ServerConfig, *ClientConfig or a service's own
// config struct embedding them) from the YAML file at path. ${NAME} in the
// file is replaced by the environment variable NAME (expandEnv; an unset
// one is an error). Unknown keys are an error, so a typo does not pass
// silently.
func LoadConfig(path string, v any) error {
	raw, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read config: %w", err)
	}
	// ${NAME} is expanded in the parsed values, then the document is
	// decoded strictly from its expanded text.
	var doc yaml.Node
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		return fmt.Errorf("parse config %s: %w", path, err)
	}
	if len(doc.Content) == 0 {
		return fmt.Errorf("config %s holds no settings (it is empty, or only comments)", path)
	}
	changed, err := expandEnvNodes(&doc)
	if err != nil {
		return fmt.Errorf("config %s: %w", path, err)
	}
	if changed {
		if raw, err = yaml.Marshal(&doc); err != nil {
			return fmt.Errorf("config %s: write expanded values: %w", path, err)
		}
	}
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("parse config %s: %w", path, err)
	}
	return nil
}
