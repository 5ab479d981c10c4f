package ctlcmd

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/zrpcio/zrpc/api/apierr"
)

func newCtlBlobCommand(o *ctlOptions) *cobra.Command {
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
		newCtlBlobPutCommand(o),
		newCtlBlobGetCommand(o),
		newCtlBlobLsCommand(o),
		newCtlBlobStatCommand(o),
		newCtlBlobRmCommand(o),
		newCtlBlobRepairCommand(o),
	)
	return cmd
}

// ctlBlobHint is the remedy a blob command suggests for one of the blob
// API's errors.
type ctlBlobHint struct {
	err  error
	hint string
}

// Hints shared by several blob commands.
var (
	ctlHintBlobNotFound   = ctlBlobHint{apierr.ErrNotFound, "`zrpcctl blob ls [PREFIX]` lists the stored blobs"}
	ctlHintBlobUnreadable = ctlBlobHint{apierr.ErrNotEnoughShards,
		"too few shards of a block can be read; `zrpcctl blob stat NAME` shows which are missing, `zrpcctl blob repair status` the repair"}
)

// ctlBlobExplain adds to err the hint of the first sentinel it wraps.
// Hints that any command may need (no leader, no agent, timeout) are added
// by ctlOptions.explain.
func ctlBlobExplain(err error, hints ...ctlBlobHint) error {
	if err == nil {
		return nil
	}
	for _, h := range hints {
		if errors.Is(err, h.err) {
			return &ctlHintError{err: err, hint: h.hint}
		}
	}
	return err
}

// ctlTransferContext makes Ctrl-C (or SIGTERM) cancel cmd's context instead
// of killing the process, so that a transfer cleans up (a get removes its
// temporary file) before zrpcctl exits. Call the returned stop when done.
func ctlTransferContext(cmd *cobra.Command) (stop func()) {
	ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
	cmd.SetContext(ctx)
	return stop
}

// errCtlInterrupted ends a transfer that Ctrl-C (or SIGTERM) cancelled.
var errCtlInterrupted = errors.New("interrupted")

// ctlInterrupted reports a transfer whose ctx ended as interrupted: the
// error the cancellation caused on the way (a canceled stream) says no more.
func ctlInterrupted(ctx context.Context, what string, err error) error {
	if err == nil || ctx.Err() == nil {
		return err
	}
	return fmt.Errorf("%s: %w", what, errCtlInterrupted)
}

// ctlFirstAnswer bounds by --timeout the wait until an agent takes up a
// transfer (connecting, and its first answer); once answered is called the
// transfer runs without a deadline, until done or cancelled.
type ctlFirstAnswer struct {
	ctx    context.Context
	cancel context.CancelCauseFunc
	timer  *time.Timer
}

var errCtlNoFirstAnswer = errors.New("no first answer within --timeout")

func (o *ctlOptions) firstAnswer(ctx context.Context) *ctlFirstAnswer {
	ctx, cancel := context.WithCancelCause(ctx)
	return &ctlFirstAnswer{
		ctx:    ctx,
		cancel: cancel,
		timer:  time.AfterFunc(o.timeout, func() { cancel(errCtlNoFirstAnswer) }),
	}
}

// answered lifts the timeout.
func (a *ctlFirstAnswer) answered() { a.timer.Stop() }

// close ends the transfer's context.
func (a *ctlFirstAnswer) close() {
	a.timer.Stop()
	a.cancel(nil)
}

// wrap prefixes err with what; when the timeout ended the transfer, the
// error wraps context.DeadlineExceeded, which explain turns into a hint at
// --timeout.
func (a *ctlFirstAnswer) wrap(what string, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(context.Cause(a.ctx), errCtlNoFirstAnswer) {
		return fmt.Errorf("%s: %w", what, context.DeadlineExceeded)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// ctlSize shows a byte count for people: 512 B, 1.5 KiB, 300.0 MiB.
func ctlSize(n uint64) string {
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

// ctlSizeExact shows a byte count readably and exactly: 1.5 KiB (1536 bytes).
func ctlSizeExact(n uint64) string {
	if n < 1024 {
		return ctlSize(n)
	}
	return fmt.Sprintf("%s (%d bytes)", ctlSize(n), n)
}

// ctlScheme shows a blob's erasure coding as k+m, or "inline" for a blob
// kept in the registry (which has no shards).
func ctlScheme(k, m uint32, inline bool) string {
	if inline || k == 0 {
		return "inline"
	}
	return fmt.Sprintf("%d+%d", k, m)
}

// ctlTime shows a unix time in nanoseconds in the local zone ("" for 0).
func ctlTime(ns int64) string {
	if ns == 0 {
		return ""
	}
	return time.Unix(0, ns).Local().Format("2006-01-02 15:04:05")
}
