package node

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/zrpcio/zrpc/api/apierr"
	"github.com/zrpcio/zrpc/internal/testlog"
)

// onMessage is a slog handler that runs hook, in the logging goroutine,
// on each record before passing it on.
type onMessage struct {
	slog.Handler
	hook func(msg string)
}

func (h onMessage) Handle(ctx context.Context, r slog.Record) error {
	h.hook(r.Message)
	return h.Handler.Handle(ctx, r)
}

func (h onMessage) WithAttrs(a []slog.Attr) slog.Handler {
	return onMessage{h.Handler.WithAttrs(a), h.hook}
}

func (h onMessage) WithGroup(g string) slog.Handler {
	return onMessage{h.Handler.WithGroup(g), h.hook}
}

// TestFailedFirstStartEmptiesTheDataDirUnderItsLock: a first start that
// founded a cluster and then failed (its HTTP port taken) empties the data
// dir while it still holds its lock: another agent that tries to open the
// directory meanwhile is told it is in use, so nothing that agent would
// write there is removed. Once the start has returned, the directory is
// free again and holds nothing but its LOCK file.
func TestFailedFirstStartEmptiesTheDataDirUnderItsLock(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	cfg := testConfig(t)
	cfg.HTTPPort = busy.Addr().(*net.TCPAddr).Port
	emptied, otherErr := false, error(nil)
	log := slog.New(onMessage{testlog.New(t, cfg.Name).Handler(), func(msg string) {
		if !strings.Contains(msg, "emptied the data dir") {
			return
		}
		emptied = true
		other, err := openDataDir(cfg.DataDir, "n2")
		if err == nil {
			other.close()
		}
		otherErr = err
	}})
	n, err := New(cfg, WithLogger(log))
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(context.Background()); err == nil {
		n.Close()
		t.Fatal("Start succeeded with its HTTP port taken")
	}
	if !emptied {
		t.Fatal("the failed first start did not empty its data dir")
	}
	if otherErr == nil || !strings.Contains(otherErr.Error(), "in use by another zrpcd") {
		t.Fatalf("another agent opening the data dir while it was emptied: %v; want it refused as in use", otherErr)
	}
	left, err := os.ReadDir(cfg.DataDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range left {
		if e.Name() != lockFile {
			t.Errorf("after the failed first start the data dir holds %s, want nothing but %s", e.Name(), lockFile)
		}
	}
	d, err := openDataDir(cfg.DataDir, "n2")
	if err != nil {
		t.Fatalf("open the data dir after the failed start: %v", err)
	}
	d.close()
}

// TestBadGossipKeyFailsTheStartBeforeTheDataDir: an encrypt_file whose key
// does not parse fails the start before the data dir is created, so no
// cluster is bootstrapped only to be removed again, and the error names
// the file.
func TestBadGossipKeyFailsTheStartBeforeTheDataDir(t *testing.T) {
	cfg := testConfig(t)
	cfg.DataDir = filepath.Join(t.TempDir(), "data")
	cfg.EncryptKeyFile = filepath.Join(t.TempDir(), "gossip.key")
	if err := os.WriteFile(cfg.EncryptKeyFile, []byte("not a key\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	n, err := New(cfg, WithLogger(testlog.New(t, cfg.Name)))
	if err != nil {
		t.Fatal(err)
	}
	err = n.Start(context.Background())
	if err == nil {
		n.Close()
		t.Fatal("Start succeeded with a bad gossip key")
	}
	if !strings.Contains(err.Error(), "encrypt_file") || !strings.Contains(err.Error(), cfg.EncryptKeyFile) {
		t.Errorf("Start = %v, want an error naming encrypt_file and %s", err, cfg.EncryptKeyFile)
	}
	if _, err := os.Stat(cfg.DataDir); !os.IsNotExist(err) {
		t.Errorf("after a start refused for its gossip key the data dir exists (%v); want it never created", err)
	}
}

// TestLeaveWhileGossipStartsIsRefused: the API serves before gossip starts,
// so a leave can reach an agent that has no gossip yet to announce it (here
// a member of a two-agent cluster, restarted). It is refused, saying the
// agent is still starting, and the agent starts and stays in the cluster.
func TestLeaveWhileGossipStartsIsRefused(t *testing.T) {
	a := startNode(t, testConfig(t))
	cfg := testConfig(t)
	cfg.Name = "n2"
	cfg.Join = []string{a.gossip().LocalAddr()}
	b := startedNode(t, cfg)
	waitFor(t, 15*time.Second, "n2 to hold a configuration of n1 and n2", func() bool {
		servers, err := b.Store().Servers()
		return err == nil && len(servers) == 2
	})
	b.Close()

	inner, err := memberlist.NewNetTransport(&memberlist.NetTransportConfig{BindAddrs: []string{"127.0.0.1"}})
	if err != nil {
		t.Fatal(err)
	}
	var restarted *Node
	var once sync.Once
	var leaveErr error
	tr := &hookedTransport{NetTransport: inner, hook: func() {
		once.Do(func() { _, leaveErr = restarted.Leave(ctxT(t), LeaveOptions{}) })
	}}
	restarted, err = New(cfg, WithLogger(testlog.New(t, cfg.Name)), WithGossipTransport(tr))
	if err != nil {
		t.Fatal(err)
	}
	if err := restarted.Start(context.Background()); err != nil {
		t.Fatalf("restart n2: %v", err)
	}
	t.Cleanup(func() { restarted.Close() })
	if !errors.Is(leaveErr, apierr.ErrFailedPrecondition) || !strings.Contains(leaveErr.Error(), "still starting") {
		t.Fatalf("Leave while gossip starts = %v, want a failed precondition saying the agent is still starting", leaveErr)
	}
	select {
	case <-restarted.Left():
		t.Fatal("the agent reports it left after its leave was refused")
	default:
	}
}
