package security

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// Names in the certificates and the ACL policy the load runs under.
const (
	echoService = "bench.echo"
	regService  = "bench.registry"
	benchPolicy = `service "bench." { write }`
)

// cliTimeout bounds one zrpcctl or zrpcd keygen run.
const cliTimeout = 30 * time.Second

// pki is what the secured runs share: the cluster CA, the agent's, the
// load tool's and the echo service's certificates, and a gossip key, all
// made with the zrpc binaries as an operator would.
type pki struct {
	ca, agentCert, agentKey string
	loadCert, loadKey       string
	echoCert, echoKey       string
	gossipKey               string
}

// newPKI creates the CA, certificates and gossip key in dir.
func newPKI(ctx context.Context, bins Binaries, dir string) (*pki, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("pki dir: %w", err)
	}
	for _, args := range [][]string{
		{"tls", "ca", "create", "--dir", dir},
		{"tls", "cert", "create", "--agent", "--name", "bench-agent", "--dir", dir},
		{"tls", "cert", "create", "--client", "--name", "bench-load", "--dir", dir},
		{"tls", "cert", "create", "--service", "--name", echoService, "--ip", "127.0.0.1", "--dir", dir},
	} {
		if _, err := runCLI(ctx, bins.Zrpcctl, args...); err != nil {
			return nil, err
		}
	}
	key, err := runCLI(ctx, bins.Zrpcd, "keygen")
	if err != nil {
		return nil, err
	}
	p := &pki{
		ca:        filepath.Join(dir, "ca.pem"),
		agentCert: filepath.Join(dir, "bench-agent.pem"), agentKey: filepath.Join(dir, "bench-agent-key.pem"),
		loadCert: filepath.Join(dir, "bench-load.pem"), loadKey: filepath.Join(dir, "bench-load-key.pem"),
		echoCert: filepath.Join(dir, echoService+".pem"), echoKey: filepath.Join(dir, echoService+"-key.pem"),
		gossipKey: filepath.Join(dir, "gossip.key"),
	}
	if err := os.WriteFile(p.gossipKey, key, 0o600); err != nil {
		return nil, fmt.Errorf("write gossip key: %w", err)
	}
	return p, nil
}

// bootstrapACL makes the management token of the agent at addr, a policy
// that may write the bench services, and a token of that policy, with
// zrpcctl; it returns the files holding the bench token's secret and the
// management token's.
func (p *pki) bootstrapACL(ctx context.Context, bins Binaries, addr, dir string) (bench, management string, err error) {
	ctl := []string{"--addr", addr, "--tls-ca", p.ca, "--tls-cert", p.loadCert, "--tls-key", p.loadKey, "-o", "json"}
	out, err := runCLI(ctx, bins.Zrpcctl, append(ctl, "acl", "bootstrap")...)
	if err != nil {
		return "", "", err
	}
	mgmt, err := writeSecret(out, filepath.Join(dir, "management.token"))
	if err != nil {
		return "", "", fmt.Errorf("acl bootstrap: %w", err)
	}
	ctl = append(ctl, "--token-file", mgmt)
	if _, err := runCLI(ctx, bins.Zrpcctl, append(ctl, "acl", "policy", "create", "bench", "--rules", benchPolicy)...); err != nil {
		return "", "", err
	}
	out, err = runCLI(ctx, bins.Zrpcctl, append(ctl, "acl", "token", "create", "--policy", "bench")...)
	if err != nil {
		return "", "", err
	}
	tok, err := writeSecret(out, filepath.Join(dir, "bench.token"))
	if err != nil {
		return "", "", fmt.Errorf("acl token create: %w", err)
	}
	return tok, mgmt, nil
}

// writeSecret writes the "secret" of zrpcctl's JSON answer out to path
// (mode 0600) and returns path.
func writeSecret(out []byte, path string) (string, error) {
	var resp struct {
		Secret string `json:"secret"`
	}
	if err := json.Unmarshal(out, &resp); err != nil {
		return "", fmt.Errorf("read zrpcctl's JSON: %w", err)
	}
	if resp.Secret == "" {
		return "", fmt.Errorf("zrpcctl's answer has no secret")
	}
	if err := os.WriteFile(path, []byte(resp.Secret+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("write token file: %w", err)
	}
	return path, nil
}

// runCLI runs bin with args and returns its stdout; an error carries its
// stderr.
func runCLI(ctx context.Context, bin string, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, cliTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w: %s", filepath.Base(bin), strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}
