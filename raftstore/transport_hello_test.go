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
// hello and then is not one (another version, an oversized cluster id, one
// that stalls halfway) is closed and warned of by address, saying what was
// wrong, and the transport goes on; a hello cut short by the sender hanging
// up is a peer that died, not warned of. Each comes from a host of its
// own: the guard handles connections concurrently and collapses one host's
// repeats, so from one host which of them is warned of would be a race.
func TestRaftHelloRefusesMalformedHellos(t *testing.T) {
	rec := &lineRecorder{}
	_, addr := helloTransport(t, "aaaa", true, rec)
	cases := []struct {
		from  string
		hello []byte
		stall bool // keep the connection open after the bytes
		want  string
	}{
		{"127.0.0.21", []byte{helloMagic, 9, 0}, false, "raft hello version 9"},
		{"127.0.0.22", []byte{helloMagic, helloVersion, 200, 'x'}, false, "cluster id of 200 bytes"},
		{"127.0.0.23", []byte{helloMagic, helloVersion, 4, 'a'}, true, "i/o timeout"},
	}
	cutShort := "127.0.0.24"
	dialRaftFrom(t, cutShort, addr, []byte{helloMagic, helloVersion, 4, 'a'}, false)
	for _, c := range cases {
		dialRaftFrom(t, c.from, addr, c.hello, c.stall)
	}
	testwait.For(t, 2*helloWait, "the malformed hellos to be warned of", func() bool {
		return len(rec.matching(msgNotRaft)) >= len(cases)
	})
	warnings := rec.matching(msgNotRaft)
	for _, c := range cases {
		found := false
		for _, w := range warnings {
			if strings.Contains(w, "from="+c.from) {
				found = true
				if !strings.Contains(w, c.want) {
					t.Errorf("the warning for %s's hello %v says %q, want it to name %q", c.from, c.hello, w, c.want)
				}
			}
		}
		if !found {
			t.Errorf("no warning names %s: %q", c.from, warnings)
		}
	}
	if w := rec.matching("from=" + cutShort); len(w) != 0 {
		t.Errorf("a hello cut short by the sender hanging up was warned of: %q", w)
	}
	peer, _ := helloTransport(t, "aaaa", true, &lineRecorder{})
	if err := sendEntries(peer, addr); err != nil {
		t.Fatalf("after malformed hellos, a good peer: %v", err)
	}
}

// dialRaftFrom connects to addr from the loopback address from, sends b,
// and hangs up unless hold.
func dialRaftFrom(t *testing.T, from, addr string, b []byte, hold bool) {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial from %s: %v", from, err)
	}
	if _, err := conn.Write(b); err != nil {
		t.Fatal(err)
	}
	if hold {
		t.Cleanup(func() { conn.Close() })
		return
	}
	conn.Close()
}
