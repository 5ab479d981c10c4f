package e2e

import (
	"bufio"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/websocket"

	"github.com/zrpcio/zrpc/internal/testwait"
)

// browser is a headless Chromium driven over the DevTools protocol (one
// page, loopback only): it loads pages, reads their DOM as the page's
// script left it, and takes screenshots.
type browser struct {
	t       *testing.T
	cmd     *exec.Cmd
	profile string // its user data dir
	ws      *websocket.Conn
	done    chan struct{} // closed when the reader ends

	mu      sync.Mutex
	nextID  int
	waiting map[int]chan cdpReply
	dialogs []string // JavaScript dialogs the page opened (alert, ...)
}

type cdpReply struct {
	Result json.RawMessage `json:"result"`
	Error  *struct {
		Message string `json:"message"`
	} `json:"error"`
}

type cdpMessage struct {
	ID     int             `json:"id"`
	Method string          `json:"method"`
	Params json.RawMessage `json:"params"`
	cdpReply
}

// chromiumPath finds the chromium binary, or skips the test without it
// (failing it in CI, see withoutChromium).
func chromiumPath(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	fail, msg := withoutChromium(os.Getenv("CI"))
	if fail {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// withoutChromium says what a test that needs chromium does when it is
// not installed: skip, unless it runs in CI (CI=true), where it fails: CI
// installs chromium (make test), and a UI test that silently never runs
// proves nothing.
func withoutChromium(ci string) (fail bool, msg string) {
	if ci == "true" {
		return true, "chromium is not installed, and CI=true: the web UI test must run in CI (make test installs chromium: apt-get install -y chromium)"
	}
	return false, "chromium is not installed: the web UI test needs it (apt-get install -y chromium, or run make test, which installs it)"
}

var devtoolsRE = regexp.MustCompile(`DevTools listening on (ws://\S+)`)

// startBrowser starts headless Chromium with a fresh profile and
// connects to its page.
func startBrowser(t *testing.T) *browser {
	t.Helper()
	path := chromiumPath(t)
	profile, err := os.MkdirTemp("", "zrpc-e2e-chromium-")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(path, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
		"--disable-extensions", "--disable-background-networking", "--disable-sync",
		"--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
		"--remote-allow-origins=http://127.0.0.1", "--user-data-dir="+profile,
		"--window-size=1280,900", "about:blank")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // its helpers are stopped with it
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		os.RemoveAll(profile)
		t.Fatalf("start chromium: %v", err)
	}
	b := &browser{t: t, cmd: cmd, profile: profile, waiting: map[int]chan cdpReply{}, done: make(chan struct{})}
	t.Cleanup(b.close)

	found := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if m := devtoolsRE.FindStringSubmatch(sc.Text()); m != nil {
				found <- m[1]
			}
		}
	}()
	var browserURL string
	select {
	case browserURL = <-found:
	case <-time.After(30 * time.Second):
		t.Fatal("chromium did not say where its DevTools listen within 30s")
	}
	host := strings.TrimPrefix(browserURL, "ws://")
	host = host[:strings.Index(host, "/")]
	pageURL := b.pageTarget(host)
	b.ws, err = websocket.Dial(pageURL, "", "http://127.0.0.1")
	if err != nil {
		t.Fatalf("connect to chromium's page at %s: %v", pageURL, err)
	}
	go b.read()
	b.call("Page.enable", nil)
	b.call("Runtime.enable", nil)
	// Screenshots of 1280x900 whatever the headless window's decorations.
	b.call("Emulation.setDeviceMetricsOverride", map[string]any{"width": 1280, "height": 900, "deviceScaleFactor": 1, "mobile": false})
	return b
}

// pageTarget returns the DevTools URL of the browser's page.
func (b *browser) pageTarget(host string) string {
	var url string
	waitFor(b.t, 20*time.Second, "chromium's page target", func() bool {
		resp, err := http.Get("http://" + host + "/json/list")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var targets []struct{ Type, WebSocketDebuggerURL string }
		if err := json.NewDecoder(resp.Body).Decode(&targets); err != nil {
			return false
		}
		for _, tg := range targets {
			if tg.Type == "page" {
				url = tg.WebSocketDebuggerURL
				return url != ""
			}
		}
		return false
	})
	return url
}

// read dispatches replies to their callers and notes dialogs, until the
// connection ends.
func (b *browser) read() {
	defer close(b.done)
	for {
		var msg cdpMessage
		if err := websocket.JSON.Receive(b.ws, &msg); err != nil {
			return
		}
		b.mu.Lock()
		if msg.ID != 0 {
			if ch := b.waiting[msg.ID]; ch != nil {
				ch <- msg.cdpReply
				delete(b.waiting, msg.ID)
			}
		} else if msg.Method == "Page.javascriptDialogOpening" {
			b.dialogs = append(b.dialogs, string(msg.Params))
		}
		b.mu.Unlock()
	}
}

// call sends a DevTools command and returns its result.
func (b *browser) call(method string, params any) json.RawMessage {
	b.t.Helper()
	res, err := b.try(method, params)
	if err != nil {
		b.t.Fatal(err)
	}
	return res
}

// try sends a DevTools command and returns its result or error.
func (b *browser) try(method string, params any) (json.RawMessage, error) {
	ch := make(chan cdpReply, 1)
	b.mu.Lock()
	b.nextID++
	id := b.nextID
	b.waiting[id] = ch
	b.mu.Unlock()
	if err := websocket.JSON.Send(b.ws, map[string]any{"id": id, "method": method, "params": params}); err != nil {
		return nil, fmt.Errorf("chromium %s: %w", method, err)
	}
	select {
	case r := <-ch:
		if r.Error != nil {
			return nil, fmt.Errorf("chromium %s: %s", method, r.Error.Message)
		}
		return r.Result, nil
	case <-b.done:
		return nil, fmt.Errorf("chromium %s: the DevTools connection ended", method)
	case <-time.After(60 * time.Second):
		return nil, fmt.Errorf("chromium %s: no answer within 60s", method)
	}
}

// navigate loads url in the page.
func (b *browser) navigate(url string) {
	b.t.Helper()
	b.call("Page.navigate", map[string]any{"url": url})
}

// eval evaluates a JavaScript expression in the page and returns its
// value as JSON.
func (b *browser) eval(expr string) json.RawMessage {
	b.t.Helper()
	v, err := b.tryEval(expr)
	if err != nil {
		b.t.Fatal(err)
	}
	return v
}

// tryEval is eval returning its error: an evaluation that meets a
// navigation fails, and a poll tries again.
func (b *browser) tryEval(expr string) (json.RawMessage, error) {
	res, err := b.try("Runtime.evaluate", map[string]any{"expression": expr, "returnByValue": true})
	if err != nil {
		return nil, err
	}
	var out struct {
		Result struct {
			Value json.RawMessage `json:"value"`
		} `json:"result"`
		ExceptionDetails *struct {
			Text string `json:"text"`
		} `json:"exceptionDetails"`
	}
	if err := json.Unmarshal(res, &out); err != nil {
		return nil, fmt.Errorf("evaluate %s: %w", expr, err)
	}
	if out.ExceptionDetails != nil {
		return nil, fmt.Errorf("evaluate %s: %s", expr, out.ExceptionDetails.Text)
	}
	return out.Result.Value, nil
}

// dom is the page's DOM as HTML, as the page's script left it; "" while
// the page is navigating.
func (b *browser) dom() string {
	v, err := b.tryEval(`document.documentElement ? document.documentElement.outerHTML : ""`)
	var html string
	if err != nil || json.Unmarshal(v, &html) != nil {
		return ""
	}
	return html
}

// waitDOM waits until the DOM contains every one of want, and returns it.
func (b *browser) waitDOM(what string, want ...string) string {
	b.t.Helper()
	var html, missing string
	testwait.ForExplained(b.t, 30*time.Second, what, func() bool {
		html = b.dom()
		for _, w := range want {
			if !strings.Contains(html, w) {
				missing = w
				return false
			}
		}
		return true
	}, func() string { return fmt.Sprintf(": the page never showed %q; its DOM:\n%s", missing, html) })
	return html
}

// screenshot saves the page as a PNG.
func (b *browser) screenshot(path string) {
	b.t.Helper()
	var shot struct {
		Data string `json:"data"`
	}
	if err := json.Unmarshal(b.call("Page.captureScreenshot", map[string]any{"format": "png"}), &shot); err != nil {
		b.t.Fatal(err)
	}
	png, err := base64.StdEncoding.DecodeString(shot.Data)
	if err != nil {
		b.t.Fatalf("screenshot: %v", err)
	}
	if err := os.WriteFile(path, png, 0o644); err != nil {
		b.t.Fatal(err)
	}
}

// openedDialogs are the JavaScript dialogs the page opened so far.
func (b *browser) openedDialogs() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.dialogs...)
}

// close stops Chromium (asking first, then killing its process group)
// and removes its profile.
func (b *browser) close() {
	if b.ws != nil {
		b.ws.Close()
		<-b.done
	}
	exited := make(chan struct{})
	go func() {
		b.cmd.Wait()
		close(exited)
	}()
	b.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
	}
	syscall.Kill(-b.cmd.Process.Pid, syscall.SIGKILL)
	<-exited
	// Helpers that outlived the browser may still be writing for a moment.
	if !testwait.Until(10*time.Second, func() bool { return os.RemoveAll(b.profile) == nil }) {
		b.t.Errorf("remove chromium's profile %s: %v", b.profile, os.RemoveAll(b.profile))
	}
}
