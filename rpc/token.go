package rpc

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/zrpcio/zrpc/rpc/resolver"
)

// TokenEnv is the environment variable holding the ACL token sent to the
// agents when a config gives none.
const TokenEnv = "ZRPC_TOKEN"

// maxTokenFile bounds what token_file reads.
const maxTokenFile = 4 << 10

// AgentToken is the ACL token a server registers with, or a client
// watches the registry with, when the agents run with ACLs on. It is
// inlined in ServerConfig and ClientConfig (YAML keys token and
// token_file). It is not ServerConfig.Tokens, the tokens the service
// itself accepts from its callers.
type AgentToken struct {
	// Token is the token's secret. Prefer TokenFile: a config file is
	// more often shared than a secret should be.
	Token string `yaml:"token"`
	// TokenFile is a file holding the token's secret (surrounding white
	// space is ignored).
	TokenFile string `yaml:"token_file"`
}

// Resolve returns the token to send: Token, or the contents of
// TokenFile, or $ZRPC_TOKEN; "" when none is set. Setting both Token and
// TokenFile is an error.
func (t AgentToken) Resolve() (string, error) {
	switch {
	case t.Token != "" && t.TokenFile != "":
		return "", errors.New("settings token, token_file: both are set, give one")
	case t.Token != "":
		return t.Token, nil
	case t.TokenFile != "":
		b, err := os.ReadFile(t.TokenFile)
		if err != nil {
			return "", fmt.Errorf("setting token_file: %w", err)
		}
		if len(b) > maxTokenFile {
			return "", fmt.Errorf("setting token_file: %s has more than %d bytes; it should hold only the token", t.TokenFile, maxTokenFile)
		}
		token := strings.TrimSpace(string(b))
		if token == "" {
			return "", fmt.Errorf("setting token_file: %s is empty", t.TokenFile)
		}
		return token, nil
	}
	return strings.TrimSpace(os.Getenv(TokenEnv)), nil
}

// WithAgentToken sets the ACL token that the resolver of a zrpc:///
// target sends to the agents it watches the registry through (default
// $ZRPC_TOKEN). With a ClientConfig: tok, err := cfg.AgentToken.Resolve().
func WithAgentToken(token string) DialOption {
	return WithResolverOptions(resolver.WithToken(token))
}
