package client

import (
	"bytes"
	"testing"

	"github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/testcluster"
)

// TestStripedPutRetryOfBeginPutAfterLostAnswerBeginsOnePut: the first
// BeginPut of a put announces it but its answer is lost; the client
// retries on the other agent with the same request id, gets the put the
// first attempt began, and commits it: no second put is left pending
// until its lease ends.
func TestStripedPutRetryOfBeginPutAfterLostAnswerBeginsOnePut(t *testing.T) {
	cl := testcluster.New(t, 3)
	c, loser := lossyClient(t, cl, zrpcpb.Blobs_BeginPut_FullMethodName, "")
	ctx := testContext(t)

	data := bytes.Repeat([]byte("zrpc"), 1<<19) // 2 MiB: striped, not inline
	resp, err := c.PutBlob(ctx, "retried.bin", bytes.NewReader(data), PutOptions{})
	if err != nil {
		t.Fatalf("PutBlob after a lost BeginPut answer: %v", err)
	}
	reqs := loser.attempts()
	if len(reqs) != 2 || reqs[0] == "" || reqs[0] != reqs[1] {
		t.Fatalf("BeginPut attempts carried request ids %q, want two equal ones", reqs)
	}
	lost := loser.lost.(*zrpcpb.BeginPutResponse)
	fsm := cl.Node(0).Store().FSM()
	if err := fsm.WaitRevision(ctx, resp.Header.Revision); err != nil {
		t.Fatal(err)
	}
	if b := fsm.Blob("retried.bin"); b == nil || b.Id != lost.BlobId {
		t.Fatalf("stored blob %v, want the put the first BeginPut began (%s)", b, lost.BlobId)
	}
	for _, p := range fsm.PendingBlobs() {
		if p.Name == "retried.bin" {
			t.Fatalf("put %s of the blob is still pending after the put returned", p.Id)
		}
	}
}
