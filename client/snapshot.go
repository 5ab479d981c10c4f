package client

import (
	"context"
	"errors"
	"fmt"
	"io"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/zrpcio/zrpc/api/apierr"
	"github.com/zrpcio/zrpc/api/zrpcpb"
)

// SnapshotOptions tune SaveSnapshot and RestoreSnapshot.
type SnapshotOptions struct {
	// Stale saves the answering agent's own replica instead of the
	// leader's state (it may lag the leader; it works without a leader).
	Stale bool
	// Progress, when set, is called with the bytes transferred so far.
	Progress func(done int64)
}

// errSnapshotStarted: a snapshot transfer failed after bytes went out or
// came in, so another agent cannot take it over.
var errSnapshotStarted = errors.New("the snapshot transfer failed part way")

// notRetriedOnceStarted keeps the call from being retried on another
// agent once done bytes of the file went across. An agent's word that
// the restore was not applied stays with the error.
func notRetriedOnceStarted(err error, done int64) error {
	if err != nil && done > 0 && retryable(err) {
		started := fmt.Errorf("%w after %d bytes: %v", errSnapshotStarted, done, mapErr(err))
		if apierr.IsNotApplied(mapErr(err)) {
			return apierr.NotApplied(started)
		}
		return started
	}
	return err
}

// SaveSnapshot writes a snapshot file of the cluster's state (registry,
// blob metadata, ACL state) to w, as the agent streams it, and returns
// the bytes written. The file is not checked here: package snapshot
// verifies it. Another agent is tried only while nothing was written.
func (c *Client) SaveSnapshot(ctx context.Context, w io.Writer, opts SnapshotOptions) (int64, error) {
	var n int64
	err := c.callLong(ctx, func(ctx context.Context, ep *endpoint) error {
		if n > 0 {
			return errSnapshotStarted
		}
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		stream, err := zrpcpb.NewSnapshotClient(ep.conn).Save(ctx, &zrpcpb.SnapshotSaveRequest{Stale: opts.Stale})
		if err != nil {
			return err
		}
		for {
			chunk, err := stream.Recv()
			if err == io.EOF {
				return nil
			}
			if err != nil {
				return notRetriedOnceStarted(err, n)
			}
			k, err := w.Write(chunk.GetData())
			n += int64(k)
			if err != nil {
				return fmt.Errorf("write the snapshot: %w", err)
			}
			if opts.Progress != nil {
				opts.Progress(n)
			}
		}
	})
	if err != nil {
		return n, fmt.Errorf("save snapshot: %w", err)
	}
	return n, nil
}

// RestoreSnapshot sends the snapshot file r to an agent, which checks it
// (hash, and a load into a scratch state machine) and has the leader
// replace the cluster's state with it through Raft. A file that fails the
// checks is refused with InvalidArgument before anything changes. The
// answer's header carries the registry's revision after the restore.
// Another agent is tried while nothing was read from r, or, when r can
// seek back (a file), after an agent said the restore was not applied (it
// had no leader to restore through): then from r's first position again.
func (c *Client) RestoreSnapshot(ctx context.Context, r io.Reader, opts SnapshotOptions) (*zrpcpb.SnapshotRestoreResponse, error) {
	var resp *zrpcpb.SnapshotRestoreResponse
	var read int64
	seeker, start := startOf(r)
	notApplied := false
	err := c.callLong(ctx, func(ctx context.Context, ep *endpoint) error {
		if read > 0 {
			if seeker == nil || !notApplied {
				return errSnapshotStarted
			}
			if _, err := seeker.Seek(start, io.SeekStart); err != nil {
				return errSnapshotStarted
			}
			read = 0
		}
		whole := false // every byte of r was sent
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		stream, err := zrpcpb.NewSnapshotClient(ep.conn).Restore(ctx)
		if err != nil {
			return err
		}
		for {
			// A sent message may still be read: each chunk has its own buffer.
			buf := make([]byte, 256<<10)
			k, rerr := io.ReadFull(r, buf)
			if rerr == io.ErrUnexpectedEOF {
				rerr = io.EOF
			}
			read += int64(k)
			if k > 0 {
				if err := stream.Send(&zrpcpb.SnapshotChunk{Data: buf[:k]}); err != nil {
					break // the agent ended the call: CloseAndRecv says why
				}
				if opts.Progress != nil {
					opts.Progress(read)
				}
			}
			if rerr == io.EOF {
				whole = true
				break
			}
			if rerr != nil {
				return fmt.Errorf("read the snapshot: %w", rerr)
			}
		}
		resp, err = stream.CloseAndRecv()
		notApplied = apierr.IsNotApplied(mapErr(err))
		if notApplied && seeker != nil {
			return err // the next agent may restore it, from the start
		}
		if err != nil && whole && !notApplied && (retryable(err) || status.Code(err) == codes.DeadlineExceeded) {
			// The agent had the whole file and may have restored it; the
			// answer was lost.
			return fmt.Errorf("%w: every byte of the file (%d) was sent and no answer came (%v): the restore may have been applied; "+
				"`zrpcctl status` shows the cluster's revision, and restoring the same file again gives the same state", apierr.ErrOutcomeUnknown, read, mapErr(err))
		}
		return notRetriedOnceStarted(err, read)
	})
	if err != nil {
		return nil, fmt.Errorf("restore snapshot: %w", err)
	}
	return resp, nil
}
