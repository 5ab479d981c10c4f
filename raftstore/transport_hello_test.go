package raftstore

import (
	"errors"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/zrpcio/zrpc/internal/testwait"
)

// helloTransport is a Raft network transport on loopback behind the
// guard, greeting as an agent of cluster (speaks: every peer reads
// hellos, or none), answering every AppendEntries with success.
func helloTransport(t *testing.T, cluster string, speaks bool, rec *lineRecorder) (*raft.NetworkTransport, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	log := NewHCLog(slog.New(rec), "raft-net")
	h := &hello{cluster: func() string { return cluster }}
	if speaks {
		h.speaks = func(string) bool { return true }
	}
	guard := guardInbound(NewTCPStreamLayer(ln, ln.Addr()), log, h)
	trans := raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{Stream: guard, MaxPool: 1, Timeout: 2 * time.Second, Logger: log})
	t.Cleanup(func() { trans.Close() })
	go func() {
		for rpc := range trans.Consumer() {
			rpc.Respond(&raft.AppendEntriesResponse{Success: true}, nil)
		}
	}()
	return trans, ln.Addr().String()
}

func sendEntries(from *raft.NetworkTransport, addr string) error {
	var resp raft.AppendEntriesResponse
	return from.AppendEntries("peer", raft.ServerAddress(addr),
		&raft.AppendEntriesRequest{RPCHeader: raft.RPCHeader{ID: []byte("me"), Addr: []byte("me")}, Term: 1}, &resp)
}

// TestRaftHelloKeepsClustersApart: agents of one cluster, or one that does
// not know its cluster yet, replicate to each other whether or not the
// dialer greets; an agent greeting one of another cluster is refused, and
// both sides log it.
func TestRaftHelloKeepsClustersApart(t *testing.T) {
	recA, recB, recNew, recOld := &lineRecorder{}, &lineRecorder{}, &lineRecorder{}, &lineRecorder{}
	a, _ := helloTransport(t, "aaaa", true, recA)
	_, addrB := helloTransport(t, "bbbb", true, recB)
	a2, addrA2 := helloTransport(t, "aaaa", true, &lineRecorder{})
	_, addrNew := helloTransport(t, "", true, recNew)  // joining: knows no cluster yet
	old, _ := helloTransport(t, "aaaa", false, recOld) // an agent that sends no hello
	if err := sendEntries(a, addrA2); err != nil {
		t.Errorf("same cluster, greeting: %v", err)
	}
	if err := sendEntries(a2, addrNew); err != nil {
		t.Errorf("to an agent that knows no cluster yet: %v", err)
	}
	if err := sendEntries(old, addrA2); err != nil {
		t.Errorf("from an agent that sends no hello: %v", err)
	}
	err := sendEntries(a, addrB)
	if !errors.Is(err, errOtherCluster) {
		t.Fatalf("cluster aaaa to cluster bbbb: %v, want the other-cluster refusal", err)
	}
	testwait.For(t, 5*time.Second, "the acceptor to log the refused connection", func() bool {
		return len(recB.matching(msgOtherCluster)) == 1
	})
	if len(recA.matching(msgDialedAnother)) == 0 {
		t.Error("the dialer did not log that the address belongs to another cluster")
	}
	if w := recNew.matching("Raft connection"); len(w) != 0 {
		t.Errorf("the joining agent warned: %q", w)
	}
}

// TestRaftHelloRefusesMalformedHellos: a connection that opens like a
// hello and then is not one (another version, an oversized cluster id, cut
// short) is closed, warned of by address (once for the host: repeats
// collapse), and the transport goes on.
func TestRaftHelloRefusesMalformedHellos(t *testing.T) {
	rec := &lineRecorder{}
	_, addr := helloTransport(t, "aaaa", true, rec)
	for _, b := range [][]byte{
		{helloMagic, 9, 0},                   // another version
		{helloMagic, helloVersion, 200, 'x'}, // cluster id over the bound
		{helloMagic, helloVersion, 4, 'a'},   // cut short
	} {
		dialRaft(t, addr, b, false, false)
	}
	testwait.For(t, 10*time.Second, "the malformed hellos to be warned of", func() bool {
		w := rec.matching(msgNotRaft)
		return len(w) == 1 && strings.Contains(w[0], "raft hello version 9")
	})
	peer, _ := helloTransport(t, "aaaa", true, &lineRecorder{})
	if err := sendEntries(peer, addr); err != nil {
		t.Fatalf("after malformed hellos, a good peer: %v", err)
	}
}
