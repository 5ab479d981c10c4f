package ctlcmd

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/zrpcio/zrpc/api/apierr"
	"github.com/zrpcio/zrpc/client"
)

func newBlobCommand(o *options) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "blob",
		Short: "Store, read, list and delete erasure-coded blobs",
		Long: `Commands on the cluster's blob store. A blob is a named file cut into blocks;
each block is encoded into k data and m parity shards (k+m) that live on k+m
different agents, so a blob stays readable while up to m of them are lost.
Small blobs are kept inline in the replicated registry instead. The leader
rebuilds the shards of failed agents in the background (see
` + "`zrpcctl blob repair status`" + `).

Blob names are 1-1024 bytes of letters, digits and . _ - / +, with no empty,
"." or ".." path segment; "/" groups them, as in models/v3.bin.

Transfers (put, get) are bounded by --timeout only until an agent takes
them up; after that they run as long as they need, or until Ctrl-C.`,
		Example: `  zrpcctl blob put ./model.bin --name models/v3.bin
  zrpcctl blob ls models/
  zrpcctl blob stat models/v3.bin
  zrpcctl blob get models/v3.bin ./v3.bin
  zrpcctl blob rm models/v3.bin
  zrpcctl blob repair status`,
		Args: cobra.NoArgs,
	}
	cmd.AddCommand(
		newBlobPutCommand(o),
		newBlobGetCommand(o),
		newBlobLsCommand(o),
		newBlobStatCommand(o),
		newBlobRmCommand(o),
		newBlobRepairCommand(o),
	)
	return cmd
}

// blobHint is the remedy a blob command suggests for one of the blob
// API's errors.
type blobHint struct {
	err  error
	hint string
}

// Hints shared by several blob commands.
var (
	hintBlobNotFound   = blobHint{apierr.ErrNotFound, "`zrpcctl blob ls [PREFIX]` lists the stored blobs"}
	hintBlobUnreadable = blobHint{apierr.ErrNotEnoughShards,
		"too few shards of a block can be read; `zrpcctl blob stat NAME` shows which are missing, `zrpcctl blob repair status` the repair"}
)

// blobExplain adds to err the hint of the first sentinel it wraps.
// Hints that any command may need (no leader, no agent, timeout) are added
// by options.explain.
func blobExplain(err error, hints ...blobHint) error {
	if err == nil {
		return nil
	}
	for _, h := range hints {
		if errors.Is(err, h.err) {
			return &hintError{err: err, hint: h.hint}
		}
	}
	return err
}

// transferContext makes Ctrl-C (or SIGTERM) cancel cmd's context instead
// of killing the process, so that a transfer cleans up (a get removes its
// temporary file) before zrpcctl exits. A second one kills it as usual: the
// transfer may be blocked where cancelling cannot reach (a put reading a
// terminal or a pipe that sends nothing, a get opening a FIFO no one
// reads). Call the returned stop when done.
func transferContext(cmd *cobra.Command) (stop func()) {
	ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
	context.AfterFunc(ctx, stop)
	cmd.SetContext(ctx)
	return stop
}

// errInterrupted ends a transfer that Ctrl-C (or SIGTERM) cancelled.
var errInterrupted = errors.New("interrupted")

// asInterrupted reports a transfer whose ctx ended as interrupted: the
// error the cancellation caused on the way (a canceled stream) says no more.
func asInterrupted(ctx context.Context, what string, err error) error {
	if err == nil || ctx.Err() == nil {
		return err
	}
	return fmt.Errorf("%s: %w", what, errInterrupted)
}

// firstAnswerDeadline bounds by --timeout the wait until an agent takes up a
// transfer (connecting, and its first answer); once answered is called the
// transfer runs without a deadline, until done or cancelled.
type firstAnswerDeadline struct {
	ctx    context.Context
	cancel context.CancelCauseFunc
	timer  *time.Timer
	// diagnose, if set, says why no answer came when the timeout ended
	// the transfer (nil error: it cannot tell).
	diagnose func() error
}

var errNoFirstAnswer = errors.New("no first answer within --timeout")

func (o *options) firstAnswer(ctx context.Context) *firstAnswerDeadline {
	ctx, cancel := context.WithCancelCause(ctx)
	return &firstAnswerDeadline{
		ctx:    ctx,
		cancel: cancel,
		timer:  time.AfterFunc(o.timeout, func() { cancel(errNoFirstAnswer) }),
	}
}

// answered lifts the timeout.
func (a *firstAnswerDeadline) answered() { a.timer.Stop() }

// close ends the transfer's context.
func (a *firstAnswerDeadline) close() {
	a.timer.Stop()
	a.cancel(nil)
}

// wrap prefixes err with what; when the timeout ended the transfer, the
// error wraps context.DeadlineExceeded, which explain turns into a hint at
// --timeout.
func (a *firstAnswerDeadline) wrap(what string, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(context.Cause(a.ctx), errNoFirstAnswer) {
		if a.diagnose != nil {
			if why := a.diagnose(); why != nil {
				return fmt.Errorf("%s: %w", what, why)
			}
		}
		return fmt.Errorf("%s: %w", what, context.DeadlineExceeded)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// leaderless asks the agent c talks to, briefly, whether the cluster has a
// leader: a transfer that needs one (a put, a snapshot of the leader's
// state) waits for one without answering, until --timeout. It returns an
// error wrapping apierr.ErrNoLeader that says what the agent sees, or nil
// when there is a leader or the agent does not answer.
func (o *options) leaderless(c *client.Client) func() error {
	return func() error {
		ctx, cancel := context.WithTimeout(context.Background(), min(2*time.Second, o.timeout))
		defer cancel()
		st, err := c.Status(ctx)
		if err != nil || st.GetLeader() != "" {
			return nil
		}
		if why := strings.TrimPrefix(statusLeader(st), "no leader: "); why != "no leader" {
			return fmt.Errorf("%w: %s", apierr.ErrNoLeader, why)
		}
		return fmt.Errorf("%w (the agent answers, but knows no leader)", apierr.ErrNoLeader)
	}
}

// formatSize shows a byte count for people: 512 B, 1.5 KiB, 300.0 MiB.
func formatSize(n uint64) string {
	const unit = 1024
	if n < unit {
		return strconv.FormatUint(n, 10) + " B"
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit && exp < 5; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// formatSizeExact shows a byte count readably and exactly: 1.5 KiB (1536 bytes).
func formatSizeExact(n uint64) string {
	if n < 1024 {
		return formatSize(n)
	}
	return fmt.Sprintf("%s (%d bytes)", formatSize(n), n)
}

// formatScheme shows a blob's erasure coding as k+m, or "inline" for a blob
// kept in the registry (which has no shards).
func formatScheme(k, m uint32, inline bool) string {
	if inline || k == 0 {
		return "inline"
	}
	return fmt.Sprintf("%d+%d", k, m)
}

// formatTime shows a unix time in nanoseconds in the local zone ("" for 0).
func formatTime(ns int64) string {
	if ns == 0 {
		return ""
	}
	return time.Unix(0, ns).Local().Format("2006-01-02 15:04:05")
}
