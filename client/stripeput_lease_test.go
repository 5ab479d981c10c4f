package client

import (
	"bytes"
	"testing"
	"time"
)

// A source of unknown size that is slow to give its first bytes (a pipe
// from a command still working) keeps its put: the lease is renewed while
// the client waits for the bytes that tell it whether the blob is stored
// inline.
func TestStripedPutOfUnknownSizeRenewsItsLeaseWhileTheHeadIsRead(t *testing.T) {
	f := newFakeBlobs(t, 3)
	f.leaseTTL = 150 * time.Millisecond
	c := f.client(t)
	data := randomBytes(t, 4*int(f.blockSize))
	// The reader gives nothing until the put was renewed twice.
	r := &gatedReader{data: data, at: 0, open: func() bool {
		for _, id := range f.pendingIDs() {
			if f.renewals(id) >= 2 {
				return true
			}
		}
		return false
	}}
	if _, err := c.PutBlob(testContext(t), "slow-head", r, PutOptions{}); err != nil {
		t.Fatalf("PutBlob: %v", err)
	}
	b := onlyCommit(t, f).Blob
	if got := f.decodeFromHolders(t, b); !bytes.Equal(got, data) {
		t.Fatalf("the blob stored differs from the one put")
	}
}
