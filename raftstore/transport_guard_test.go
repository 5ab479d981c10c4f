package raftstore

import (
	"errors"
	"log/slog"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/zrpcio/zrpc/internal/testwait"
)

// strangerTransport is a Raft network transport on loopback behind the
// guard, logging to rec, with a short first-byte wait.
func strangerTransport(t *testing.T, rec *lineRecorder) (string, *guardedStream) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	log := NewHCLog(slog.New(rec), "raft-net")
	guard := guardInbound(NewTCPStreamLayer(ln, ln.Addr()), log, nil)
	guard.firstByte = 300 * time.Millisecond
	trans := raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{Stream: guard, MaxPool: 1, Timeout: time.Second, Logger: log})
	t.Cleanup(func() { trans.Close() })
	// Answer whatever decodes, as raft would, so connections go on.
	go func() {
		for rpc := range trans.Consumer() {
			rpc.Respond(nil, raft.ErrTransportShutdown)
		}
	}()
	return ln.Addr().String(), guard
}

// dialRaft connects to addr, sends b, and closes (with a reset when
// reset) unless hold: then it returns the open connection.
func dialRaft(t *testing.T, addr string, b []byte, reset, hold bool) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) > 0 {
		if _, err := c.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	if hold {
		t.Cleanup(func() { c.Close() })
		return c
	}
	if reset {
		c.(*net.TCPConn).SetLinger(0) // close with a reset, as a killed process's kernel does
	}
	c.Close()
	return nil
}

// A peer that drops its Raft connection in the middle of a command
// (killed) is logged below warning; bytes that are not a Raft command, and
// a connection that sends nothing, are warned of once each, naming the
// sender's address.
func TestRaftTransportWarnsOfStrangersByAddress(t *testing.T) {
	rec := &lineRecorder{}
	addr, _ := strangerTransport(t, rec)
	warnings := func() []string { return rec.matching("Raft connection") }

	// An AppendEntries command (type 0) cut off after its first bytes.
	dialRaft(t, addr, []byte{0, 0x8a, 0xa4}, true, false)
	testwait.For(t, 10*time.Second, "the cut-off command to be logged", func() bool { return len(rec.matching(decodeFailed)) == 1 })
	if l := rec.matching(decodeFailed)[0]; !strings.HasPrefix(l, "DEBUG") {
		t.Fatalf("a peer hanging up mid-command logged %q, want DEBUG", l)
	}
	if w := warnings(); len(w) != 0 {
		t.Fatalf("a peer hanging up mid-command was warned of: %q", w)
	}

	garbage := dialRaft(t, addr, []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), false, true)
	testwait.For(t, 10*time.Second, "a warning of the garbage", func() bool { return len(warnings()) == 1 })
	w := warnings()[0]
	if !strings.HasPrefix(w, "WARN "+msgNotRaft) || !strings.Contains(w, "address="+garbage.LocalAddr().String()) {
		t.Fatalf("garbage logged %q, want a warning naming its sender %s", w, garbage.LocalAddr())
	}
	if l := rec.matching(decodeFailed); len(l) != 2 || !strings.HasPrefix(l[1], "DEBUG") {
		t.Fatalf("raft's own lines: %q, want the second at DEBUG too", l)
	}

	silent := dialRaft(t, addr, nil, false, true)
	testwait.For(t, 10*time.Second, "a warning of the silent connection", func() bool { return len(warnings()) == 2 })
	if w := warnings()[1]; !strings.HasPrefix(w, "WARN "+msgSilent) || !strings.Contains(w, "address="+silent.LocalAddr().String()) {
		t.Fatalf("a silent connection logged %q, want a warning naming it", w)
	}
	if _, err := silent.Read(make([]byte, 1)); err == nil {
		t.Fatal("the silent connection is still open")
	}

	// More garbage from the same host: the first line said it; repeats
	// are counted, not written.
	for range 5 {
		dialRaft(t, addr, []byte{99}, false, false)
	}
	testwait.For(t, 10*time.Second, "raft to read the repeats", func() bool { return len(rec.matching(decodeFailed)) >= 8 })
	if w := rec.matching(msgNotRaft); len(w) != 1 {
		t.Fatalf("repeated garbage from one host wrote %d warnings, want the first only: %q", len(w), w)
	}
}

// A command announcing 4 GiB of entries or of bytes, which then do not
// come, costs the agent what arrived, not what was announced.
func TestRaftTransportAllocatesWhatArrivesNotWhatIsAnnounced(t *testing.T) {
	rec := &lineRecorder{}
	addr, guard := strangerTransport(t, rec)
	// AppendEntries (type 0), a map of one entry: "Entries" holding an
	// array of 2^32-1 logs (array 32); and a RequestVote (type 1) whose
	// "Candidate" is a 4 GiB byte string (bin 32), with 1 MiB of it sent.
	entries := append([]byte{0, 0x81, 0xa7}, "Entries"...)
	entries = append(entries, 0xdd, 0xff, 0xff, 0xff, 0xff)
	candidate := append([]byte{1, 0x81, 0xa9}, "Candidate"...)
	candidate = append(candidate, 0xc6, 0xff, 0xff, 0xff, 0xff)
	candidate = append(candidate, make([]byte, 1<<20)...)

	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for range 4 {
		dialRaft(t, addr, entries, false, true)
		dialRaft(t, addr, candidate, false, true)
	}
	sent := int64(4 * (len(entries) + len(candidate)))
	testwait.For(t, 20*time.Second, "the transport to read what was sent", func() bool { return guard.read.Load() >= sent })
	runtime.ReadMemStats(&after)
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 256<<20 {
		t.Fatalf("8 connections announcing 4 GiB each made the transport allocate %d MiB", grew>>20)
	}
}

// TestRaftPortBoundsTheConnectionsOfOneHost: a host holding
// raftConnsPerHost Raft connections open (each a byte into a command, as
// a stranger would leave them) has its next one closed at once, with a
// warning naming it; once it closes one, it may connect again.
func TestRaftPortBoundsTheConnectionsOfOneHost(t *testing.T) {
	rec := &lineRecorder{}
	addr, _ := strangerTransport(t, rec)
	held := make([]net.Conn, 0, raftConnsPerHost)
	for range raftConnsPerHost {
		held = append(held, dialRaft(t, addr, []byte{0}, false, true))
	}
	refusedOne := func() bool {
		c := dialRaft(t, addr, []byte{0}, false, true)
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		_, err := c.Read(make([]byte, 1))
		var ne net.Error
		return err != nil && !(errors.As(err, &ne) && ne.Timeout())
	}
	if !refusedOne() {
		t.Fatalf("connection %d from one host was not closed", raftConnsPerHost+1)
	}
	testwait.For(t, 5*time.Second, "a warning naming the host", func() bool {
		w := rec.matching(msgTooMany)
		return len(w) == 1 && strings.Contains(w[0], "from=127.0.0.1")
	})
	held[0].Close()
	testwait.For(t, 5*time.Second, "a slot freed by a closed connection to be taken again", func() bool {
		return !refusedOne()
	})
}
