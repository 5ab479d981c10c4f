package ctlcmd

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/cli"
	"github.com/zrpcio/zrpc/client"
)

// maxDebugResponse bounds what one HTTP capture reads (a goroutine dump
// of a large agent is some MiB).
const maxDebugResponse = 256 << 20

// debugRun is one `zrpcctl debug`: it captures from one agent into an
// archive.
type debugRun struct {
	flags    *debugFlags
	opts     *options
	client   *client.Client
	progress io.Writer
	path     string

	http    *http.Client
	archive *debugArchive
	// lastMetrics is the latest metrics sample, for watches.txt.
	lastMetrics []byte
}

// debugIndex is index.json: what the archive holds and what failed.
type debugIndex struct {
	Agent       string         `json:"agent"`
	HTTP        string         `json:"http"`
	Node        string         `json:"node,omitempty"`
	Zrpcctl     string         `json:"zrpcctl_version"`
	Started     time.Time      `json:"started"`
	Ended       time.Time      `json:"ended"`
	Duration    string         `json:"duration"`
	Interval    string         `json:"interval"`
	Interrupted bool           `json:"interrupted,omitempty"`
	Files       []debugFile    `json:"files"`
	Failed      []debugFailure `json:"failed,omitempty"`
}

type debugFile struct {
	Name  string `json:"name"`
	Bytes int    `json:"bytes"`
}

type debugFailure struct {
	Capture string `json:"capture"`
	Error   string `json:"error"`
}

var debugJSON = protojson.MarshalOptions{UseProtoNames: true}

// indentJSON indents compact JSON the same way every time (protojson's
// own indentation varies on purpose).
func indentJSON(compact []byte) ([]byte, error) {
	var out bytes.Buffer
	if err := json.Indent(&out, compact, "", "  "); err != nil {
		return nil, err
	}
	out.WriteByte('\n')
	return out.Bytes(), nil
}

// run captures for --duration (or until ctx ends: Ctrl-C) and writes the
// archive.
func (d *debugRun) run(ctx context.Context) error {
	d.http = &http.Client{}
	start := time.Now() // its monotonic reading measures the capture
	index := &debugIndex{
		Agent: d.opts.addr, HTTP: d.flags.httpAddr, Zrpcctl: cli.Version, Started: start.UTC(),
		Duration: d.flags.duration.String(), Interval: d.flags.interval.String(),
	}
	// A first call tells an agent that cannot be reached (nothing to
	// capture, no archive) from one that refuses some captures.
	st, stErr := d.rawStatus(ctx)
	switch code := status.Code(stErr); {
	case stErr == nil:
		index.Node = st.GetNode()
	case code == codes.Unavailable || code == codes.DeadlineExceeded || errors.Is(stErr, context.DeadlineExceeded):
		return fmt.Errorf("nothing captured, no archive written: the agent does not answer: %w", stErr)
	}
	a, err := newDebugArchive(d.path)
	if err != nil {
		return err
	}
	d.archive = a
	defer a.abort()
	// An archive that cannot be written (a full disk) ends the capture at
	// once: capturing on for --duration would only end in that error.
	ctx, stopCapture := context.WithCancelCause(ctx)
	defer stopCapture(nil)
	a.onFail = stopCapture
	fmt.Fprintf(d.progress, "Capturing from agent %s (%s, HTTP %s) for %s, a sample every %s, into %s\n",
		index.Node, d.opts.addr, d.flags.httpAddr, d.flags.duration, d.flags.interval, d.path)
	if stErr != nil {
		a.failed("status.json", d.opts.explain(stErr))
	}
	d.captureState(ctx, st)

	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		d.captureCPU(ctx)
	}()
	index.Interrupted = d.sample(ctx)
	wg.Wait()
	if err := a.writeErr(); err != nil {
		return fmt.Errorf("%w; the capture stopped there: %s was not written", err, d.path)
	}
	if index.Interrupted {
		fmt.Fprintln(d.progress, "Interrupted: writing what was captured")
	} else {
		d.captureEnd(ctx)
	}
	if d.lastMetrics != nil {
		a.add("watches.txt", watchSeries(d.lastMetrics))
	}
	index.Ended = time.Now().UTC()
	files, failed, err := a.finish(index)
	if err != nil {
		return err
	}
	if a.path != d.path {
		fmt.Fprintf(d.progress, "%s was created during the capture: the archive takes the name %s\n", d.path, a.path)
		d.path = a.path
	}
	fmt.Fprintf(d.progress, "Wrote %s: %d files, %d captures failed\n", d.path, files, failed)
	if index.Interrupted {
		return fmt.Errorf("interrupted after %s: %s holds what was captured until then", time.Since(start).Round(time.Second), d.path)
	}
	if failed > 0 {
		return fmt.Errorf("%d captures failed (index.json in %s lists them; the rest is there)", failed, d.path)
	}
	return nil
}

// captureState captures what is taken once, at the start: the status
// (already asked), version, Raft peers, repair queue and config.
func (d *debugRun) captureState(ctx context.Context, st *zrpcpb.StatusResponse) {
	if st != nil {
		d.addProto("status.json", st)
	}
	d.captureProto(ctx, "version.json", func(ctx context.Context) (proto.Message, error) { return d.client.Version(ctx) })
	d.captureList(ctx, "peers.json", func(ctx context.Context) ([]proto.Message, error) {
		peers, err := d.client.Peers(ctx)
		return protoSlice(peers), err
	})
	d.captureProto(ctx, "repair.json", func(ctx context.Context) (proto.Message, error) { return d.client.RepairStatus(ctx) })
	d.captureHTTP(ctx, "config.json", "/debug/zrpc/config", d.opts.timeout)
}

// sample takes a sample now and every --interval until --duration has
// passed; it reports whether ctx ended first.
func (d *debugRun) sample(ctx context.Context) (interrupted bool) {
	start := time.Now()
	total := int(d.flags.duration/d.flags.interval) + 1
	tick := time.NewTicker(d.flags.interval)
	defer tick.Stop()
	for i := 0; ; i++ {
		fmt.Fprintf(d.progress, "Sample %d/%d\n", i+1, total)
		dir := fmt.Sprintf("interval-%02d/", i)
		if m, ok := d.captureHTTP(ctx, dir+"metrics.prom", "/metrics", d.opts.timeout); ok {
			d.lastMetrics = m
		}
		d.captureProto(ctx, dir+"status.json", func(ctx context.Context) (proto.Message, error) { return d.client.Status(ctx) })
		d.captureList(ctx, dir+"members.json", func(ctx context.Context) ([]proto.Message, error) {
			ms, err := d.client.Members(ctx)
			return protoSlice(ms), err
		})
		if i+1 >= total || time.Since(start) >= d.flags.duration {
			return ctx.Err() != nil
		}
		select {
		case <-ctx.Done():
			return true
		case <-tick.C:
		}
	}
}

// captureCPU takes a CPU profile over --duration.
func (d *debugRun) captureCPU(ctx context.Context) {
	secs := int(d.flags.duration.Round(time.Second) / time.Second)
	fmt.Fprintf(d.progress, "CPU profile over %ds\n", secs)
	d.captureHTTP(ctx, "cpu.pprof", "/debug/pprof/profile?seconds="+strconv.Itoa(secs), d.flags.duration+d.opts.timeout+5*time.Second)
}

// captureEnd captures what is taken once, at the end.
func (d *debugRun) captureEnd(ctx context.Context) {
	fmt.Fprintln(d.progress, "Heap and goroutine profiles, logs")
	d.captureHTTP(ctx, "heap.pprof", "/debug/pprof/heap", d.opts.timeout)
	d.captureHTTP(ctx, "goroutine.txt", "/debug/pprof/goroutine?debug=2", d.opts.timeout)
	d.captureHTTP(ctx, "logs.txt", "/debug/zrpc/logs", d.opts.timeout)
}

func (d *debugRun) rawStatus(ctx context.Context) (*zrpcpb.StatusResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, d.opts.timeout)
	defer cancel()
	return d.client.Status(ctx)
}

func (d *debugRun) addProto(name string, m proto.Message) {
	b, err := debugJSON.Marshal(m)
	if err == nil {
		b, err = indentJSON(b)
	}
	if err != nil {
		d.archive.failed(name, err)
		return
	}
	d.archive.add(name, b)
}

// captureProto writes what get answers as name, or records its failure.
func (d *debugRun) captureProto(ctx context.Context, name string, get func(context.Context) (proto.Message, error)) {
	ctx, cancel := context.WithTimeout(ctx, d.opts.timeout)
	defer cancel()
	m, err := get(ctx)
	if err != nil {
		d.archive.failed(name, d.opts.explain(err))
		return
	}
	d.addProto(name, m)
}

// captureList writes what get answers as a JSON array.
func (d *debugRun) captureList(ctx context.Context, name string, get func(context.Context) ([]proto.Message, error)) {
	ctx, cancel := context.WithTimeout(ctx, d.opts.timeout)
	defer cancel()
	ms, err := get(ctx)
	if err != nil {
		d.archive.failed(name, d.opts.explain(err))
		return
	}
	var buf bytes.Buffer
	buf.WriteString("[")
	for i, m := range ms {
		b, err := debugJSON.Marshal(m)
		if err != nil {
			d.archive.failed(name, err)
			return
		}
		if i > 0 {
			buf.WriteString(",")
		}
		buf.Write(b)
	}
	buf.WriteString("]")
	b, err := indentJSON(buf.Bytes())
	if err != nil {
		d.archive.failed(name, err)
		return
	}
	d.archive.add(name, b)
}

func protoSlice[T proto.Message](in []T) []proto.Message {
	out := make([]proto.Message, len(in))
	for i, m := range in {
		out[i] = m
	}
	return out
}

// captureHTTP GETs path from the agent's HTTP endpoint (with the ACL
// token, when zrpcctl has one) and writes the body as name.
func (d *debugRun) captureHTTP(ctx context.Context, name, path string, timeout time.Duration) ([]byte, bool) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	b, err := d.get(ctx, path)
	if err != nil {
		d.archive.failed(name, err)
		return nil, false
	}
	d.archive.add(name, b)
	return b, true
}

func (d *debugRun) get(ctx context.Context, path string) ([]byte, error) {
	url := "http://" + d.flags.httpAddr + path
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	if d.opts.token != "" {
		req.Header.Set("Authorization", "Bearer "+d.opts.token)
	}
	resp, err := d.http.Do(req)
	if err != nil {
		if ctx.Err() != nil && errors.Is(context.Cause(ctx), context.Canceled) {
			return nil, fmt.Errorf("GET %s: interrupted", path)
		}
		return nil, fmt.Errorf("GET %s: %w (is the agent's HTTP endpoint at --http-addr %s?)", path, err, d.flags.httpAddr)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxDebugResponse+1))
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", path, err)
	}
	switch {
	case resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden:
		return nil, fmt.Errorf("GET %s: refused (%s): %s; with ACLs on it needs a token with operator:read (--token-file or $%s)",
			path, resp.Status, strings.TrimSpace(firstLine(body)), tokenEnv)
	case resp.StatusCode != http.StatusOK:
		return nil, fmt.Errorf("GET %s: %s: %s", path, resp.Status, strings.TrimSpace(firstLine(body)))
	case len(body) > maxDebugResponse:
		return nil, fmt.Errorf("GET %s: more than %d bytes", path, maxDebugResponse)
	}
	return body, nil
}

func firstLine(b []byte) string {
	line, _, _ := bytes.Cut(b, []byte("\n"))
	if len(line) > 300 {
		line = line[:300]
	}
	return string(line)
}

// watchSeries returns the watch metrics of a Prometheus text sample: open
// Watch streams, their queued bytes and the streams ended as too slow.
func watchSeries(metrics []byte) []byte {
	var out bytes.Buffer
	sc := bufio.NewScanner(bytes.NewReader(metrics))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		name := strings.TrimPrefix(strings.TrimPrefix(line, "# HELP "), "# TYPE ")
		if strings.HasPrefix(name, "zrpc_registry_watch") {
			out.WriteString(line + "\n")
		}
	}
	return out.Bytes()
}

// debugArchive is the .tar.gz being written: a temporary file next to the
// archive's path, renamed to it by finish. Captures may be added from
// several goroutines.
type debugArchive struct {
	path  string
	mu    sync.Mutex
	tmp   *os.File
	gz    *gzip.Writer
	tw    *tar.Writer
	files []debugFile
	fails []debugFailure
	err   error // the first write error
	done  bool
	// onFail, if set, is called with the first write error.
	onFail func(error)
}

// createArchiveTemp creates the archive's temporary file; a variable so
// that tests can give one that cannot be written.
var createArchiveTemp = os.CreateTemp

func newDebugArchive(path string) (*debugArchive, error) {
	tmp, err := createArchiveTemp(filepath.Dir(path), ".zrpc-debug-*.tmp")
	if err != nil {
		return nil, fmt.Errorf("create the archive: %w", err)
	}
	gz := gzip.NewWriter(tmp)
	return &debugArchive{path: path, tmp: tmp, gz: gz, tw: tar.NewWriter(gz)}, nil
}

// add writes one file into the archive.
func (a *debugArchive) add(name string, data []byte) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.err != nil {
		return
	}
	// Whole seconds, as the header holds them: rounded up, a file extracted
	// at once would be from the future.
	hdr := &tar.Header{Name: name, Mode: 0o600, Size: int64(len(data)), ModTime: time.Now().Truncate(time.Second), Typeflag: tar.TypeReg}
	err := a.tw.WriteHeader(hdr)
	if err == nil {
		_, err = a.tw.Write(data)
	}
	if err != nil {
		a.err = fmt.Errorf("write %s into the archive: %w", name, err)
		if a.onFail != nil {
			a.onFail(a.err)
		}
		return
	}
	a.files = append(a.files, debugFile{Name: name, Bytes: len(data)})
}

// writeErr is the first error writing the archive, if any.
func (a *debugArchive) writeErr() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.err
}

// failed records a capture that failed.
func (a *debugArchive) failed(name string, err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.fails = append(a.fails, debugFailure{Capture: name, Error: err.Error()})
}

// finish writes index.json, closes the archive and moves it to its path;
// it returns how many files it holds and how many captures failed.
func (a *debugArchive) finish(index *debugIndex) (files, failed int, err error) {
	a.mu.Lock()
	index.Files, index.Failed = append([]debugFile(nil), a.files...), append([]debugFailure(nil), a.fails...)
	a.mu.Unlock()
	b, err := json.MarshalIndent(index, "", "  ")
	if err != nil {
		return 0, 0, err
	}
	a.add("index.json", append(b, '\n'))
	a.mu.Lock()
	defer a.mu.Unlock()
	a.done = true
	err = a.err
	for _, c := range []io.Closer{a.tw, a.gz} {
		if cerr := c.Close(); err == nil && cerr != nil {
			err = cerr
		}
	}
	if err == nil {
		err = a.tmp.Sync()
	}
	if cerr := a.tmp.Close(); err == nil && cerr != nil {
		err = cerr
	}
	if err == nil {
		a.path, err = placeArchive(a.tmp.Name(), a.path)
	}
	if err != nil {
		os.Remove(a.tmp.Name())
		return 0, 0, fmt.Errorf("write the archive %s: %w", a.path, err)
	}
	return len(index.Files) + 1, len(index.Failed), nil
}

// placeArchive gives the complete archive tmp the name path or, when a
// file took that name during the capture (a zrpcctl debug of another
// agent, started in the same second, writes the same default name), the
// first free one of path-2, path-3, ... It never replaces a file. It
// returns the name the archive has.
func placeArchive(tmp, path string) (string, error) {
	stem, ext := path, ""
	for _, e := range []string{".tar.gz", ".tgz"} {
		if s, ok := strings.CutSuffix(path, e); ok {
			stem, ext = s, e
			break
		}
	}
	const tries = 100
	for i := 1; i <= tries; i++ {
		name := path
		if i > 1 {
			name = fmt.Sprintf("%s-%d%s", stem, i, ext)
		}
		switch err := placeFile(tmp, name, false); {
		case errors.Is(err, fs.ErrExist):
			continue
		case err != nil:
			return path, err
		}
		os.Remove(tmp) // left by a hard link; a rename took it already
		return name, nil
	}
	return path, fmt.Errorf("%s and the %d names numbered after it exist: free one of them and capture again", path, tries-1)
}

// abort removes the temporary file unless finish ran.
func (a *debugArchive) abort() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.done {
		return
	}
	a.done = true
	a.tmp.Close()
	os.Remove(a.tmp.Name())
}
