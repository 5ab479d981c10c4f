package gossip

import (
	"bytes"
	"compress/lzw"
	"context"
	"log/slog"
	"net"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-msgpack/v2/codec"
	"github.com/hashicorp/memberlist"

	"github.com/zrpcio/zrpc/internal/teststack"
	"github.com/zrpcio/zrpc/internal/testwait"
)

// msgpackOf encodes v as memberlist does.
func msgpackOf(t *testing.T, v any) []byte {
	t.Helper()
	var b []byte
	if err := codec.NewEncoderBytes(&b, &codec.MsgpackHandle{}).Encode(v); err != nil {
		t.Fatal(err)
	}
	return b
}

// A stream to the gossip port whose push/pull header announces a million
// members or a gigabyte of state, plain or compressed, or whose
// compressed message inflates to 32 MiB, is closed before memberlist
// allocates for it, with one warning naming the sender; the agent goes
// on gossiping with real members.
func TestGossipStreamAnnouncingTooMuchIsClosedUnread(t *testing.T) {
	logs := &logRecords{}
	a := startAgent(t, "a", func(c *Config) {
		c.Logger = slog.New(recordingHandler{Handler: c.Logger.Handler(), rec: logs})
	})
	members := msgpackOf(t, map[string]any{"Nodes": 1 << 20, "UserStateLen": 0, "Join": false})
	state := msgpackOf(t, map[string]any{"Nodes": 1, "UserStateLen": 1 << 30, "Join": true})
	var lzwBuf bytes.Buffer
	w := lzw.NewWriter(&lzwBuf, lzw.LSB, 8)
	w.Write(append([]byte{pushPullMsg}, members...))
	w.Close()
	compressed := append([]byte{compressMsg}, msgpackOf(t, map[string]any{"Algo": 0, "Buf": lzwBuf.Bytes()})...)
	labelled := append([]byte{hasLabelMsg, 3, 'a', 'b', 'c', pushPullMsg}, members...)
	var zeros bytes.Buffer
	w = lzw.NewWriter(&zeros, lzw.LSB, 8)
	w.Write(make([]byte, 32<<20)) // inflates 1000-fold
	w.Close()
	bomb := append([]byte{compressMsg}, msgpackOf(t, map[string]any{"Algo": 0, "Buf": zeros.Bytes()})...)

	msgs := [][]byte{append([]byte{pushPullMsg}, members...), append([]byte{pushPullMsg}, state...), compressed, labelled, bomb}
	if grew := sendClosedStreams(t, a.LocalAddr(), msgs, 4); grew > 64<<20 {
		t.Errorf("20 streams announcing a million members or a gigabyte, or inflating to 32 MiB, made the agent allocate %d MiB", grew>>20)
	}
	warned := logs.matching("closed a gossip stream announcing more than a zrpc cluster sends")
	if len(warned) != 1 || warned[0].Level != slog.LevelWarn {
		t.Fatalf("warnings %+v, want one for the one sender", warned)
	}

	b := startAgent(t, "b", nil)
	if n, err := b.Join(context.Background(), []string{a.LocalAddr()}); err != nil || n != 1 {
		t.Fatalf("join after the strangers: %d, %v", n, err)
	}
	testwait.For(t, 20*time.Second, "a to see b alive", func() bool {
		m, ok := a.Member("b")
		return ok && m.Status == StatusAlive
	})
}

// A stream to the gossip port whose user message header announces
// 20 MiB, plain or compressed, is closed before memberlist allocates the
// message, with one warning naming the sender; a leave notice, the user
// message zrpc sends, still gets through.
func TestGossipStreamAnnouncingHugeUserMessageIsClosedUnread(t *testing.T) {
	logs := &logRecords{}
	a := startAgent(t, "a", func(c *Config) {
		c.Logger = slog.New(recordingHandler{Handler: c.Logger.Handler(), rec: logs})
	})
	b := startAgent(t, "b", nil)
	if _, err := b.Join(context.Background(), []string{a.LocalAddr()}); err != nil {
		t.Fatal(err)
	}
	testwait.For(t, 20*time.Second, "a to see b alive", func() bool {
		m, ok := a.Member("b")
		return ok && m.Status == StatusAlive
	})
	header := append([]byte{userMsg}, msgpackOf(t, map[string]any{"UserMsgLen": 20 << 20})...)
	var lzwBuf bytes.Buffer
	w := lzw.NewWriter(&lzwBuf, lzw.LSB, 8)
	w.Write(header)
	w.Close()
	compressed := append([]byte{compressMsg}, msgpackOf(t, map[string]any{"Algo": 0, "Buf": lzwBuf.Bytes()})...)

	if grew := sendClosedStreams(t, a.LocalAddr(), [][]byte{header, compressed}, 4); grew > 64<<20 {
		t.Errorf("8 streams announcing user messages of 20 MiB made the agent allocate %d MiB", grew>>20)
	}
	warned := logs.matching("closed a gossip stream announcing more than a zrpc cluster sends")
	if len(warned) != 1 || warned[0].Level != slog.LevelWarn {
		t.Fatalf("warnings %+v, want one for the one sender", warned)
	}

	if err := b.Leave(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	b.Close()
	testwait.For(t, 20*time.Second, "a to see b left", func() bool {
		m, ok := a.Member("b")
		return ok && m.Status == StatusLeft
	})
}

// Shutting the guarded transport down closes a stream whose header is
// still being waited for, instead of waiting for it until the header's
// deadline: a stranger's silent connection does not hold the agent's
// Close.
func TestGuardShutdownClosesStreamsAwaitingTheirHeader(t *testing.T) {
	nt, err := memberlist.NewNetTransport(&memberlist.NetTransportConfig{BindAddrs: []string{"127.0.0.1"}})
	if err != nil {
		t.Fatal(err)
	}
	g := guardStreams(nt, slog.New(slog.DiscardHandler), time.Hour, streamsPerHost)
	t.Cleanup(func() { g.Shutdown() }) // after the stream's Close below
	c, err := net.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(nt.GetAutoBindPort())))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := c.Write([]byte{pushPullMsg}); err != nil { // and no header
		t.Fatal(err)
	}
	testwait.For(t, 20*time.Second, "the guard to wait for the stream's header", func() bool {
		return len(teststack.Goroutines("", "gossip.checkPushPull(")) > 0
	})

	shut := make(chan struct{})
	go func() {
		defer close(shut)
		g.Shutdown()
	}()
	testwait.For(t, 20*time.Second, "Shutdown to return while a stream sends no header", func() bool {
		select {
		case <-shut:
			return true
		default:
			return false
		}
	})
	c.SetReadDeadline(time.Now().Add(20 * time.Second))
	if n, err := c.Read(make([]byte, 1)); err == nil || strings.Contains(err.Error(), "timeout") {
		t.Fatalf("the stream is still open after Shutdown (read %d, %v)", n, err)
	}
}

// Whatever a stream starts with, the guard's check returns without
// panicking.
func FuzzCheckStream(f *testing.F) {
	f.Add([]byte{pushPullMsg, 0x83})
	f.Add([]byte{compressMsg, 0x82, 0xa4, 'A', 'l', 'g', 'o', 0, 0xa3, 'B', 'u', 'f', 0xc4, 2, 0x06, 0x00})
	f.Add([]byte{hasLabelMsg, 0xff})
	f.Add([]byte{userMsg, 0x81, 0xaa, 'U', 's', 'e', 'r', 'M', 's', 'g', 'L', 'e', 'n', 0xce, 0x01, 0x40, 0x00, 0x00})
	f.Fuzz(func(t *testing.T, b []byte) {
		_ = checkStream(bytes.NewReader(b))
	})
}

// sendClosedStreams opens rounds streams per message of msgs to addr,
// sends the message on each, fails unless the agent closes every one,
// and returns the bytes this process allocated meanwhile.
func sendClosedStreams(t *testing.T, addr string, msgs [][]byte, rounds int) (allocated uint64) {
	t.Helper()
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	var conns []net.Conn
	for range rounds {
		for _, m := range msgs {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { c.Close() })
			if _, err := c.Write(m); err != nil {
				t.Fatal(err)
			}
			conns = append(conns, c)
		}
	}
	for i, c := range conns {
		c.SetReadDeadline(time.Now().Add(20 * time.Second))
		if n, err := c.Read(make([]byte, 1)); err == nil || strings.Contains(err.Error(), "timeout") {
			t.Fatalf("stream %d is still open (read %d, %v)", i, n, err)
		}
	}
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// A host may hold at most the guard's bound of streams open on the gossip
// port: past it, its new ones are closed at once, each counted, with one
// warning a minute, and one it closes makes room for the next. Without
// the bound a stranger's silent streams each held a goroutine and a
// descriptor until their header's deadline, however many it opened.
func TestGossipStreamsPerHostAreBounded(t *testing.T) {
	nt, err := memberlist.NewNetTransport(&memberlist.NetTransportConfig{BindAddrs: []string{"127.0.0.1"}})
	if err != nil {
		t.Fatal(err)
	}
	logs := &logRecords{}
	const limit = 4
	g := guardStreams(nt, slog.New(recordingHandler{Handler: slog.DiscardHandler, rec: logs}), time.Hour, limit)
	t.Cleanup(func() { g.Shutdown() }) // after the streams' Close below
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(nt.GetAutoBindPort()))
	dial := func() net.Conn {
		t.Helper()
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	// Streams the guard holds, waiting for their header.
	open := func() int { return len(teststack.Goroutines("", "gossip.checkStream(")) }
	closedByAgent := func(c net.Conn) bool {
		t.Helper()
		c.SetReadDeadline(time.Now().Add(20 * time.Second))
		n, err := c.Read(make([]byte, 1))
		return err != nil && !strings.Contains(err.Error(), "timeout") && n == 0
	}

	held := make([]net.Conn, limit)
	for i := range held {
		held[i] = dial() // and no header: the guard waits for it
	}
	testwait.For(t, 20*time.Second, "the guard to hold the silent streams", func() bool { return open() == limit })
	for i := range 2 {
		if extra := dial(); !closedByAgent(extra) {
			t.Fatalf("stream %d over the bound of %d is still open", i+1, limit)
		}
	}
	// The listener closes a stream before it reports the refusal: the
	// client may see the close first.
	testwait.For(t, 20*time.Second, "both refusals reported", func() bool { return g.streamsRefused.Load() >= 2 })
	if warned := logs.matching(msgTooManyStreams); len(warned) != 1 || warned[0].Level != slog.LevelWarn {
		t.Fatalf("warnings %+v, want one for the one host", warned)
	}
	if n := g.streamsRefused.Load(); n != 2 {
		t.Fatalf("%d streams counted refused, want the 2 over the bound", n)
	}

	held[0].Close()
	testwait.For(t, 20*time.Second, "the guard to let the closed stream go", func() bool { return open() == limit-1 })
	dial()
	testwait.For(t, 20*time.Second, "the guard to hold a new stream in the freed place", func() bool { return open() == limit })
}
