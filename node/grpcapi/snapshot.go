package grpcapi

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/zrpcio/zrpc/api/apierr"
	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/snapshot"
)

// snapshotChunk is the size of the chunks a snapshot file is streamed in.
const snapshotChunk = 256 << 10

// SnapshotAgent is what the Snapshot service asks of its agent
// (raftstore.Store).
type SnapshotAgent interface {
	// WriteSnapshot writes a snapshot file of the agent's replica to w.
	WriteSnapshot(ctx context.Context, w io.Writer) (snapshot.Header, error)
	// RestoreSnapshot replaces the cluster's state with the file f and
	// returns the revision after it; it runs on the leader and checks f
	// before anything changes.
	RestoreSnapshot(ctx context.Context, f io.ReadSeeker) (uint64, error)
	// CheckSnapshotFile checks f's hash and loads its state into a
	// scratch state machine.
	CheckSnapshotFile(f io.ReadSeeker) (snapshot.Header, error)
}

// SnapshotConfig is what the Snapshot service needs of its agent.
type SnapshotConfig struct {
	Agent     string
	Snapshots SnapshotAgent
	// Cluster runs Save (unless stale) and Restore on the leader.
	Cluster Cluster
	// TempDir holds a file being restored while it is received and
	// checked (the agent's data dir: the file may be large).
	TempDir string
	// RestorePattern is the os.CreateTemp pattern of those files.
	RestorePattern string
	// FreeBytes, when set, reports the bytes free on TempDir's file
	// system: a file that would not fit there twice is refused as soon
	// as its header arrives.
	FreeBytes func() (uint64, error)
	Logger    *slog.Logger
}

// Snapshots serves the Snapshot API on one agent.
type Snapshots struct {
	pb.UnimplementedSnapshotServer
	cfg SnapshotConfig
	log *slog.Logger
}

// NewSnapshots returns the Snapshot service.
func NewSnapshots(cfg SnapshotConfig) *Snapshots {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Snapshots{cfg: cfg, log: log}
}

// Save streams a snapshot file of the leader's state, or of this agent's
// replica when the request is stale. A follower relays the leader's.
func (s *Snapshots) Save(req *pb.SnapshotSaveRequest, stream grpc.ServerStreamingServer[pb.SnapshotChunk]) error {
	ctx := stream.Context()
	if req.GetStale() {
		return s.save(ctx, stream)
	}
	return s.cfg.Cluster.OnLeader(ctx,
		func() error { return s.save(ctx, stream) },
		func(ctx context.Context, c grpc.ClientConnInterface) error {
			up, err := pb.NewSnapshotClient(c).Save(ctx, &pb.SnapshotSaveRequest{Stale: true})
			if err != nil {
				return err
			}
			var relayed int
			for {
				chunk, err := up.Recv()
				if err == io.EOF {
					return nil
				}
				if err == nil {
					err = stream.Send(chunk)
					relayed += len(chunk.Data)
				}
				if err != nil && relayed > 0 {
					// Part of the file has gone out: another attempt
					// would send it twice.
					return status.Errorf(codes.Aborted, "the leader's snapshot stream broke after %d bytes: %v; save again", relayed, err)
				}
				if err != nil {
					return err
				}
			}
		})
}

func (s *Snapshots) save(ctx context.Context, stream grpc.ServerStreamingServer[pb.SnapshotChunk]) error {
	w := &chunkSender{send: stream.Send, buf: make([]byte, 0, snapshotChunk)}
	hdr, err := s.cfg.Snapshots.WriteSnapshot(ctx, w)
	if err == nil {
		err = w.flush()
	}
	if err != nil {
		return fmt.Errorf("save snapshot: %w", err)
	}
	s.log.Info("sent a snapshot", "index", hdr.Index, "revision", hdr.Revision, "state_bytes", hdr.Size)
	return nil
}

// chunkSender cuts what is written to it into chunks of snapshotChunk.
type chunkSender struct {
	send func(*pb.SnapshotChunk) error
	buf  []byte
}

func (c *chunkSender) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		k := min(len(p), cap(c.buf)-len(c.buf))
		c.buf = append(c.buf, p[:k]...)
		p = p[k:]
		if len(c.buf) == cap(c.buf) {
			if err := c.flush(); err != nil {
				return 0, err
			}
		}
	}
	return n, nil
}

func (c *chunkSender) flush() error {
	if len(c.buf) == 0 {
		return nil
	}
	// A sent message may still be read (stats handlers use it lazily):
	// the next chunk gets a buffer of its own.
	err := c.send(&pb.SnapshotChunk{Data: c.buf})
	c.buf = make([]byte, 0, cap(c.buf))
	return err
}

// Restore receives a snapshot file, checks it (hash, and a load into a
// scratch state machine) and has the leader restore it through Raft; a
// follower checks the file too before it forwards it, so a bad file goes
// no further than the agent it was sent to. Each agent checks the file
// once: the leader's RestoreSnapshot checks it before anything changes.
func (s *Snapshots) Restore(stream grpc.ClientStreamingServer[pb.SnapshotChunk, pb.SnapshotRestoreResponse]) error {
	ctx := stream.Context()
	f, err := os.CreateTemp(s.cfg.TempDir, s.cfg.RestorePattern)
	if err != nil {
		return fmt.Errorf("keep the snapshot being restored: %w", err)
	}
	defer func() {
		f.Close()
		os.Remove(f.Name())
	}()
	hdr, err := receiveSnapshot(stream, f, s.cfg.FreeBytes)
	if err != nil {
		return err
	}
	var rev uint64
	checked := false
	err = s.cfg.Cluster.Write(ctx,
		func() (err error) {
			rev, err = s.cfg.Snapshots.RestoreSnapshot(ctx, f)
			return err
		},
		func(ctx context.Context, c grpc.ClientConnInterface) error {
			if !checked {
				if _, err := s.cfg.Snapshots.CheckSnapshotFile(f); err != nil {
					return err
				}
				checked = true
			}
			resp, err := forwardRestore(ctx, pb.NewSnapshotClient(c), f)
			rev = resp.GetHeader().GetRevision()
			return err
		})
	if err != nil {
		return err
	}
	s.log.Info("restored a snapshot", "file_index", hdr.Index, "file_revision", hdr.Revision, "revision", rev)
	return stream.SendAndClose(&pb.SnapshotRestoreResponse{
		Header: header(s.cfg.Agent, rev), FileIndex: hdr.Index, FileTerm: hdr.Term, FileRevision: hdr.Revision,
	})
}

// receiveSnapshot writes the file a Restore stream carries to f and
// returns its header. The header is checked as soon as it has arrived, so
// a file that is not a snapshot, of a format this agent cannot read, or
// larger than free (when set) says the agent has room for, is refused at
// once, and a stream longer than its header announces is cut off there.
func receiveSnapshot(stream grpc.ClientStreamingServer[pb.SnapshotChunk, pb.SnapshotRestoreResponse], f io.Writer, free func() (uint64, error)) (snapshot.Header, error) {
	var head []byte
	var hdr snapshot.Header
	var got int64
	want := int64(-1) // the file's length, once its header is known
	for {
		chunk, err := stream.Recv()
		if err == io.EOF {
			if want < 0 || got < want {
				return hdr, fmt.Errorf("%w: %w: the stream ended after %d bytes", apierr.ErrInvalidArgument, snapshot.ErrTruncated, got)
			}
			return hdr, nil
		}
		if err != nil {
			return hdr, err
		}
		data := chunk.GetData()
		got += int64(len(data))
		if want < 0 && len(head) < snapshot.HeaderSize {
			head = append(head, data[:min(len(data), snapshot.HeaderSize-len(head))]...)
			if len(head) == snapshot.HeaderSize {
				sr, err := snapshot.NewReader(bytes.NewReader(head))
				if err != nil {
					return hdr, fmt.Errorf("%w: %w", apierr.ErrInvalidArgument, err)
				}
				hdr = sr.Header
				want = int64(snapshot.HeaderSize) + int64(hdr.Size) + snapshot.TrailerSize
				if err := checkRoom(uint64(want), free); err != nil {
					return hdr, err
				}
			}
		}
		if want >= 0 && got > want {
			return hdr, fmt.Errorf("%w: %w: the stream is longer than the %d bytes its header announces", apierr.ErrInvalidArgument, snapshot.ErrChecksum, want)
		}
		if _, err := f.Write(data); err != nil {
			return hdr, fmt.Errorf("keep the snapshot being restored: %w", err)
		}
	}
}

// checkRoom refuses a file of size bytes when the agent's disk has not
// room for it twice (the file while it is checked, and the Raft snapshot
// the restore writes from it).
func checkRoom(size uint64, free func() (uint64, error)) error {
	if free == nil {
		return nil
	}
	avail, err := free()
	if err != nil {
		return fmt.Errorf("find the room for the snapshot being restored: %w", err)
	}
	if need := 2 * size; need > avail {
		return fmt.Errorf("%w: the snapshot's header announces %d bytes; restoring it needs %d bytes of disk (the file and the Raft snapshot made from it) and the agent's data dir has %d free: free some space, or restore a smaller snapshot",
			apierr.ErrTooLarge, size, need, avail)
	}
	return nil
}

// forwardRestore sends the file f to the leader's Restore.
func forwardRestore(ctx context.Context, c pb.SnapshotClient, f io.ReadSeeker) (*pb.SnapshotRestoreResponse, error) {
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	up, err := c.Restore(ctx)
	if err != nil {
		return nil, err
	}
	for {
		// A sent message may still be read: each chunk has its own buffer.
		buf := make([]byte, snapshotChunk)
		n, err := io.ReadFull(f, buf)
		if err == io.ErrUnexpectedEOF {
			err = io.EOF
		}
		if n > 0 {
			if serr := up.Send(&pb.SnapshotChunk{Data: buf[:n]}); serr != nil {
				if errors.Is(serr, io.EOF) {
					break // the leader answered early: CloseAndRecv says why
				}
				return nil, serr
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("read the snapshot being restored: %w", err)
		}
	}
	resp, err := up.CloseAndRecv()
	if err != nil {
		return nil, err
	}
	return resp, nil
}
