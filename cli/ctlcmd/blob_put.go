package ctlcmd

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/zrpcio/zrpc/api/apierr"
	"github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/client"
)

// maxShards bounds --data and --parity (the agent allows 256 in all).
const maxShards = 256

// blobPutFlags are the flags of `blob put`.
type blobPutFlags struct {
	name                  string
	data, parity          int
	overwrite, bestEffort bool
	throughAgent          bool
}

// hints are the remedies `blob put` suggests for its errors; name is the
// blob's.
func (f *blobPutFlags) hints(name string) []blobHint {
	tooFew := "too few agents are alive for this k+m (see `zrpcctl members`); lower --data/--parity, or pass --best-effort to let repair store the missing shards later"
	if f.bestEffort {
		// Even a best-effort put must store k+1 shards of each block.
		tooFew = "too few agents are alive even for --best-effort, which needs k+1 of them (see `zrpcctl members`); lower --data, or retry when agents are back"
	}
	return []blobHint{
		// Before AlreadyExists: a put whose outcome is unknown must not be
		// retried blindly.
		{apierr.ErrOutcomeUnknown, "the put may or may not have been stored: run `zrpcctl blob stat " + name + "`: " +
			"if it shows the blob with this file's size and SHA-256, the put succeeded; if it says a put of it has not finished, " +
			"stat again in a moment; if it says not found, put again"},
		{apierr.ErrAlreadyExists, "choose another --name, or pass --overwrite to replace the stored blob"},
		// Before NotEnoughShards: shards that found no room are its cause.
		{apierr.ErrNoSpace, "an agent's shard store is full (its disk, or its --shard-max-bytes): free space there, delete blobs with `zrpcctl blob rm`, or add agents"},
		{apierr.ErrNotEnoughShards, tooFew},
		{apierr.ErrTooLarge, "the agents' --blob-max-size bounds one blob; split the file or raise the limit"},
	}
}

// spaceCause makes a put's error that says shards found no room wrap
// ErrNoSpace: an agent that spread the shards answers with one status,
// not enough shards, and names the cause only in its message.
func spaceCause(err error) error {
	if err != nil && !errors.Is(err, apierr.ErrNoSpace) && strings.Contains(err.Error(), apierr.ErrNoSpace.Error()) {
		return &causedError{err: err, cause: apierr.ErrNoSpace}
	}
	return err
}

// causedError is err, also wrapping a sentinel its message names.
type causedError struct{ err, cause error }

func (e *causedError) Error() string   { return e.err.Error() }
func (e *causedError) Unwrap() []error { return []error{e.err, e.cause} }

func newBlobPutCommand(o *options) *cobra.Command {
	var f blobPutFlags
	cmd := &cobra.Command{
		Use:   "put FILE|- [--name NAME]",
		Short: "Store a file, or stdin, as a blob",
		Long: `Store FILE as the blob NAME (--name, default: FILE's base name); "-" reads
stdin, which needs --name. zrpcctl cuts it into blocks, encodes each into
k data and m parity shards and streams each shard straight to one of k+m
agents (a blob of at most 64 KiB, or any blob when the agent is of an
older version, goes to one agent, which does this); the blob becomes
visible once all of it is stored. It prints the blob's size, k+m, SHA-256
digest and the registry revision of the put.

--data and --parity choose k and m (default: the cluster's, from its size).
A put needs k+m alive agents, or only k+1 with --best-effort: the shards
that find no agent are then stored later by repair. A put refuses to replace
a blob unless --overwrite. --through-agent sends the bytes to one agent,
which encodes and spreads them: for a zrpcctl that can reach the agent it
talks to but not the others' gRPC addresses (a NAT, a tunnel).

On a terminal a progress bar shows on stderr. --timeout bounds only the wait
for an agent to take the put; Ctrl-C aborts it, and the agents then delete
the shards they stored (a zrpcctl killed outright leaves a put that the
cluster aborts once its lease, the agents' --blob-put-lease, passes). Once
every byte is stored and the commit asked for, the agents may commit the
blob although zrpcctl is stopped or hears no answer: it then says the
outcome is unknown, and ` + "`zrpcctl blob stat NAME`" + ` tells whether it was stored.`,
		Example: `  zrpcctl blob put ./model.bin --name models/v3.bin
  zrpcctl blob put ./big.iso --data 4 --parity 2
  zrpcctl blob put ./model.bin --name models/v3.bin --overwrite -o json
  tar c ./logs | zrpcctl blob put - --name backups/logs.tar`,
		Args: putArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			src := args[0]
			name, opts, err := f.check(src)
			if err != nil {
				return err
			}
			defer transferContext(cmd)()
			return o.run(cmd, true, func(ctx context.Context, c *client.Client, p *printer) error {
				r, size, err := openSource(cmd, src)
				if err != nil {
					return err
				}
				defer r.Close()
				opts.Size = max(size, 0)
				resp, err := blobPut(ctx, o, c, cmd.ErrOrStderr(), name, r, size, opts)
				if err != nil && !errors.Is(err, apierr.ErrOutcomeUnknown) {
					err = asInterrupted(ctx, "put "+name, err)
				}
				if err != nil {
					return blobExplain(spaceCause(err), f.hints(name)...)
				}
				return printPut(p, resp)
			})
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&f.name, "name", "", "name of the blob (default: FILE's base name; required with -)")
	fs.IntVar(&f.data, "data", 0, "data shards per block, k (0: the cluster's default)")
	fs.IntVar(&f.parity, "parity", 0, "parity shards per block, m: how many lost agents a blob survives (needs --data)")
	fs.BoolVar(&f.overwrite, "overwrite", false, "replace a blob of the same name")
	fs.BoolVar(&f.bestEffort, "best-effort", false, "store even when fewer than k+m agents are alive; repair stores the missing shards later")
	fs.BoolVar(&f.throughAgent, "through-agent", false, "send the bytes through one agent instead of to every shard's agent (when only that agent is reachable)")
	return cmd
}

// check checks the flags' shapes and returns the blob's name and the put's
// options. The agent checks the name and the scheme against the cluster.
func (f *blobPutFlags) check(src string) (string, client.PutOptions, error) {
	name := f.name
	if name == "" {
		if src == "-" {
			return "", client.PutOptions{}, errors.New("reading stdin (-) needs --name")
		}
		name = filepath.Base(src)
	}
	for _, n := range []struct {
		flag string
		v    int
	}{{"data", f.data}, {"parity", f.parity}} {
		if n.v < 0 || n.v > maxShards {
			return "", client.PutOptions{}, fmt.Errorf("invalid --%s %d: want 0 to %d", n.flag, n.v, maxShards)
		}
	}
	if f.parity > 0 && f.data == 0 {
		return "", client.PutOptions{}, errors.New("--parity needs --data: give both, or neither for the cluster's default")
	}
	return name, client.PutOptions{Data: f.data, Parity: f.parity, Overwrite: f.overwrite, BestEffort: f.bestEffort,
		ThroughAgent: f.throughAgent}, nil
}

// openSource opens what `blob put` stores: stdin for "-", else a file.
// size is the file's size, or -1 when unknown (stdin, a pipe).
func openSource(cmd *cobra.Command, src string) (io.ReadCloser, int64, error) {
	if src == "-" {
		return io.NopCloser(cmd.InOrStdin()), -1, nil
	}
	f, err := os.Open(src)
	if err != nil {
		return nil, 0, fmt.Errorf("open source: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("open source: %w", err)
	}
	switch {
	case fi.IsDir():
		f.Close()
		return nil, 0, fmt.Errorf("%s is a directory: put stores one file; store an archive of it, e.g. tar c %s | zrpcctl blob put - --name NAME", src, src)
	case fi.Mode().IsRegular():
		return f, fi.Size(), nil
	}
	return f, -1, nil
}

// blobPut uploads r (size bytes, < 0 when unknown) with a progress bar.
func blobPut(ctx context.Context, o *options, c *client.Client, errOut io.Writer, name string, r io.Reader, size int64, opts client.PutOptions) (*zrpcpb.BlobPutResponse, error) {
	fa := o.firstAnswer(ctx)
	fa.diagnose = o.leaderless(c)
	defer fa.close()
	bar := newProgressBar(errOut, "put "+name, size)
	bar.sentNote = "(sent; the agents are storing it)"
	opts.Progress = bar.set
	// The client reads the source once the agent has opened the put stream.
	resp, err := c.PutBlob(fa.ctx, name, readFirst(r, fa.answered), opts)
	bar.finish()
	return resp, fa.wrap("put "+name, err)
}

// readFirst returns r calling first before its first Read; it can seek
// when r can (PutBlob starts a put from a file over when an agent dies
// during it).
func readFirst(r io.Reader, first func()) io.Reader {
	fr := &firstRead{r: r, first: first}
	if s, ok := r.(io.Seeker); ok {
		return firstReadSeeker{fr, s}
	}
	return fr
}

// firstRead calls first before the first Read of r.
type firstRead struct {
	r     io.Reader
	first func()
}

type firstReadSeeker struct {
	*firstRead
	io.Seeker
}

func (f *firstRead) Read(p []byte) (int, error) {
	if f.first != nil {
		f.first()
		f.first = nil
	}
	return f.r.Read(p)
}

func printPut(p *printer, resp *zrpcpb.BlobPutResponse) error {
	b := resp.GetBlob()
	fs := []field{
		{"Name", b.GetName()},
		{"Size", formatSizeExact(b.GetSize())},
		{"K+M", formatScheme(b.GetDataShards(), b.GetParityShards(), false)},
		{"SHA-256", hex.EncodeToString(b.GetSha256())},
		{"Revision", strconv.FormatUint(resp.GetHeader().GetRevision(), 10)},
	}
	if n := resp.GetMissingShards(); n > 0 {
		fs = append(fs, field{"Missing shards", fmt.Sprintf("%d (repair will store them; see `zrpcctl blob repair status`)", n)})
	}
	return p.fields(resp, fs)
}

// putArgs takes the one FILE of blob put. Two arguments are most likely a
// name and a file, as other stores' put commands take them: the error
// says how to name the blob, with the file that exists first.
func putArgs(_ *cobra.Command, args []string) error {
	switch len(args) {
	case 1:
		return nil
	case 0:
		return errors.New("blob put takes the FILE to store (- for stdin), e.g. zrpcctl blob put ./model.bin --name models/v3.bin")
	case 2:
		file, name := args[0], args[1]
		if _, err := os.Stat(file); err != nil {
			if _, err := os.Stat(name); err == nil {
				file, name = name, file
			}
		}
		return fmt.Errorf("blob put takes one FILE, not %d arguments; name the blob with --name: zrpcctl blob put %s --name %s", len(args), shellWord(file), shellWord(name))
	default:
		return fmt.Errorf("blob put takes one FILE, not %d arguments (one blob per put; for several, one put each)", len(args))
	}
}

// shellWord returns s as one word a POSIX shell reads back as s: as it is
// when it holds only characters no shell treats specially, else in single
// quotes.
func shellWord(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_./:@%+=,-") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
