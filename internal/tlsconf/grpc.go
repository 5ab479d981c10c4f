package tlsconf

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"

	"google.golang.org/grpc/credentials"
)

// ServerCredentials are gRPC's TLS credentials for cfg (a ServerConfig)
// that also log each refused handshake to log, explained (see Explain):
// grpc-go itself only tells its own logger. Refusals of a certificate are
// logged at Warn, other failed handshakes (a plaintext caller, a port
// scan) at Debug.
func ServerCredentials(cfg *tls.Config, log *slog.Logger) credentials.TransportCredentials {
	return &loggingCredentials{TransportCredentials: credentials.NewTLS(cfg), log: log}
}

type loggingCredentials struct {
	credentials.TransportCredentials
	log *slog.Logger
}

func (c *loggingCredentials) ServerHandshake(conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	nc, info, err := c.TransportCredentials.ServerHandshake(conn)
	if err != nil {
		level := slog.LevelDebug
		var cv *tls.CertificateVerificationError
		if errors.As(err, &cv) || errors.Is(err, ErrNotAgent) {
			level = slog.LevelWarn
		}
		c.log.Log(context.Background(), level, "TLS handshake refused", "remote", conn.RemoteAddr().String(), "err", Explain(err))
	}
	return nc, info, err
}

func (c *loggingCredentials) Clone() credentials.TransportCredentials {
	return &loggingCredentials{TransportCredentials: c.TransportCredentials.Clone(), log: c.log}
}
