package ctlcmd

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/zrpcio/zrpc/api/apierr"
	"github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/internal/testlog"
)

// blobFake is a fake agent serving the Blobs API from hooks, for what a
// real agent does not do on demand: send corrupt bytes, stall, fail mid
// stream. It counts its calls and records the puts it received.
type blobFake struct {
	zrpcpb.UnimplementedBlobsServer
	onGet    func(*zrpcpb.BlobGetRequest, zrpcpb.Blobs_GetServer) error
	afterPut func(ctx context.Context) // runs before a put answers
	putErr   error                     // a put's answer, when set

	addr  string
	calls atomic.Int64
	// begins and locates count the striped calls, which the fake answers
	// as an agent without them does (Unimplemented).
	begins, locates atomic.Int64
	mu              sync.Mutex
	headers         []*zrpcpb.BlobPutHeader
	puts            [][]byte
}

// start serves f on 127.0.0.1 until the test ends.
func (f *blobFake) start(t *testing.T) *blobFake {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	f.addr = lis.Addr().String()
	srv := grpc.NewServer()
	zrpcpb.RegisterBlobsServer(srv, f)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(lis)
	}()
	t.Cleanup(func() {
		srv.Stop()
		<-done
	})
	return f
}

func (f *blobFake) Get(req *zrpcpb.BlobGetRequest, stream zrpcpb.Blobs_GetServer) error {
	f.calls.Add(1)
	if f.onGet == nil {
		return f.UnimplementedBlobsServer.Get(req, stream)
	}
	return f.onGet(req, stream)
}

func (f *blobFake) BeginPut(ctx context.Context, req *zrpcpb.BeginPutRequest) (*zrpcpb.BeginPutResponse, error) {
	f.begins.Add(1)
	return f.UnimplementedBlobsServer.BeginPut(ctx, req)
}

func (f *blobFake) Locate(ctx context.Context, req *zrpcpb.LocateRequest) (*zrpcpb.LocateResponse, error) {
	f.locates.Add(1)
	return f.UnimplementedBlobsServer.Locate(ctx, req)
}

func (f *blobFake) Put(stream zrpcpb.Blobs_PutServer) error {
	f.calls.Add(1)
	var hdr *zrpcpb.BlobPutHeader
	var data []byte
	for {
		msg, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		if h := msg.GetHeader(); h != nil {
			hdr = h
		}
		data = append(data, msg.GetChunk()...)
	}
	f.mu.Lock()
	f.headers = append(f.headers, hdr)
	f.puts = append(f.puts, data)
	f.mu.Unlock()
	if f.afterPut != nil {
		f.afterPut(stream.Context())
	}
	if f.putErr != nil {
		return f.putErr
	}
	sum := sha256.Sum256(data)
	return stream.SendAndClose(&zrpcpb.BlobPutResponse{
		Header: &zrpcpb.ResponseHeader{Revision: 7},
		Blob: &zrpcpb.Blob{Name: hdr.GetName(), Size: uint64(len(data)), Sha256: sum[:],
			DataShards: max(hdr.GetDataShards(), 2), ParityShards: max(hdr.GetParityShards(), 1)},
	})
}

// fakeGet answers a get with blob's metadata, then data in two chunks,
// then end (nil: the stream ends cleanly).
func fakeGet(blob *zrpcpb.Blob, data []byte, end error) func(*zrpcpb.BlobGetRequest, zrpcpb.Blobs_GetServer) error {
	return func(_ *zrpcpb.BlobGetRequest, stream zrpcpb.Blobs_GetServer) error {
		if err := stream.Send(&zrpcpb.BlobGetResponse{Blob: blob}); err != nil {
			return err
		}
		half := len(data) / 2
		for _, chunk := range [][]byte{data[:half], data[half:]} {
			if err := stream.Send(&zrpcpb.BlobGetResponse{Chunk: chunk}); err != nil {
				return err
			}
		}
		return end
	}
}

// TestBlobGetLeavesNoPartialFile checks that a download that fails after
// bytes arrived leaves neither the destination nor a temporary file.
func TestBlobGetLeavesNoPartialFile(t *testing.T) {
	t.Setenv(addrEnv, "")
	data := bytes.Repeat([]byte("zrpc"), 1000)
	sum := sha256.Sum256(data)
	wrong := sha256.Sum256([]byte("something else"))
	tests := []struct {
		name  string
		get   func(*zrpcpb.BlobGetRequest, zrpcpb.Blobs_GetServer) error
		wants []string
	}{
		{"digest mismatch", fakeGet(&zrpcpb.Blob{Name: "a", Size: uint64(len(data)), Sha256: wrong[:]}, data, nil),
			[]string{"data corrupt", "Hint: the bytes read do not match the blob's SHA-256 digest; nothing was written to "}},
		{"stream cut", fakeGet(&zrpcpb.Blob{Name: "a", Size: uint64(len(data) * 2), Sha256: sum[:]}, data, errors.New("agent crashed")),
			[]string{"Error: get a: read blob \"a\": ", "agent crashed"}},
		{"fewer bytes than announced", fakeGet(&zrpcpb.Blob{Name: "a", Size: uint64(len(data) + 1), Sha256: sum[:]}, data, nil),
			[]string{"got 4000 bytes, want 4001"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := (&blobFake{onGet: tt.get}).start(t)
			dir := t.TempDir()
			dest := filepath.Join(dir, "a.bin")
			res := runZrpcctl(testContext(t), t, f.addr, "blob", "get", "a", dest)
			if res.err == nil {
				t.Fatal("get succeeded, want an error")
			}
			for _, want := range tt.wants {
				if !strings.Contains(res.stderr, want) {
					t.Errorf("stderr does not contain %q:\n%s", want, res.stderr)
				}
			}
			checkDirHolds(t, dir)
		})
	}
}

// checkDirHolds fails unless dir holds exactly the files names.
func checkDirHolds(t *testing.T, dir string, names ...string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range entries {
		got = append(got, e.Name())
	}
	if strings.Join(got, ",") != strings.Join(names, ",") {
		t.Errorf("%s holds %q, want %q", dir, got, names)
	}
}

// TestBlobTimeoutBoundsFirstAnswerOnly checks that --timeout ends a get
// whose agent does not answer, and does not end transfers that take longer
// than --timeout once the agent has answered.
func TestBlobTimeoutBoundsFirstAnswerOnly(t *testing.T) {
	t.Setenv(addrEnv, "")
	const timeout = 100 * time.Millisecond
	data := []byte("slow but steady")
	sum := sha256.Sum256(data)
	blob := &zrpcpb.Blob{Name: "a", Size: uint64(len(data)), Sha256: sum[:]}
	// stall waits three timeouts, or until the call ends.
	stall := func(ctx context.Context) {
		select {
		case <-time.After(3 * timeout):
		case <-ctx.Done():
		}
	}

	t.Run("get without an answer", func(t *testing.T) {
		f := (&blobFake{onGet: func(_ *zrpcpb.BlobGetRequest, stream zrpcpb.Blobs_GetServer) error {
			<-stream.Context().Done()
			return stream.Context().Err()
		}}).start(t)
		dir := t.TempDir()
		res := runZrpcctl(testContext(t), t, f.addr, "blob", "get", "a", filepath.Join(dir, "a"), "--timeout", timeout.String())
		if res.err == nil || !strings.Contains(res.stderr, "Hint: no answer within --timeout "+timeout.String()) {
			t.Fatalf("err = %v, want a timeout with a hint:\n%s", res.err, res.stderr)
		}
		checkDirHolds(t, dir)
	})
	t.Run("slow get", func(t *testing.T) {
		f := (&blobFake{onGet: func(req *zrpcpb.BlobGetRequest, stream zrpcpb.Blobs_GetServer) error {
			if err := stream.Send(&zrpcpb.BlobGetResponse{Blob: blob}); err != nil {
				return err
			}
			stall(stream.Context())
			return stream.Send(&zrpcpb.BlobGetResponse{Chunk: data})
		}}).start(t)
		res := runZrpcctl(testContext(t), t, f.addr, "blob", "get", "a", "-", "--timeout", timeout.String())
		if res.err != nil || res.stdout != string(data) {
			t.Fatalf("get = %v, stdout %q, want %q\n%s", res.err, res.stdout, data, res.stderr)
		}
	})
	t.Run("slow put", func(t *testing.T) {
		f := (&blobFake{afterPut: stall}).start(t)
		src := filepath.Join(t.TempDir(), "a")
		if err := os.WriteFile(src, data, 0o600); err != nil {
			t.Fatal(err)
		}
		res := runZrpcctl(testContext(t), t, f.addr, "blob", "put", src, "--timeout", timeout.String())
		if res.err != nil {
			t.Fatalf("put: %v\n%s", res.err, res.stderr)
		}
	})
}

// TestBlobPutSendsFlags checks the put header the agent receives: the
// file's size, the flags, and the name from the file or --name.
func TestBlobPutSendsFlags(t *testing.T) {
	t.Setenv(addrEnv, "")
	f := (&blobFake{}).start(t)
	data := bytes.Repeat([]byte{7}, 3000)
	src := filepath.Join(t.TempDir(), "model.bin")
	if err := os.WriteFile(src, data, 0o600); err != nil {
		t.Fatal(err)
	}
	res := runZrpcctl(testContext(t), t, f.addr, "blob", "put", src, "--data", "4", "--parity", "2", "--overwrite", "--best-effort")
	if res.err != nil {
		t.Fatalf("put: %v\n%s", res.err, res.stderr)
	}
	for _, want := range []string{"Name:     model.bin", "Size:     2.9 KiB (3000 bytes)", "K+M:      4+2", "Revision: 7"} {
		if !strings.Contains(res.stdout, want) {
			t.Errorf("output does not contain %q:\n%s", want, res.stdout)
		}
	}
	res = runZrpcctlStdin(testContext(t), t, f.addr, bytes.NewReader(data), "blob", "put", "-", "--name", "from/stdin")
	if res.err != nil {
		t.Fatalf("put from stdin: %v\n%s", res.err, res.stderr)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	want := []*zrpcpb.BlobPutHeader{
		{Name: "model.bin", Size: int64(len(data)), DataShards: 4, ParityShards: 2, Overwrite: true, BestEffort: true},
		{Name: "from/stdin"}, // size unknown
	}
	if len(f.headers) != len(want) {
		t.Fatalf("agent got %d puts, want %d", len(f.headers), len(want))
	}
	for i, h := range f.headers {
		w := want[i]
		if h.GetName() != w.GetName() || h.GetSize() != w.GetSize() || h.GetDataShards() != w.GetDataShards() ||
			h.GetParityShards() != w.GetParityShards() || h.GetOverwrite() != w.GetOverwrite() || h.GetBestEffort() != w.GetBestEffort() {
			t.Errorf("put %d header = %v, want %v", i, h, w)
		}
		if !bytes.Equal(f.puts[i], data) {
			t.Errorf("put %d carried %d bytes, want the %d of the source", i, len(f.puts[i]), len(data))
		}
	}
}

// --through-agent sends a put's bytes and reads a get's through the agent
// zrpcctl talks to, without asking for a placement or the holders.
func TestBlobThroughAgentSkipsTheStripedCalls(t *testing.T) {
	t.Setenv(addrEnv, "")
	data := bytes.Repeat([]byte{9}, 100<<10) // larger than any inline limit
	sum := sha256.Sum256(data)
	f := (&blobFake{onGet: fakeGet(&zrpcpb.Blob{Name: "b", Size: uint64(len(data)), Sha256: sum[:]}, data, nil)}).start(t)
	src := filepath.Join(t.TempDir(), "b")
	if err := os.WriteFile(src, data, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		through         bool
		begins, locates int64
	}{{true, 0, 0}, {false, 1, 1}} {
		f.begins.Store(0)
		f.locates.Store(0)
		args := []string{"blob", "put", src, "--overwrite"}
		getArgs := []string{"blob", "get", "b", filepath.Join(t.TempDir(), "out"), "--force"}
		if c.through {
			args = append(args, "--through-agent")
			getArgs = append(getArgs, "--through-agent")
		}
		if res := runZrpcctl(testContext(t), t, f.addr, args...); res.err != nil {
			t.Fatalf("put %v: %v\n%s", args, res.err, res.stderr)
		}
		if res := runZrpcctl(testContext(t), t, f.addr, getArgs...); res.err != nil {
			t.Fatalf("get %v: %v\n%s", getArgs, res.err, res.stderr)
		}
		if got := f.begins.Load(); got != c.begins {
			t.Errorf("through agent %v: %d BeginPut calls, want %d", c.through, got, c.begins)
		}
		if got := f.locates.Load(); got != c.locates {
			t.Errorf("through agent %v: %d Locate calls, want %d", c.through, got, c.locates)
		}
	}
}

// TestBlobInputErrors checks that malformed arguments fail with a clear
// message before any request reaches an agent.
func TestBlobInputErrors(t *testing.T) {
	t.Setenv(addrEnv, "")
	f := (&blobFake{}).start(t)
	src := filepath.Join(t.TempDir(), "a")
	if err := os.WriteFile(src, []byte("a"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"stdin without name", []string{"blob", "put", "-"}, "reading stdin (-) needs --name"},
		{"parity without data", []string{"blob", "put", src, "--parity", "2"}, "--parity needs --data"},
		{"negative data", []string{"blob", "put", src, "--data", "-1"}, "invalid --data -1: want 0 to 256"},
		{"too many parity", []string{"blob", "put", src, "--data", "2", "--parity", "300"}, "invalid --parity 300: want 0 to 256"},
		{"put without file", []string{"blob", "put"}, "blob put takes the FILE to store (- for stdin)"},
		{"get with three args", []string{"blob", "get", "a", "b", "c"}, "accepts between 1 and 2 arg(s)"},
		{"bad offset", []string{"blob", "get", "a", "--offset", "-5"}, `invalid argument "-5" for "--offset"`},
		{"missing source", []string{"blob", "put", src + ".missing"}, "open source: "},
		{"directory source", []string{"blob", "put", filepath.Dir(src)}, "is a directory: put stores one file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := runZrpcctl(testContext(t), t, f.addr, tt.args...)
			if res.err == nil || !strings.Contains(res.err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to contain %q", res.err, tt.want)
			}
		})
	}
	if n := f.calls.Load(); n != 0 {
		t.Fatalf("the agent got %d calls, want 0", n)
	}
}

// runZrpcctlStdin runs zrpcctl against the agent at addr with stdin as its
// standard input.
func runZrpcctlStdin(ctx context.Context, t *testing.T, addr string, stdin io.Reader, args ...string) runResult {
	t.Helper()
	var out, errOut testlog.Buffer
	cmd := NewCommand()
	cmd.SetIn(stdin)
	cmd.SetOut(&out)
	cmd.SetErr(&errOut)
	cmd.SetArgs(append([]string{"--addr", addr}, args...))
	err := cmd.ExecuteContext(ctx)
	return runResult{stdout: out.String(), stderr: errOut.String(), err: err}
}

// TestBlobGetInterrupted cancels a get mid-stream, as Ctrl-C does: it
// reports the interruption and leaves no file behind.
func TestBlobGetInterrupted(t *testing.T) {
	t.Setenv(addrEnv, "")
	sent := make(chan struct{})
	f := (&blobFake{onGet: func(_ *zrpcpb.BlobGetRequest, stream zrpcpb.Blobs_GetServer) error {
		for _, msg := range []*zrpcpb.BlobGetResponse{{Blob: &zrpcpb.Blob{Name: "a", Size: 10}}, {Chunk: []byte("half!")}} {
			if err := stream.Send(msg); err != nil {
				return err
			}
		}
		close(sent)
		<-stream.Context().Done()
		return stream.Context().Err()
	}}).start(t)
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(testContext(t))
	defer cancel()
	go func() {
		<-sent
		cancel()
	}()
	dest := filepath.Join(dir, "a")
	res := runZrpcctl(ctx, t, f.addr, "blob", "get", "a", dest)
	if res.err == nil || !strings.Contains(res.stderr, "Error: get a: interrupted\nHint: nothing was written to "+dest) {
		t.Fatalf("err = %v, want an interruption:\n%s", res.err, res.stderr)
	}
	checkDirHolds(t, dir)
}

// TestBlobPutOutcomeUnknown: a put whose outcome is unknown, because the
// agent says so or because zrpcctl was stopped after sending every byte,
// is reported as such with what to do, never as plainly failed or
// interrupted (a retry could then find the blob stored).
func TestBlobPutOutcomeUnknown(t *testing.T) {
	t.Setenv(addrEnv, "")
	src := filepath.Join(t.TempDir(), "model.bin")
	if err := os.WriteFile(src, bytes.Repeat([]byte{7}, 3000), 0o600); err != nil {
		t.Fatal(err)
	}
	hint := "Hint: the put may or may not have been stored: run `zrpcctl blob stat model.bin`"

	f := (&blobFake{putErr: apierr.ToStatus(fmt.Errorf("%w: commit of blob \"model.bin\" was proposed, but no answer came", apierr.ErrOutcomeUnknown))}).start(t)
	res := runZrpcctl(testContext(t), t, f.addr, "blob", "put", src)
	if res.err == nil || !strings.Contains(res.stderr, "outcome unknown") || !strings.Contains(res.stderr, hint) {
		t.Fatalf("agent answers outcome unknown: err %v; want the outcome reported unknown with a hint:\n%s", res.err, res.stderr)
	}

	ctx, cancel := context.WithCancel(testContext(t))
	defer cancel()
	f = (&blobFake{afterPut: func(sctx context.Context) {
		cancel() // Ctrl-C once every byte has arrived
		<-sctx.Done()
	}}).start(t)
	res = runZrpcctl(ctx, t, f.addr, "blob", "put", src)
	if res.err == nil || strings.Contains(res.stderr, "interrupted") || !strings.Contains(res.stderr, hint) {
		t.Fatalf("put stopped after every byte was sent: err %v; want the outcome reported unknown with a hint:\n%s", res.err, res.stderr)
	}
}
