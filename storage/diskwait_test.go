package storage

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/zrpcio/zrpc/api/apierr"
	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/internal/bufpool"
	"github.com/zrpcio/zrpc/internal/testlog"
	"github.com/zrpcio/zrpc/internal/testwait"
	"github.com/zrpcio/zrpc/storage/codec"
	"github.com/zrpcio/zrpc/storage/shardstore"
)

// stuckDisk is a shard disk whose reads and writes hang, once hang is
// set, until released: entered receives when one starts hanging.
type stuckDisk struct {
	hang    atomic.Bool
	entered chan struct{}
	release chan struct{}
	once    sync.Once
}

func newStuckDisk() *stuckDisk {
	return &stuckDisk{entered: make(chan struct{}, 1), release: make(chan struct{})}
}

func (d *stuckDisk) wait() {
	if d.hang.Load() {
		select {
		case d.entered <- struct{}{}:
		default:
		}
		<-d.release
	}
}

func (d *stuckDisk) unhang() { d.once.Do(func() { d.hang.Store(false); close(d.release) }) }

// options are the shard store options of a store on d.
func (d *stuckDisk) options() shardstore.Options {
	return shardstore.Options{
		ReadFault:  func(shardstore.ID) error { d.wait(); return nil },
		WriteFault: func() error { d.wait(); return nil },
	}
}

// ended waits, at most 10 s, for ch to deliver, failing t saying what it
// waited for otherwise.
func ended[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	var v T
	testwait.For(t, 10*time.Second, what, func() bool {
		select {
		case v = <-ch:
			return true
		default:
			return false
		}
	})
	return v
}

// A read of a shard from this agent's disk while the disk hangs in reads
// ends at its deadline, naming the disk, rather than holding the blob
// get for as long as the disk hangs; and the buffer it was reading into
// stays lent to the read until the read ends, so that a buffer pool
// cannot hand it to another user while the disk may still write into it.
func TestOwnShardReadEndsAtItsDeadlineWhileTheDiskHangs(t *testing.T) {
	disk := newStuckDisk()
	s, _ := newTestStoreOpts(t, Config{ShardTimeout: 100 * time.Millisecond}, testlog.New(t, "n1"), disk.options(), "n1", "n1", "n2")
	t.Cleanup(disk.unhang) // before the store closes, which waits for the calls
	ref := &pb.ShardRef{BlobId: "0123456789abcdef0123456789abcdef", Block: 0, Index: 1}
	payload := make([]byte, 2048)
	sum := codec.Checksum(payload)
	if err := s.putShard(context.Background(), "n1", ref, Scheme{K: 2, M: 1}, 4096, 4096, sum, payload, false); err != nil {
		t.Fatal(err)
	}

	disk.hang.Store(true)
	var loans atomic.Int32
	lend := func() func() {
		loans.Add(1)
		var once sync.Once
		return func() { once.Do(func() { loans.Add(-1) }) }
	}
	read := make(chan error, 1)
	go func() {
		_, err := s.getShardInto(context.Background(), "n1", ref, sum, false, make([]byte, 0, len(payload)), lend)
		read <- err
	}()
	err := ended(t, read, "a read of this agent's shard to end at its deadline while the disk hangs")
	if !errors.Is(err, errReadAbandoned) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("read on a hung disk: %v, want errReadAbandoned at the shard timeout", err)
	}
	if n := diskWaitsAbandoned(t, s, "read"); n != 1 {
		t.Fatalf("a read given up at its deadline counted %v, want 1", n)
	}
	if n := loans.Load(); n != 1 {
		t.Fatalf("the read still on the disk holds %d loans of its buffer, want 1", n)
	}
	disk.unhang()
	testwait.For(t, 10*time.Second, "the read's loan to be returned once the disk answers", func() bool { return loans.Load() == 0 })
}

// Calls of this agent's shard disk that their callers stopped waiting
// for, while the disk hangs, are bounded: past maxStuckDiskCalls not
// ended, a peer's PutShard and SyncShards, and this agent's own reads,
// are refused at once as Unavailable naming the disk, instead of each
// leaving one more goroutine stuck on it. Once the disk answers they are
// taken again.
func TestStuckShardDiskCallsAreBounded(t *testing.T) {
	disk := newStuckDisk()
	s, _ := newTestStoreOpts(t, Config{ShardTimeout: time.Hour}, testlog.New(t, "n1"), disk.options(), "n1", "n1", "n2")
	t.Cleanup(disk.unhang) // before the store closes, which waits for the calls
	ss := s.ShardServer()
	blob := "0123456789abcdef0123456789abcdef"
	payload := make([]byte, 2048)
	req := func(block uint32, staged bool) *pb.PutShardRequest {
		return &pb.PutShardRequest{Ref: &pb.ShardRef{BlobId: blob, Block: block, Index: 1}, DataShards: 2, ParityShards: 1,
			BlockLen: 4096, BlockSize: 4096, Sum: codec.Checksum(payload), Payload: payload, Staged: staged}
	}
	if _, err := ss.PutShard(context.Background(), req(0, false)); err != nil {
		t.Fatal(err)
	}

	disk.hang.Store(true)
	for i := range maxStuckDiskCalls {
		done := make(chan error, 1)
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
			defer cancel()
			_, err := ss.PutShard(ctx, req(uint32(i+1), true))
			done <- err
		}()
		if err := ended(t, done, "a PutShard to end at its caller's deadline while the disk hangs"); !errors.Is(err, errStoreAbandoned) {
			t.Fatalf("PutShard %d on a hung disk: %v, want errStoreAbandoned at the caller's deadline", i, err)
		}
	}
	refused := func(what string, err error) {
		t.Helper()
		var hung *diskHungError
		if !errors.As(err, &hung) || status.Code(err) != codes.Unavailable || hung.Dir != s.shards.Dir() {
			t.Fatalf("%s with %d calls stuck on the disk: %v (code %v), want Unavailable naming the disk %s",
				what, maxStuckDiskCalls, err, status.Code(err), s.shards.Dir())
		}
	}
	_, err := ss.PutShard(context.Background(), req(maxStuckDiskCalls+1, true))
	refused("PutShard", err)
	_, err = ss.SyncShards(context.Background(), &pb.SyncShardsRequest{BlobId: blob})
	refused("SyncShards", err)
	_, err = s.getShardInto(context.Background(), "n1", req(0, false).Ref, codec.Checksum(payload), false, nil, nil)
	refused("a read of this agent's shard", err)

	disk.unhang()
	testwait.For(t, 10*time.Second, "the stuck calls to end once the disk answers", func() bool { return s.stuck.Load() == 0 })
	if _, err := ss.PutShard(context.Background(), req(maxStuckDiskCalls+1, false)); err != nil {
		t.Fatalf("PutShard once the disk answers: %v", err)
	}
}

// A peer's PutShard, SyncShards, GetShard, HeldShards and DeleteShards
// end at their caller's deadline while this agent's shard disk hangs, rather than
// keeping the handler waiting on the disk after the caller is gone.
func TestPeerShardCallsEndAtTheirDeadlineWhileTheDiskHangs(t *testing.T) {
	disk := newStuckDisk()
	s, _ := newTestStoreOpts(t, Config{ShardTimeout: time.Hour}, testlog.New(t, "n1"), disk.options(), "n1", "n1", "n2")
	t.Cleanup(disk.unhang) // before the store closes, which waits for the calls
	ss := s.ShardServer()
	blob := "0123456789abcdef0123456789abcdef"
	payload := make([]byte, 2048)
	req := func(block uint32) *pb.PutShardRequest {
		return &pb.PutShardRequest{Ref: &pb.ShardRef{BlobId: blob, Block: block, Index: 1}, DataShards: 2, ParityShards: 1,
			BlockLen: 4096, BlockSize: 4096, Sum: codec.Checksum(payload), Payload: payload, Staged: true}
	}
	if _, err := ss.PutShard(context.Background(), req(0)); err != nil {
		t.Fatal(err)
	}
	durable := req(5)
	durable.Staged = false
	if _, err := ss.PutShard(context.Background(), durable); err != nil {
		t.Fatal(err)
	}
	disk.hang.Store(true)
	for _, tc := range []struct {
		name string
		call func(context.Context) error
		want error
	}{
		{"PutShard", func(ctx context.Context) error {
			_, err := ss.PutShard(ctx, req(1))
			return err
		}, errStoreAbandoned},
		{"SyncShards", func(ctx context.Context) error {
			_, err := ss.SyncShards(ctx, &pb.SyncShardsRequest{BlobId: blob})
			return err
		}, errCommitAbandoned},
		{"GetShard", func(ctx context.Context) error {
			_, err := ss.GetShard(ctx, &pb.GetShardRequest{Ref: durable.Ref})
			return err
		}, errReadAbandoned},
		{"HeldShards", func(ctx context.Context) error {
			_, err := ss.HeldShards(ctx, &pb.HeldShardsRequest{BlobId: blob, Indexes: []uint32{1}})
			return err
		}, errReadAbandoned},
		{"DeleteShards", func(ctx context.Context) error { // waits for the blob's hung write
			_, err := ss.DeleteShards(ctx, &pb.DeleteShardsRequest{BlobIds: []string{blob}})
			return err
		}, errDeleteAbandoned},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
			defer cancel()
			done := make(chan error, 1)
			go func() { done <- tc.call(ctx) }()
			err := ended(t, done, tc.name+" to end at its caller's deadline while the disk hangs")
			if code := status.Code(apierr.ToStatus(err)); !errors.Is(err, tc.want) || code != codes.DeadlineExceeded {
				t.Fatalf("%s on a hung disk: %v (code %v), want %v as DeadlineExceeded", tc.name, err, code, tc.want)
			}
		})
	}
}

// BenchmarkOwnShardRead measures a read of a 512 KiB shard from this
// agent's files into a pooled block buffer, as a blob get makes it
// (getShardInto, waited for within its deadline).
//
//	go test -run '^$' -bench BenchmarkOwnShardRead ./storage/
func BenchmarkOwnShardRead(b *testing.B) {
	s, _ := newTestStoreOpts(b, Config{}, testlog.New(b, "n1"), shardstore.Options{}, "n1", "n1", "n2")
	ref := &pb.ShardRef{BlobId: "0123456789abcdef0123456789abcdef", Block: 0, Index: 1}
	payload := make([]byte, 512<<10)
	sum := codec.Checksum(payload)
	if err := s.putShard(context.Background(), "n1", ref, Scheme{K: 2, M: 1}, 1<<20, 1<<20, sum, payload, false); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(payload)))
	for b.Loop() {
		buf := bufpool.NewShared(2 * len(payload))
		if _, err := s.getShardInto(context.Background(), "n1", ref, sum, false, buf.Bytes()[:0:len(payload)], buf.Lend); err != nil {
			b.Fatal(err)
		}
		buf.Release()
	}
}

// A ReadShards stream, the striped read of a client, ends at ShardTimeout
// with an error naming the disk while this agent's shard disk hangs in
// reads, rather than holding the stream, and its goroutine, for as long
// as the disk hangs: the client reads parity from the other holders. The
// buffer the abandoned read writes into stays lent to it until it ends.
func TestReadShardsEndsAtTheShardTimeoutWhileTheDiskHangs(t *testing.T) {
	disk := newStuckDisk()
	s, fc := newTestStoreOpts(t, Config{BlockSize: 4096, ShardTimeout: 100 * time.Millisecond}, testlog.New(t, "n1"), disk.options(), "n1", "n1")
	t.Cleanup(disk.unhang) // before the store closes, which waits for the calls
	data := make([]byte, 2*4096)
	b, _ := commitPlaced(t, s, fc, "a", data, 4096, 1, 0, []string{"n1"})

	disk.hang.Store(true)
	done := make(chan error, 1)
	var sent atomic.Int32
	go func() {
		req := &pb.ReadShardsRequest{Name: "a", BlobId: b.Id, Shards: []*pb.ShardPos{{Block: 0}, {Block: 1}}}
		done <- s.ReadShards(context.Background(), req, func(*pb.ReadShardsResponse) error {
			sent.Add(1)
			return nil
		})
	}()
	err := ended(t, done, "a ReadShards stream to end at the shard timeout while the disk hangs")
	if !errors.Is(err, errReadAbandoned) || !strings.Contains(err.Error(), s.shards.Dir()) {
		t.Fatalf("ReadShards on a hung disk: %v, want errReadAbandoned naming the disk %s", err, s.shards.Dir())
	}
	if n := sent.Load(); n != 0 {
		t.Fatalf("ReadShards on a hung disk sent %d shards, want none: the stream ends at the first read not done in time", n)
	}
	if n := s.stuck.Load(); n != 1 {
		t.Fatalf("%d reads left on the hung disk, want 1: the stream stops at the first", n)
	}
	disk.unhang()
	testwait.For(t, 10*time.Second, "the abandoned read to end once the disk answers", func() bool { return s.stuck.Load() == 0 })
}

// A peer's SyncShards sent without a deadline ends within its own bound
// (syncWithin of what is staged) while a write of the blob's staged
// shards hangs on this agent's disk, naming the disk, rather than
// holding the handler for as long as the disk hangs.
func TestSyncShardsWithoutADeadlineEndsWhileAStageHangs(t *testing.T) {
	disk := newStuckDisk()
	s, _ := newTestStoreOpts(t, Config{ShardTimeout: 100 * time.Millisecond}, testlog.New(t, "n1"), disk.options(), "n1", "n1", "n2")
	t.Cleanup(disk.unhang) // before the store closes, which waits for the calls
	ss := s.ShardServer()
	blob := "0123456789abcdef0123456789abcdef"
	payload := make([]byte, 2048)
	req := func(block uint32) *pb.PutShardRequest {
		return &pb.PutShardRequest{Ref: &pb.ShardRef{BlobId: blob, Block: block, Index: 1}, DataShards: 2, ParityShards: 1,
			BlockLen: 4096, BlockSize: 4096, Sum: codec.Checksum(payload), Payload: payload, Staged: true}
	}
	if _, err := ss.PutShard(context.Background(), req(0)); err != nil {
		t.Fatal(err)
	}
	disk.hang.Store(true)
	if _, err := ss.PutShard(context.Background(), req(1)); !errors.Is(err, errStoreAbandoned) {
		t.Fatalf("PutShard on a hung disk: %v, want errStoreAbandoned at the shard timeout", err)
	}

	done := make(chan error, 1)
	go func() {
		_, err := ss.SyncShards(context.Background(), &pb.SyncShardsRequest{BlobId: blob, Shards: []*pb.ShardRef{req(0).Ref}})
		done <- err
	}()
	err := ended(t, done, "a SyncShards without a deadline to end while a stage of its blob hangs on the disk")
	if !errors.Is(err, errCommitAbandoned) || !strings.Contains(err.Error(), s.shards.Dir()) {
		t.Fatalf("SyncShards while a stage hangs: %v, want errCommitAbandoned naming the disk %s", err, s.shards.Dir())
	}
	disk.unhang()
	testwait.For(t, 10*time.Second, "the stuck calls to end once the disk answers", func() bool { return s.stuck.Load() == 0 })
}
