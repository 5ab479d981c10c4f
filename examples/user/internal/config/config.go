// Package config is the user.rpc service's configuration, read from
// etc/user.yaml. zrpcctl gen wrote it once; it is yours to change.
package config

import "github.com/zrpcio/zrpc/rpc"

// Config is the rpc server's settings (go-zero's keys: Name, ListenOn,
// Agents, Timeout, ...) and whatever the service adds.
type Config struct {
	rpc.ServerConfig `yaml:",inline"`
}
