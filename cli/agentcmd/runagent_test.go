package agentcmd

import (
	"bytes"
	"context"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/zrpcio/zrpc/internal/testport"
	"github.com/zrpcio/zrpc/internal/testwait"
	"github.com/zrpcio/zrpc/node"
)

// lockedBuffer is an io.Writer the agent's goroutines and the test share;
// onWrite, if set, sees each write.
type lockedBuffer struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	onWrite func(p []byte)
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.onWrite != nil {
		b.onWrite(p)
	}
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestSIGHUPDuringStartDoesNotKillTheAgent: a SIGHUP (a certificate
// reload, as a supervisor sends it) that comes while the agent starts is
// taken by the agent, which starts and runs on; it does not end the
// process, as an unhandled SIGHUP does.
func TestSIGHUPDuringStartDoesNotKillTheAgent(t *testing.T) {
	cfg := node.Default()
	cfg.Name = "n1"
	cfg.DataDir = t.TempDir()
	cfg.GRPCPort, cfg.RaftPort, cfg.GossipPort = testport.Free(t), testport.Free(t), testport.Free(t)
	cfg.HTTPPort, cfg.DNSPort = 0, 0
	cfg.GossipProfile = "local"

	var out lockedBuffer
	hupSent := false
	errw := &lockedBuffer{onWrite: func(p []byte) {
		// The blob store opens during the start, before Raft and the
		// listeners.
		if !hupSent && bytes.Contains(p, []byte("shard store opened")) {
			hupSent = true
			if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
				t.Errorf("send SIGHUP: %v", err)
			}
		}
	}}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- runAgent(ctx, cfg, &out, errw) }()

	testwait.ForExplained(t, 30*time.Second, "the agent to start", func() bool {
		return strings.Contains(out.String(), "running")
	}, errw.String)
	cancel()
	var err error
	testwait.For(t, 30*time.Second, "runAgent to return", func() bool {
		select {
		case err = <-done:
			return true
		default:
			return false
		}
	})
	if err != nil {
		t.Fatalf("runAgent: %v\nlog:\n%s", err, errw.String())
	}
	if !strings.Contains(errw.String(), "shard store opened") {
		t.Fatalf("the start logged no \"shard store opened\", so no SIGHUP was sent during it; log:\n%s", errw.String())
	}
}
