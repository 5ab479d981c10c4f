package storage_test

import (
	"bytes"
	"io"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/client"
	"github.com/zrpcio/zrpc/node"
	"github.com/zrpcio/zrpc/testcluster"
)

// rawBlobs is a Blobs client of agent i that speaks gRPC directly, so that
// requests reach the agent exactly as sent (the client package checks
// nothing on their way).
func rawBlobs(t testing.TB, c *testcluster.Cluster, i int) pb.BlobsClient {
	return pb.NewBlobsClient(rawConn(t, c, i))
}

func rawConn(t testing.TB, c *testcluster.Cluster, i int) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(c.GRPCAddr(i), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// rawShards is a Shards client of agent i, as a peer agent would use it.
// agentShards calls agent to's agent-only Shards API as agent from does.
func agentShards(c *testcluster.Cluster, from, to int) pb.ShardsClient {
	return pb.NewShardsClient(c.AgentConn(from, to))
}

// rawGet reads a range through the Get handler and returns its bytes.
func rawGet(t testing.TB, bc pb.BlobsClient, name string, off, n uint64) ([]byte, error) {
	stream, err := bc.Get(ctxFor(t, 30*time.Second), &pb.BlobGetRequest{Name: name, Offset: off, Length: n})
	if err != nil {
		return nil, err
	}
	var out []byte
	for {
		msg, err := stream.Recv()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		out = append(out, msg.Chunk...)
	}
}

// TestBlobGetAbsurdRanges sends ranges whose offset and length are past the
// end, wrap around when added or are negative as signed sizes to the
// agent's Get handler, for an inline and a sharded blob. Each must read the
// right bytes or be refused with InvalidArgument naming the field, and the
// agent must keep serving.
func TestBlobGetAbsurdRanges(t *testing.T) {
	c := newBlobCluster(t, 1, testcluster.WithConfig(func(c *node.Config) { c.BlobBlockSize = 64 << 10 }))
	cl := agentClient(t, c, 0)
	bc := rawBlobs(t, c, 0)
	blobs := map[string][]byte{"small": randomBytes(100, 21), "sharded": randomBytes(200<<10+3, 22)}
	for name, data := range blobs {
		put(t, cl, name, data, client.PutOptions{})
	}
	edges := func(size uint64) []uint64 {
		return []uint64{0, 1, 10, size - 1, size, size + 1, math.MaxUint64 - 4, math.MaxUint64 - size + 5,
			math.MaxUint64, math.MaxInt64, math.MaxInt64 + 1, math.MaxUint32, 1 << 63}
	}
	type rng struct{ off, n uint64 }
	r := rand.New(rand.NewPCG(1, 2))
	for name, data := range blobs {
		size := uint64(len(data))
		var cases []rng
		for _, off := range edges(size) {
			for _, n := range edges(size) {
				cases = append(cases, rng{off, n})
			}
		}
		for range 100 {
			cases = append(cases, rng{r.Uint64N(size + 2), r.Uint64()}, rng{r.Uint64(), r.Uint64N(size + 2)})
		}
		for _, tc := range cases {
			got, err := rawGet(t, bc, name, tc.off, tc.n)
			switch {
			case tc.off > size:
				wantInvalid(t, err, name, tc.off, tc.n, "offset")
			case tc.n > math.MaxInt64:
				wantInvalid(t, err, name, tc.off, tc.n, "length")
			case err != nil:
				t.Errorf("%s [%d, +%d): %v", name, tc.off, tc.n, err)
			default:
				end := size
				if tc.n > 0 && tc.n < size-tc.off {
					end = tc.off + tc.n
				}
				if !bytes.Equal(got, data[tc.off:end]) {
					t.Errorf("%s [%d, +%d): got %d bytes that differ from the %d expected", name, tc.off, tc.n, len(got), end-tc.off)
				}
			}
		}
	}
	// The agent survived all of that and still serves.
	if got := get(t, cl, "sharded", client.GetOptions{}); !bytes.Equal(got, blobs["sharded"]) {
		t.Fatal("agent reads back different bytes after the absurd ranges")
	}
}

func wantInvalid(t *testing.T, err error, name string, off, n uint64, field string) {
	t.Helper()
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), field) {
		t.Errorf("%s [%d, +%d): %v; want InvalidArgument naming the %s", name, off, n, err, field)
	}
}
