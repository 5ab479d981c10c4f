package client

import (
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
)

// AgentServerName is the name in every agent's certificate: a Config.TLS
// for agents verifies the agent's certificate for it (its ServerName), so
// any agent of the cluster answers whatever address it was dialed at.
const AgentServerName = "agent.zrpc"

// transportCredentials are cfg.TLS's when set, else plaintext. A TLS
// config without a ServerName verifies agents as AgentServerName.
func transportCredentials(cfg Config) grpc.DialOption {
	if cfg.TLS == nil {
		return grpc.WithTransportCredentials(insecure.NewCredentials())
	}
	tc := cfg.TLS.Clone()
	if tc.ServerName == "" {
		tc.ServerName = AgentServerName
	}
	return grpc.WithTransportCredentials(credentials.NewTLS(tc))
}
