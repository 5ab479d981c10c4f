package e2e

import (
	"bytes"
	"crypto/rand"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestBlobGetOutlivesAStoppedHolder: an agent holding data shards that is
// stopped (SIGSTOP, as a paused VM is) in the middle of a get keeps its
// connections open: nothing fails, nothing arrives. The get does not wait
// for a timeout or the connection's keepalive: once the other holders'
// shards of a block are in and the stopped one stays silent, both
// zrpcctl's striped get and a get through an agent (--through-agent)
// give up on it, read parity from the others, finish with the blob's
// bytes while it is still stopped, and say so in their logs.
func TestBlobGetOutlivesAStoppedHolder(t *testing.T) {
	_, zrpcctl := binaries(t)
	n1, n2, n3 := blobCluster(t)
	dir := t.TempDir()
	// 32 blocks of 1 MiB: many more than either get holds ahead of its
	// reader (the client's read window, the agent's read-ahead and the
	// stream's flow-control window).
	data := make([]byte, 32<<20)
	rand.Read(data)
	src := filepath.Join(dir, "data.bin")
	if err := os.WriteFile(src, data, 0o644); err != nil {
		t.Fatal(err)
	}
	n1.mustCtl("blob", "put", src, "--name", blobName)
	st := blobStat(t, zrpcctl, n1)
	agents := map[string]*agent{"n1": n1, "n2": n2, "n3": n3}
	victim := agents[st.holders()[0][0]] // data shard 0 of every block
	var reader *agent
	for _, a := range []*agent{n1, n2, n3} {
		if a != victim {
			reader = a
			break
		}
	}

	for _, c := range []struct {
		what  string
		flags []string
		log   func() string
	}{
		{"zrpcctl's striped get", nil, nil},
		{"a get through " + reader.name, []string{"--through-agent"}, reader.log.String},
	} {
		cmd := exec.Command(zrpcctl, append([]string{"--addr", reader.grpcAddr(), "blob", "get", blobName, "-"}, c.flags...)...)
		head, out, stderr := startGet(t, c.what, cmd)
		if err := victim.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
		rest, readErr := io.ReadAll(out)
		waitErr := cmd.Wait()
		stopped := victim.cmd.Process.Signal(syscall.SIGCONT)
		if readErr != nil || waitErr != nil || stopped != nil {
			t.Fatalf("%s with %s stopped: read %v, exit %v, SIGCONT %v: %s", c.what, victim.name, readErr, waitErr, stopped, stderr.String())
		}
		if got := append(head, rest...); !bytes.Equal(got, data) {
			t.Fatalf("%s with %s stopped: %d bytes, want the %d put", c.what, victim.name, len(got), len(data))
		}
		logs := stderr.String()
		if c.log != nil {
			logs = c.log()
		}
		gaveUp := false
		for _, line := range strings.Split(logs, "\n") {
			gaveUp = gaveUp || strings.Contains(line, "sent none while the others sent theirs") && strings.Contains(line, "agent="+victim.name)
		}
		if !gaveUp {
			t.Fatalf("%s with %s stopped: no log line says it gave up on %s:\n%s", c.what, victim.name, victim.name, logs)
		}
		// The next get starts with every agent running.
		waitFor(t, 30*time.Second, victim.name+" alive again on "+reader.name, func() bool {
			for _, r := range rows(reader.mustCtl("members")) {
				if len(r) >= 3 && r[0] == victim.name {
					return r[2] == "alive"
				}
			}
			return false
		})
	}
}

// startGet starts cmd, a `zrpcctl blob get NAME -`, and returns the first
// MiB it wrote, the rest of its output to read, and its stderr.
func startGet(t *testing.T, what string, cmd *exec.Cmd) (head []byte, out io.Reader, stderr *bytes.Buffer) {
	t.Helper()
	stderr = &bytes.Buffer{}
	cmd.Stderr = stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	head = make([]byte, 1<<20)
	if _, err := io.ReadFull(out, head); err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("%s: first MiB: %v (%s)", what, err, stderr.String())
	}
	return head, out, stderr
}
