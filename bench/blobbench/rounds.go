package blobbench

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/bench/internal/proc"
	"github.com/zrpcio/zrpc/bench/internal/zrpcd"
)

// opTimeout bounds one client process (a put or a get).
const opTimeout = 15 * time.Minute

// blobName is the name of the blob (and of the stream server's file).
const blobName = "bench.bin"

// clientRun is what one client process took.
type clientRun struct {
	seconds, cpu float64
	stdout       []byte
}

// runClient runs bin with args, its stderr appended to rdir/name.log, and
// measures its wall time (from the start of the process to its exit) and
// CPU time.
func runClient(ctx context.Context, rdir, name, bin string, args ...string) (clientRun, error) {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	logPath := filepath.Join(rdir, name+".log")
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return clientRun{}, err
	}
	defer logf.Close()
	var out bytes.Buffer
	cmd := proc.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = &out, logf
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return clientRun{}, fmt.Errorf("start %s: %w", name, err)
	}
	stop := context.AfterFunc(ctx, func() { cmd.Process.Kill() })
	err = cmd.Wait()
	elapsed := time.Since(start)
	stop()
	if ctx.Err() != nil {
		return clientRun{}, fmt.Errorf("%s: %w (log %s)", name, ctx.Err(), logPath)
	}
	if err != nil {
		b, _ := os.ReadFile(logPath)
		return clientRun{}, fmt.Errorf("%s: %w\n%s", name, err, tail(string(b)))
	}
	st := cmd.ProcessState
	return clientRun{seconds: elapsed.Seconds(), cpu: (st.UserTime() + st.SystemTime()).Seconds(), stdout: out.Bytes()}, nil
}

// cpuSeconds is the CPU time so far of the processes that have not
// exited, summed.
func cpuSeconds(ps []*proc.Process) float64 {
	var sum float64
	for _, p := range ps {
		if d, err := p.CPUTime(); err == nil {
			sum += d.Seconds()
		}
	}
	return sum
}

// runMeasured runs one client process and reads the servers' CPU time around
// it.
func runMeasured(ctx context.Context, r Round, op string, src source, servers []*proc.Process, rdir, bin string, args ...string) (Sample, []byte, error) {
	before := cpuSeconds(servers)
	run, err := runClient(ctx, rdir, op, bin, args...)
	if err != nil {
		return Sample{}, nil, err
	}
	after := cpuSeconds(servers)
	return Sample{Round: r, Op: op, Bytes: src.size, Seconds: run.seconds,
		ServerCPUSeconds: after - before, ClientCPUSeconds: run.cpu}, run.stdout, nil
}

// getAndVerify measures one get into dst and checks its bytes.
func getAndVerify(ctx context.Context, r Round, op string, src source, servers []*proc.Process, rdir, dst, bin string, args ...string) (Sample, error) {
	s, _, err := runMeasured(ctx, r, op, src, servers, rdir, bin, args...)
	if err != nil {
		return Sample{}, err
	}
	defer os.Remove(dst)
	if err := src.verify(dst); err != nil {
		return Sample{}, fmt.Errorf("%s: %w", op, err)
	}
	return s, nil
}

// streamRound puts the data over the plain stream to a fresh server
// process and gets it back.
func streamRound(ctx context.Context, bins Binaries, rdir string, r Round, src source) ([]Sample, error) {
	sdir := filepath.Join(rdir, "files")
	if err := os.MkdirAll(sdir, 0o700); err != nil {
		return nil, err
	}
	defer os.RemoveAll(sdir)
	ports, err := proc.FreePorts(1)
	if err != nil {
		return nil, err
	}
	addr := "127.0.0.1:" + strconv.Itoa(ports[0])
	p, err := proc.Start(rdir, "stream-server", bins.Self, "serve", "--listen", addr, "--dir", sdir)
	if err != nil {
		return nil, err
	}
	defer p.Stop()
	if err := proc.WaitLog(ctx, p, Listening, zrpcd.ReadyTimeout); err != nil {
		return nil, err
	}
	servers := []*proc.Process{p}
	put, _, err := runMeasured(ctx, r, OpPut, src, servers, rdir, bins.Self, "put", "--target", addr, "--file", src.path, "--name", blobName)
	if err != nil {
		return nil, err
	}
	out := []Sample{put}
	dst := filepath.Join(rdir, "got.bin")
	get, err := getAndVerify(ctx, r, OpGet, src, servers, rdir, dst, bins.Self, "get", "--target", addr, "--name", blobName, "--out", dst)
	if err != nil {
		return out, err
	}
	return append(out, get), p.Stop()
}

// copyRound copies the data with cp and fsyncs the copy.
func copyRound(ctx context.Context, rdir string, r Round, src source) ([]Sample, error) {
	dst := filepath.Join(rdir, "copy.bin")
	defer os.Remove(dst)
	start := time.Now()
	run, err := runClient(ctx, rdir, "cp", "cp", src.path, dst)
	if err != nil {
		return nil, err
	}
	if err := fsyncFile(dst); err != nil {
		return nil, err
	}
	elapsed := time.Since(start)
	if err := src.verify(dst); err != nil {
		return nil, fmt.Errorf("cp: %w", err)
	}
	return []Sample{{Round: r, Op: OpPut, Bytes: src.size, Seconds: elapsed.Seconds(), ClientCPUSeconds: run.cpu}}, nil
}

func fsyncFile(path string) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("fsync %s: %w", path, err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", path, err)
	}
	return f.Close()
}

// zrpcRound starts a fresh cluster, puts the data with zrpcctl, gets it,
// kills m agents (the blob's parity count) with SIGKILL and gets it again.
func zrpcRound(ctx context.Context, bins Binaries, rdir string, r Round, src source) ([]Sample, error) {
	c, err := startCluster(ctx, bins.Zrpcd, rdir, r.Agents, r.BlockSize)
	if err != nil {
		return nil, err
	}
	defer c.remove()
	entry := c.agents[0]
	ctl := func(args ...string) []string {
		return append([]string{"--addr", entry.grpcAddr, "--timeout", "1m"}, args...)
	}
	put, stdout, err := runMeasured(ctx, r, OpPut, src, c.procs(), rdir, bins.Zrpcctl,
		ctl("-o", "json", "blob", "put", src.path, "--name", blobName)...)
	if err != nil {
		return nil, err
	}
	var resp zrpcpb.BlobPutResponse
	if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(stdout, &resp); err != nil {
		return nil, fmt.Errorf("zrpcctl blob put printed %q: %w", stdout, err)
	}
	if got := resp.GetBlob().GetSha256(); !bytes.Equal(got, src.sha256[:]) {
		return nil, fmt.Errorf("put: %w (the put reports SHA-256 %x, the data has %x)", ErrWrongBytes, got, src.sha256)
	}
	out := []Sample{put}
	dst := filepath.Join(rdir, "got.bin")
	getArgs := ctl("blob", "get", blobName, dst, "--force")
	get, err := getAndVerify(ctx, r, OpGet, src, c.procs(), rdir, dst, bins.Zrpcctl, getArgs...)
	if err != nil {
		return out, err
	}
	out = append(out, get)
	killed, err := c.killParity(ctx, int(resp.GetBlob().GetParityShards()))
	if err != nil {
		return out, err
	}
	deg, err := getAndVerify(ctx, r, OpDegradedGet, src, c.procs(), rdir, dst, bins.Zrpcctl, getArgs...)
	if err != nil {
		return out, fmt.Errorf("with %v killed: %w", killed, err)
	}
	deg.Killed = killed
	return append(out, deg), c.stop()
}

func tail(s string) string {
	const max = 2000
	if len(s) > max {
		s = s[len(s)-max:]
	}
	return string(bytes.TrimSpace([]byte(s)))
}
