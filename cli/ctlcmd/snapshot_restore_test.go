package ctlcmd

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/snapshot"
)

// writeTestSnapshot writes a valid snapshot file of a registry with one
// instance and returns its path.
func writeTestSnapshot(t *testing.T) string {
	t.Helper()
	var state bytes.Buffer
	sw := snapshot.NewStateWriter(&state, &zrpcpb.SnapshotHeader{Revision: 42, Instances: 1})
	sw.Write(&zrpcpb.Instance{Service: "user.rpc", Id: "user-1", Address: "10.0.0.5:9000"})
	if err := sw.Close(); err != nil {
		t.Fatal(err)
	}
	var file bytes.Buffer
	w, err := snapshot.NewWriter(&file, snapshot.Header{Index: 44, Term: 3, Revision: 42, Created: time.Unix(1700000000, 0), Size: uint64(state.Len())})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(state.Bytes()); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "backup.snap")
	if err := os.WriteFile(path, file.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := snapshot.InspectFile(path); err != nil {
		t.Fatalf("the test's snapshot file: %v", err)
	}
	return path
}

// restoreFake is an agent's Snapshot service that takes a restore's whole
// file, says so on received, and then does not answer until the call ends.
type restoreFake struct {
	zrpcpb.UnimplementedSnapshotServer
	received chan struct{}
}

func (f *restoreFake) Restore(stream grpc.ClientStreamingServer[zrpcpb.SnapshotChunk, zrpcpb.SnapshotRestoreResponse]) error {
	for {
		if _, err := stream.Recv(); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return err
		}
	}
	close(f.received)
	<-stream.Context().Done()
	return stream.Context().Err()
}

// TestSnapshotRestoreInterruptedAfterTheWholeFileSaysTheOutcomeIsUnknown:
// Ctrl-C once the agent has the whole file cannot take the restore back,
// so zrpcctl says it may have been applied and how to tell, never that it
// was merely interrupted; before that, that nothing was changed.
func TestSnapshotRestoreInterruptedAfterTheWholeFileSaysTheOutcomeIsUnknown(t *testing.T) {
	t.Setenv(addrEnv, "")
	path := writeTestSnapshot(t)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &restoreFake{received: make(chan struct{})}
	srv := grpc.NewServer()
	zrpcpb.RegisterSnapshotServer(srv, f)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)

	ctx, cancel := context.WithCancel(testContext(t))
	defer cancel()
	go func() {
		<-f.received
		cancel() // as Ctrl-C does
	}()
	res := runZrpcctl(ctx, t, lis.Addr().String(), "snapshot", "restore", path, "--yes")
	want := "Error: restore snapshot: interrupted: outcome unknown after every byte of " + path + " was sent\n" +
		"Hint: the cluster may have restored it"
	if res.err == nil || !strings.Contains(res.stderr, want) {
		t.Fatalf("restore interrupted after the agent had the whole file: %v; want stderr to say\n%s\ngot:\n%s", res.err, want, res.stderr)
	}

	partial := restoreInterrupted(ctx, errors.New("rpc error: code = Canceled desc = context canceled"), path, false)
	if want := "restore snapshot: interrupted\nHint: the agent had not received the whole file, so nothing was changed"; partial == nil || partial.Error() != want {
		t.Fatalf("restore interrupted while sending: %v, want %q", partial, want)
	}
}
