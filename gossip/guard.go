package gossip

import (
	"bytes"
	"compress/lzw"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-msgpack/v2/codec"
	"github.com/hashicorp/memberlist"

	"github.com/zrpcio/zrpc/internal/connlimit"
	"github.com/zrpcio/zrpc/internal/warnrate"
)

// Anyone who reaches the gossip port may open a stream to it. memberlist
// reads a push/pull stream's header and then allocates room for as many
// members as the header announces (up to a million, ~110 MiB) and as
// much user state (up to 20 MiB) before the first of them arrives: a
// 20-byte header held open costs the agent that much for memberlist's
// TCP timeout, and 128 of them at once all of its memory. A user
// message's header does the same with up to 20 MiB, and for those
// memberlist bounds no count. The guard reads each inbound stream's
// header first (inside a compressed stream too) and closes one
// announcing more members, state or message than a zrpc cluster sends,
// warning of it by sender; every other stream reaches memberlist as it
// came, its bytes read so far given back first. An encrypted stream is
// passed on: only a holder of the gossip key can write one. A compressed
// stream inflating past what a zrpc cluster sends is closed too:
// memberlist would inflate it into memory whole.

// Limits of a push/pull or user message header that a zrpc agent
// accepts.
const (
	maxPushPullMembers = 10_000
	maxPushPullState   = 1 << 20 // zrpc agents send none
	// maxUserMsg bounds a user message: zrpc's are leave notices, a type
	// byte and a member's name, which fits in its meta (512 bytes).
	// memberlist allocates what the header announces (up to 20 MiB)
	// before reading the message, and holds it for its TCP timeout.
	maxUserMsg = 4 << 10
	// maxCompressedStream bounds the compressed message the guard reads
	// to look at its header, as memberlist bounds push/pull state, and
	// maxInflatedStream what it may inflate to (10,000 members of
	// memberlist's largest meta take 6 MiB; memberlist allows 40 MiB,
	// which a 20 KiB message of zeros reaches).
	maxCompressedStream = 20 << 20
	maxInflatedStream   = 16 << 20
	// streamHeaderWait is how long a new stream has to send its header.
	streamHeaderWait = 10 * time.Second
	// streamsPerHost bounds the streams one host may hold open on the
	// gossip port at once, as on the Raft port (raftstore's
	// raftConnsPerHost): the guard holds a goroutine and a descriptor for
	// each stream until its header comes, up to streamHeaderWait, and
	// memberlist for each it reads, up to its TCP timeout. An agent opens
	// a few at a time (push/pulls, fallback pings, leave notices).
	streamsPerHost = 128
)

// msgTooManyStreams is the warning about a stream closed by
// streamsPerHost.
const msgTooManyStreams = "closed a gossip stream from a host that holds the most it may keep open"

// memberlist's message types the guard looks at (memberlist's net.go:
// "only append to this list", so they keep their numbers).
const (
	pushPullMsg = 6
	userMsg     = 8
	compressMsg = 9
	hasLabelMsg = 244
)

// guardedTransport is a memberlist transport whose inbound streams pass
// the guard, at most perHost at once from one host. It owns one
// goroutine taking streams from the inner transport and one per stream
// being checked; Shutdown closes the streams being checked and waits for
// them.
type guardedTransport struct {
	memberlist.NodeAwareTransport
	log        *slog.Logger
	senders    *warnrate.Limiter // one warning per sender a minute
	headerWait time.Duration     // streamHeaderWait; tests lengthen it
	// inbound is the inner transport's streams, at most perHost open
	// from one host (connlimit); refusals warns of those closed for it,
	// once a minute per host.
	inbound  net.Listener
	refusals *warnrate.Limiter
	streams  chan net.Conn
	stop     chan struct{}
	once     sync.Once
	wg       sync.WaitGroup
	// streamsRefused counts the streams closed for perHost.
	streamsRefused atomic.Uint64

	mu       sync.Mutex
	stopped  bool
	checking map[net.Conn]struct{} // streams whose header is being read
}

func guardStreams(inner memberlist.NodeAwareTransport, log *slog.Logger, headerWait time.Duration, perHost int) *guardedTransport {
	t := &guardedTransport{
		NodeAwareTransport: inner, log: log, senders: newSenderLog(time.Now), headerWait: headerWait,
		refusals: newSenderLog(time.Now),
		streams:  make(chan net.Conn), stop: make(chan struct{}), checking: make(map[net.Conn]struct{}),
	}
	t.inbound = connlimit.Wrap(&streamListener{streams: inner.StreamCh(), stop: t.stop}, perHost, t.refused)
	t.wg.Add(1)
	go t.accept()
	return t
}

// refused warns, once a minute per host, of a stream closed because its
// host holds limit open.
func (t *guardedTransport) refused(host string, limit int) {
	t.streamsRefused.Add(1)
	if pass, held := t.refusals.Seen(host); pass {
		t.log.Warn(msgTooManyStreams, "from", host, "limit", limit, "refused_since_last_line", held)
	}
}

func (t *guardedTransport) StreamCh() <-chan net.Conn { return t.streams }

// StreamsRefused returns how many streams to the gossip port were closed
// as they came, since Start, because their host held the most it may
// keep open (128) already.
func (g *Gossip) StreamsRefused() uint64 {
	g.lifeMu.RLock()
	defer g.lifeMu.RUnlock()
	if t, ok := g.mc.Transport.(*guardedTransport); ok {
		return t.streamsRefused.Load()
	}
	return 0
}

// Shutdown shuts the inner transport down and closes the streams still
// being checked: a stream that sends no header would otherwise hold the
// agent's Close for the rest of headerWait.
func (t *guardedTransport) Shutdown() error {
	err := t.NodeAwareTransport.Shutdown()
	t.once.Do(func() {
		close(t.stop)
		t.mu.Lock()
		t.stopped = true
		for c := range t.checking {
			c.Close()
		}
		t.mu.Unlock()
	})
	t.wg.Wait()
	return err
}

// startCheck records c as being checked, unless Shutdown has begun.
func (t *guardedTransport) startCheck(c net.Conn) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.stopped {
		return false
	}
	t.checking[c] = struct{}{}
	return true
}

func (t *guardedTransport) endCheck(c net.Conn) {
	t.mu.Lock()
	delete(t.checking, c)
	t.mu.Unlock()
}

func (t *guardedTransport) accept() {
	defer t.wg.Done()
	for {
		c, err := t.inbound.Accept()
		if err != nil {
			return // Shutdown
		}
		t.wg.Add(1)
		go t.admit(c)
	}
}

// streamListener is the inner transport's streams as a net.Listener, for
// connlimit: Accept returns the next one, and net.ErrClosed once stop is
// closed (Shutdown).
type streamListener struct {
	streams <-chan net.Conn
	stop    <-chan struct{}
}

func (l *streamListener) Accept() (net.Conn, error) {
	select {
	case <-l.stop:
		return nil, net.ErrClosed
	case c, ok := <-l.streams:
		if !ok {
			return nil, net.ErrClosed
		}
		return c, nil
	}
}

// Close does nothing: Shutdown stops the listener.
func (l *streamListener) Close() error { return nil }

// Addr is unspecified: the inner transport listens.
func (l *streamListener) Addr() net.Addr { return &net.TCPAddr{} }

// admit hands c on to memberlist once its header passed the check.
func (t *guardedTransport) admit(c net.Conn) {
	defer t.wg.Done()
	if !t.startCheck(c) {
		c.Close()
		return
	}
	_ = c.SetReadDeadline(time.Now().Add(t.headerWait))
	rec := &recordingReader{r: c}
	err := checkStream(rec)
	t.endCheck(c)
	if err != nil {
		from := c.RemoteAddr().String()
		host, _, _ := net.SplitHostPort(from)
		var refused refusedStream
		if pass, more := t.senders.Seen(host); errors.As(err, &refused) && pass {
			t.log.Warn("closed a gossip stream announcing more than a zrpc cluster sends", "from", from, "err", err, "more_since_last", more)
		} else {
			t.log.Debug("closed a gossip stream before memberlist read it", "from", from, "err", err)
		}
		c.Close()
		return
	}
	_ = c.SetReadDeadline(time.Time{})
	replay := &replayConn{Conn: c, r: io.MultiReader(bytes.NewReader(rec.buf), c)}
	select {
	case t.streams <- replay:
	case <-t.stop:
		c.Close()
	}
}

// refusedStream is a stream the guard closes for what its header says.
type refusedStream string

func (r refusedStream) Error() string { return string(r) }

// checkStream reads the start of a stream: its label, if any, its message
// type and, for a push/pull (compressed or not), its header. It returns a
// refusedStream for a header beyond the limits, another error when the
// stream ended or broke first, nil otherwise.
func checkStream(r io.Reader) error {
	var b [1]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return err
	}
	if b[0] == hasLabelMsg {
		var n [1]byte
		if _, err := io.ReadFull(r, n[:]); err != nil {
			return err
		}
		if _, err := io.CopyN(io.Discard, r, int64(n[0])); err != nil {
			return err
		}
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return err
		}
	}
	switch b[0] {
	case pushPullMsg:
		return checkPushPull(r)
	case userMsg:
		return checkUserMsg(r)
	case compressMsg:
		return checkCompressed(r)
	}
	return nil
}

// checkPushPull decodes a push/pull header (memberlist's pushPullHeader).
func checkPushPull(r io.Reader) error {
	var h struct {
		Nodes        int
		UserStateLen int
		Join         bool
	}
	if err := codec.NewDecoder(r, &codec.MsgpackHandle{}).Decode(&h); err != nil {
		return err
	}
	switch {
	case h.Nodes < 0 || h.Nodes > maxPushPullMembers:
		return refusedStream(fmt.Sprintf("push/pull of %d members, a zrpc cluster has at most %d", h.Nodes, maxPushPullMembers))
	case h.UserStateLen < 0 || h.UserStateLen > maxPushPullState:
		return refusedStream(fmt.Sprintf("push/pull with %d bytes of user state, at most %d", h.UserStateLen, maxPushPullState))
	}
	return nil
}

// checkUserMsg decodes a user message's header (memberlist's
// userMsgHeader).
func checkUserMsg(r io.Reader) error {
	var h struct{ UserMsgLen int }
	if err := codec.NewDecoder(r, &codec.MsgpackHandle{}).Decode(&h); err != nil {
		return err
	}
	if h.UserMsgLen < 0 || h.UserMsgLen > maxUserMsg {
		return refusedStream(fmt.Sprintf("user message of %d bytes, zrpc's (leave notices) are at most %d", h.UserMsgLen, maxUserMsg))
	}
	return nil
}

// checkCompressed decodes a compressed message (memberlist's compress)
// and checks the header of the push/pull or user message inside, if it
// is one.
func checkCompressed(r io.Reader) error {
	var c struct {
		Algo uint8
		Buf  []byte
	}
	dec := codec.NewDecoder(io.LimitReader(r, maxCompressedStream), &codec.MsgpackHandle{})
	if err := dec.Decode(&c); err != nil {
		return err
	}
	if c.Algo != 0 { // lzw, the only one memberlist knows; it refuses others
		return nil
	}
	var head [512]byte
	inflate := lzw.NewReader(bytes.NewReader(c.Buf), lzw.LSB, 8)
	n, _ := io.ReadFull(inflate, head[:])
	if n == 0 {
		return nil
	}
	// memberlist inflates the whole message into memory: count what it
	// would hold, without holding it.
	if rest, _ := io.Copy(io.Discard, io.LimitReader(inflate, maxInflatedStream)); int64(n)+rest > maxInflatedStream {
		return refusedStream(fmt.Sprintf("a compressed message of %d bytes inflating past %d", len(c.Buf), maxInflatedStream))
	}
	var err error
	switch head[0] {
	case pushPullMsg:
		err = checkPushPull(bytes.NewReader(head[1:n]))
	case userMsg:
		err = checkUserMsg(bytes.NewReader(head[1:n]))
	}
	var refused refusedStream
	if errors.As(err, &refused) {
		return refusedStream("compressed " + string(refused))
	}
	return nil // memberlist judges what the guard could not decode
}

// recordingReader keeps every byte it reads, to give them back.
type recordingReader struct {
	r   io.Reader
	buf []byte
}

func (r *recordingReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	r.buf = append(r.buf, p[:n]...)
	return n, err
}

// replayConn is a stream whose first bytes are those the guard read.
type replayConn struct {
	net.Conn
	r io.Reader
}

func (c *replayConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// netTransport is the transport memberlist would make for mc: its
// NetTransport on the bind address, retrying a few times when the port
// is the kernel's to choose (memberlist binds TCP and UDP separately,
// and another process may take the port in between), with mc's ports
// set to the one bound.
func netTransport(mc *memberlist.Config) (*memberlist.NetTransport, error) {
	tries := 1
	if mc.BindPort == 0 {
		tries = 10
	}
	var err error
	for range tries {
		var nt *memberlist.NetTransport
		nt, err = memberlist.NewNetTransport(&memberlist.NetTransportConfig{
			BindAddrs: []string{mc.BindAddr}, BindPort: mc.BindPort, Logger: mc.Logger,
		})
		if err == nil {
			if mc.BindPort == 0 {
				mc.BindPort = nt.GetAutoBindPort()
				mc.AdvertisePort = mc.BindPort
			}
			return nt, nil
		}
		if !strings.Contains(err.Error(), "address already in use") {
			break
		}
	}
	return nil, fmt.Errorf("gossip listens on %s port %d: %w", mc.BindAddr, mc.BindPort, err)
}

// guardedTransportOf returns mc's transport (or a NetTransport) behind
// the stream guard.
func guardedTransportOf(mc *memberlist.Config, log *slog.Logger) (*guardedTransport, error) {
	inner := mc.Transport
	if inner == nil {
		nt, err := netTransport(mc)
		if err != nil {
			return nil, err
		}
		inner = nt
	}
	na, ok := inner.(memberlist.NodeAwareTransport)
	if !ok {
		return nil, fmt.Errorf("gossip transport %T does not address members by name (memberlist.NodeAwareTransport)", inner)
	}
	return guardStreams(na, log, streamHeaderWait, streamsPerHost), nil
}
