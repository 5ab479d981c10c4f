package storage_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/zrpcio/zrpc/api/apierr"
	"github.com/zrpcio/zrpc/client"
)

// TestBlobPutCallerGoneAfterLastByteIsOutcomeUnknown: a client whose call
// ends after it sent the whole blob cannot know whether the agents commit
// it; it says the outcome is unknown (never a plain failure), and stat
// then settles it: the blob is stored whole, or not at all and no put of
// it is left unfinished.
func TestBlobPutCallerGoneAfterLastByteIsOutcomeUnknown(t *testing.T) {
	c := newBlobCluster(t, 3)
	cl := agentClient(t, c, 1)
	data := randomBytes(3<<20+1, 41)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// The caller goes away once the last byte is sent, while the agents
	// store the blob. (A client-striped put that ends before its commit
	// aborts: its outcome is known.)
	_, err := cl.PutBlob(ctx, "unsure", bytes.NewReader(data), client.PutOptions{ThroughAgent: true, Progress: func(sent int64) {
		if sent == int64(len(data)) {
			cancel()
		}
	}})
	if !errors.Is(err, apierr.ErrOutcomeUnknown) || !strings.Contains(err.Error(), "zrpcctl blob stat unsure") {
		t.Fatalf("put whose caller left after the last byte: %v; want ErrOutcomeUnknown pointing at blob stat", err)
	}
	c.WaitFor(30*time.Second, "stat settles the put", func() bool {
		st, err := cl.StatBlob(ctxFor(t, 5*time.Second), "unsure")
		switch {
		case err == nil:
			sum := sha256.Sum256(data)
			if st.Blob.Size != uint64(len(data)) || !bytes.Equal(st.Blob.Sha256, sum[:]) {
				t.Fatalf("stat shows %d bytes with digest %x; want the %d bytes put", st.Blob.Size, st.Blob.Sha256, len(data))
			}
			if got := get(t, cl, "unsure", client.GetOptions{}); !bytes.Equal(got, data) {
				t.Fatal("the stored blob reads back different bytes")
			}
			return true
		case errors.Is(err, apierr.ErrNotFound):
			return !strings.Contains(err.Error(), "has not finished")
		}
		return false
	})
}
