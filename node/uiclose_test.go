package node

import (
	"bufio"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// Close ends the web UI's live streams before it shuts the HTTP server
// down: an open stream neither holds the shutdown nor outlives the agent.
func TestCloseEndsTheUIsLiveStreams(t *testing.T) {
	n := startNode(t, testConfig(t))
	resp, err := http.Get("http://" + n.HTTPAddr() + "/ui/api/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	line, err := bufio.NewReader(resp.Body).ReadString('\n')
	if err != nil || !strings.Contains(line, "hello") {
		t.Fatalf("first line of the stream %q (%v), want its hello", line, err)
	}
	if err := n.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	ended := make(chan error, 1)
	go func() {
		_, err := io.Copy(io.Discard, resp.Body)
		ended <- err
	}()
	select {
	case <-ended:
	case <-time.After(10 * time.Second):
		t.Fatal("the live stream was still open 10s after Close returned")
	}
}
