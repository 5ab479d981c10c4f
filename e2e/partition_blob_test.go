package e2e

import (
	"bytes"
	"crypto/rand"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestBlobsOutliveAHolderCutOffByARealPartition: an agent holding data
// shards of a blob loses the network, to the other agents and to the
// client alike (packets dropped, nothing refused: unlike a stopped
// process, its kernel acknowledges nothing either), in the middle of a
// striped get. The get gives up on it, reads parity from the others and
// ends with the blob's bytes; puts made while it is away succeed on the
// other two; after the heal every blob is healthy and reads back whole.
func TestBlobsOutliveAHolderCutOffByARealPartition(t *testing.T) {
	_, zrpcctl := binaries(t)
	cfg := filepath.Join(t.TempDir(), "zrpcd.yaml")
	if err := os.WriteFile(cfg, []byte(blobAgentConfig), 0o644); err != nil {
		t.Fatal(err)
	}
	c := startLab(t, 3, "--config", cfg, "--blob-repair-delay", "1s")
	dir := t.TempDir()
	blobs := map[string][]byte{}
	put := func(via int, name string) {
		t.Helper()
		data := make([]byte, 32<<20) // 32 blocks of 1 MiB: more than a get holds ahead
		rand.Read(data)
		src := filepath.Join(dir, strings.ReplaceAll(name, "/", "_"))
		if err := os.WriteFile(src, data, 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := c.ctl(via, "blob", "put", src, "--name", name); err != nil {
			t.Fatalf("put %s: %v", name, err)
		}
		blobs[name] = data
	}
	put(0, blobName)
	victim := c.index(blobStat(t, zrpcctl, c.agents[0]).holders()[0][0]) // data shard 0 of every block
	reader := (victim + 1) % 3
	var away []int // every host but the victim's: the other agents and the client
	for _, h := range c.lab.Hosts() {
		if h.Index != victim {
			away = append(away, h.Index)
		}
	}

	cmd := c.client.Command(zrpcctl, "--addr", c.addrs(reader), "blob", "get", blobName, "-")
	head, out, stderr := startGet(t, "the get", cmd)
	if err := c.lab.Partition([]int{victim}, away); err != nil {
		t.Fatal(err)
	}
	cutAt := time.Now()
	rest, readErr := io.ReadAll(out)
	if err := cmd.Wait(); readErr != nil || err != nil {
		t.Fatalf("get with %s cut off: read %v, exit %v: %s", c.agents[victim].name, readErr, err, stderr.String())
	}
	t.Logf("the get ended %s after %s was cut off", time.Since(cutAt).Round(time.Millisecond), c.agents[victim].name)
	if got := append(head, rest...); !bytes.Equal(got, blobs[blobName]) {
		t.Fatalf("get with %s cut off: %d bytes, not the %d put", c.agents[victim].name, len(got), len(blobs[blobName]))
	}
	if !strings.Contains(stderr.String(), "sent none while the others sent theirs") || !strings.Contains(stderr.String(), "agent="+c.agents[victim].name) {
		t.Fatalf("the get does not say it gave up on %s:\n%s", c.agents[victim].name, stderr.String())
	}

	put(reader, "during/1")
	put(reader, "during/2")

	if err := c.lab.Heal(); err != nil {
		t.Fatal(err)
	}
	c.waitSettled("after the heal")
	for name, data := range blobs {
		waitFor(t, 30*time.Second, name+" healthy", func() bool {
			out, err := c.ctl(victim, "blob", "stat", name)
			return err == nil && fieldLines(out)["Health"] == "healthy"
		})
		got := filepath.Join(dir, "got-"+strings.ReplaceAll(name, "/", "_"))
		if _, err := c.ctl(victim, "blob", "get", name, got); err != nil {
			t.Fatalf("get %s after the heal: %v", name, err)
		}
		if b, err := os.ReadFile(got); err != nil || !bytes.Equal(b, data) {
			t.Fatalf("get %s after the heal: %d bytes, %v; not what was put", name, len(b), err)
		}
	}
	c.checkAlive()
}
