package ctlcmd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/zrpcio/zrpc/api/apierr"
	"github.com/zrpcio/zrpc/client"
	"github.com/zrpcio/zrpc/internal/writeback"
)

// stdoutDest is the DEST of `blob get` that means standard output.
const stdoutDest = "-"

// blobGetFlags are the flags of `blob get`.
type blobGetFlags struct {
	offset, length uint64
	force          bool
	throughAgent   bool
	consistency    string
}

func newBlobGetCommand(o *options) *cobra.Command {
	var f blobGetFlags
	cmd := &cobra.Command{
		Use:   "get NAME [DEST]",
		Short: "Read a blob into a file or stdout",
		Long: `Read the blob NAME into DEST: a file; a directory, which gets a file named
after NAME's last path segment; or - for stdout. Without DEST the file is
that name in the current directory. (-o is every command's output format,
not the destination.)

The bytes go to a temporary file next to DEST, which takes DEST's name only
once the whole blob was read and its SHA-256 matched the digest stored by the
put: a failed, interrupted or corrupt download leaves nothing under DEST. An
existing DEST is replaced only with --force.

--offset and --length read a range. A range cannot be checked against the
blob's digest, which covers the whole blob (the agents still check every
shard's CRC). With DEST -, bytes are written as they arrive: a digest
mismatch fails the command only at the end, and nothing else is printed.
A DEST that is a device or a FIFO (/dev/null) is written into the same way,
without --force, and never replaced.

zrpcctl reads each block's shards from the agents that hold them;
--through-agent reads through the one agent it talks to instead (when the
others' gRPC addresses cannot be reached).

On a terminal a progress bar shows on stderr. --timeout bounds only the wait
for an agent to start sending.`,
		Example: `  zrpcctl blob get models/v3.bin ./v3.bin
  zrpcctl blob get models/v3.bin              # writes ./v3.bin
  zrpcctl blob get models/v3.bin /tmp/ --force
  zrpcctl blob get models/v3.bin - | sha256sum
  zrpcctl blob get models/v3.bin head.bin --offset 0 --length 4096`,
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			dest := path.Base(name)
			if len(args) == 2 {
				dest = args[1]
			}
			consistency, err := parseConsistency(f.consistency)
			if err != nil {
				return err
			}
			defer transferContext(cmd)()
			return o.run(cmd, true, func(ctx context.Context, c *client.Client, p *printer) error {
				g := &blobGet{o: o, c: c, errOut: cmd.ErrOrStderr(), name: name, opts: client.GetOptions{
					Offset: f.offset, Length: f.length, ThroughAgent: f.throughAgent, Consistency: consistency}}
				err := asInterrupted(ctx, "get "+name, g.run(ctx, p, cmd.OutOrStdout(), dest, f.force))
				return blobExplain(err, g.hints(g.written(dest))...)
			})
		},
	}
	fs := cmd.Flags()
	fs.Uint64Var(&f.offset, "offset", 0, "first byte to read")
	fs.Uint64Var(&f.length, "length", 0, "bytes to read from --offset (0: to the end)")
	fs.BoolVar(&f.force, "force", false, "replace DEST if it exists")
	fs.BoolVar(&f.throughAgent, "through-agent", false, "read through the one agent zrpcctl talks to instead of from every shard's agent")
	fs.StringVar(&f.consistency, "consistency", "default", "finding the blob: default (the agent's copy of the registry, which says \"not found\" only once caught up with the leader or recent), stale (its copy, any age) or consistent (the leader's revision first)")
	return cmd
}

// blobGet is one `blob get`.
type blobGet struct {
	o      *options
	c      *client.Client
	errOut io.Writer // the progress bar's
	name   string
	opts   client.GetOptions
	// special is the device or FIFO the get writes into as the bytes
	// arrive ("" when it writes a temporary file, or stdout).
	special string
}

// written says what a failed get left at dest.
func (g *blobGet) written(dest string) string {
	switch {
	case dest == stdoutDest:
		return "the bytes before the error were written to stdout"
	case g.special != "":
		return "the bytes before the error were written to " + g.special
	}
	return "nothing was written to " + dest
}

// hints are the remedies for a failed get; written says what became of
// the bytes.
func (g *blobGet) hints(written string) []blobHint {
	return []blobHint{
		{errInterrupted, written},
		hintBlobNotFound,
		hintBlobUnreadable,
		{apierr.ErrCorrupt, "the bytes read do not match the blob's SHA-256 digest; " + written +
			"; retry, and see `zrpcctl blob stat " + g.name + "`"},
	}
}

// run reads the blob into dest, or to out for "-". The agent is asked
// first, so that a bad or unknown name is reported before anything about
// the destination.
func (g *blobGet) run(ctx context.Context, p *printer, out io.Writer, dest string, force bool) error {
	fa := g.o.firstAnswer(ctx)
	defer fa.close()
	r, err := g.c.GetBlob(fa.ctx, g.name, g.opts)
	fa.answered()
	if err != nil {
		return fa.wrap("get "+g.name, err)
	}
	defer r.Close()
	if dest == stdoutDest {
		_, err := g.copy(out, r)
		return err
	}
	return g.toFile(p, r, dest, force)
}

// toFile reads r into a temporary file next to dest and gives it dest's
// name once the read is complete and verified. A dest that is neither a
// regular file nor a directory (/dev/null, a FIFO, a terminal) is written
// into as it stands, like "-": a rename would replace the device node
// with a file.
func (g *blobGet) toFile(p *printer, r *client.BlobReader, dest string, force bool) error {
	target, special, err := getTarget(dest, g.name, force)
	if err != nil {
		return err
	}
	if special {
		return g.toSpecial(p, r, target)
	}
	tmp, err := createTemp(target)
	if err != nil {
		return err
	}
	// After a rename or link there is nothing left to remove.
	defer os.Remove(tmp.Name())
	if force {
		// Before the first byte: the blob may be as private as the file.
		if err := keepMode(tmp, target); err != nil {
			tmp.Close()
			return err
		}
	}
	// The disk writes the file while the get streams, not all of it in
	// the fsync at the end.
	n, err := g.copy(writeback.NewWriter(tmp), r)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if err := placeFile(tmp.Name(), target, force); err != nil {
		return err
	}
	return g.wrote(p, r, n, target)
}

// toSpecial writes r into dest, which is no regular file: opened for
// writing as it is, neither replaced nor fsynced.
func (g *blobGet) toSpecial(p *printer, r *client.BlobReader, dest string) error {
	g.special = dest
	f, err := os.OpenFile(dest, os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("open destination: %w", err)
	}
	n, err := g.copy(f, r)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	return g.wrote(p, r, n, dest)
}

// wrote says what a get wrote to target.
func (g *blobGet) wrote(p *printer, r *client.BlobReader, n uint64, target string) error {
	what := fmt.Sprintf("wrote %s to %s: %s, SHA-256 verified", g.name, target, formatSizeExact(n))
	// The client checks the digest when the range is the whole blob.
	if g.opts.Offset != 0 || n != r.Blob().GetSize() {
		what = fmt.Sprintf("wrote %s from offset %d of %s to %s (a range is not checked against the digest)",
			formatSizeExact(n), g.opts.Offset, g.name, target)
	}
	return p.sentence(r.Blob(), what)
}

// copy streams r to w with a progress bar. A whole-blob read fails at its
// end if the bytes do not match the blob's digest.
func (g *blobGet) copy(w io.Writer, r *client.BlobReader) (uint64, error) {
	bar := newProgressBar(g.errOut, "get "+g.name, int64(r.Size()))
	n, err := copyWithProgress(w, r, bar)
	bar.finish()
	if err != nil {
		return uint64(n), fmt.Errorf("get %s: %w", g.name, err)
	}
	return uint64(n), nil
}

// copyBlock is the most a get hands the destination in one write: a
// blob reader fills a read from every shard it holds, so one write per
// block instead of io.Copy's 32 KiB (32 write calls per MiB).
const copyBlock = 1 << 20

// copyWithProgress copies r to w in writes of up to copyBlock bytes,
// reporting each to bar.
func copyWithProgress(w io.Writer, r io.Reader, bar *progressBar) (int64, error) {
	buf := make([]byte, copyBlock)
	var total int64
	for {
		n, rerr := r.Read(buf)
		if n > 0 {
			m, werr := w.Write(buf[:n])
			total += int64(m)
			bar.add(m)
			if werr == nil && m < n {
				werr = io.ErrShortWrite
			}
			if werr != nil {
				return total, werr
			}
		}
		if rerr == io.EOF {
			return total, nil
		}
		if rerr != nil {
			return total, rerr
		}
	}
}

// getTarget returns the file a get writes: dest, or dest/base of name
// when dest is a directory. special: it exists and is neither a regular
// file nor a directory (a device, a FIFO), to be written into as it
// stands. Otherwise, without force, it must not exist yet.
func getTarget(dest, name string, force bool) (target string, special bool, err error) {
	fi, err := os.Stat(dest)
	if err == nil && fi.IsDir() {
		dest = filepath.Join(dest, path.Base(name))
		fi, err = os.Stat(dest)
	}
	if err == nil && !fi.Mode().IsRegular() && !fi.IsDir() {
		return dest, true, nil
	}
	if force {
		return dest, false, nil
	}
	switch _, err := os.Lstat(dest); {
	case err == nil:
		return "", false, destExists(dest)
	case !errors.Is(err, fs.ErrNotExist):
		return "", false, fmt.Errorf("check destination: %w", err)
	}
	return dest, false, nil
}

func destExists(target string) error {
	return fmt.Errorf("destination %s: %w; pass --force to replace it", target, fs.ErrExist)
}

// createTemp creates an empty, hidden file next to target, with the
// permissions a new file gets (0666 less the umask).
func createTemp(target string) (*os.File, error) {
	dir, base := filepath.Split(target)
	base = base[:min(len(base), 200)] // file names have at most 255 bytes
	for range 100 {
		name := filepath.Join(dir, fmt.Sprintf(".%s.%08x.part", base, rand.Uint32()))
		f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o666)
		if errors.Is(err, fs.ErrExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("create temporary file: %w", err)
		}
		return f, nil
	}
	return nil, fmt.Errorf("create temporary file next to %s: every name tried exists", target)
}

// placeFile gives the complete file tmp its name target. Without force
// it never replaces a file: a hard link fails if target exists, even one
// created during the download. Where the file system has no hard links it
// checks, then renames.
func placeFile(tmp, target string, force bool) error {
	if !force {
		err := os.Link(tmp, target)
		switch {
		case err == nil:
			return nil
		case errors.Is(err, fs.ErrExist):
			return destExists(target)
		}
		if _, err := os.Lstat(target); err == nil {
			return destExists(target)
		}
	}
	if err := os.Rename(tmp, target); err != nil {
		return fmt.Errorf("give the complete file its name: %w", err)
	}
	return nil
}

// keepMode gives tmp the permission bits of the regular file target it
// is to replace, if there is one: a private file stays private, an
// executable executable.
func keepMode(tmp *os.File, target string) error {
	fi, err := os.Stat(target)
	if err != nil || !fi.Mode().IsRegular() {
		return nil
	}
	if err := tmp.Chmod(fi.Mode().Perm()); err != nil {
		return fmt.Errorf("give the new file the permissions of the %s it replaces: %w", target, err)
	}
	return nil
}
