package ctlcmd

import (
	"path/filepath"
	"strings"
	"testing"
)

// TestSnapshotSaveErrorSaysWhatFailedOnce: a save the agent fails says
// "save snapshot" once, then the agent's error and that the file was not
// written.
func TestSnapshotSaveErrorSaysWhatFailedOnce(t *testing.T) {
	t.Setenv(addrEnv, "")
	f := startFake(t) // serves no Snapshot API
	path := filepath.Join(t.TempDir(), "backup.snap")
	res := runZrpcctl(testContext(t), t, f.Addr, "snapshot", "save", path)
	if res.err == nil || !strings.HasPrefix(res.err.Error(), "save snapshot: rpc error: code = Unimplemented") ||
		strings.Count(res.err.Error(), "save snapshot") != 1 || !strings.Contains(res.err.Error(), path+" was not written") {
		t.Fatalf("save through an agent without the Snapshot API: %v, want \"save snapshot\" once, the agent's error and that %s was not written", res.err, path)
	}
}
