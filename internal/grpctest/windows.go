package grpctest

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// Windows are the HTTP/2 flow-control windows one side of a connection
// grants the other: what the other may send ahead on a new stream, and on
// the whole connection.
type Windows struct {
	Stream, Conn uint32
}

// initialWindows are HTTP/2's windows before any SETTINGS or WINDOW_UPDATE.
var initialWindows = Windows{Stream: 65535, Conn: 65535}

// ClientWindows plays an HTTP/2 server on conn, a client's new connection:
// it reads the client's preface and its frames up to its acknowledgement
// of the server's SETTINGS, and returns the windows the client granted.
// (grpc-go writes its SETTINGS and the connection's WINDOW_UPDATE before
// it reads anything.)
func ClientWindows(conn net.Conn) (Windows, error) {
	preface := make([]byte, len(http2.ClientPreface))
	if _, err := io.ReadFull(conn, preface); err != nil || !bytes.Equal(preface, []byte(http2.ClientPreface)) {
		return Windows{}, errors.Join(errors.New("no HTTP/2 client preface"), err)
	}
	fr := http2.NewFramer(conn, conn)
	if err := fr.WriteSettings(); err != nil {
		return Windows{}, err
	}
	return readWindows(fr, func(f http2.Frame) bool {
		s, ok := f.(*http2.SettingsFrame)
		return ok && s.IsAck()
	})
}

// ServerWindows plays an HTTP/2 client on conn, a connection to a server:
// it sends the preface, its SETTINGS and a PING, reads the server's frames
// up to the PING's answer, and returns the windows the server granted.
func ServerWindows(conn net.Conn) (Windows, error) {
	if _, err := conn.Write([]byte(http2.ClientPreface)); err != nil {
		return Windows{}, err
	}
	fr := http2.NewFramer(conn, conn)
	if err := fr.WriteSettings(); err != nil {
		return Windows{}, err
	}
	if err := fr.WritePing(false, [8]byte{1}); err != nil {
		return Windows{}, err
	}
	return readWindows(fr, func(f http2.Frame) bool {
		p, ok := f.(*http2.PingFrame)
		return ok && p.IsAck()
	})
}

// readWindows reads frames until last reports true of one, acknowledging
// SETTINGS, and adds up the windows they grant.
func readWindows(fr *http2.Framer, last func(http2.Frame) bool) (Windows, error) {
	w := initialWindows
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			return w, fmt.Errorf("read the peer's HTTP/2 frames: %w", err)
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if v, ok := f.Value(http2.SettingInitialWindowSize); ok {
				w.Stream = v
			}
			if !f.IsAck() {
				if err := fr.WriteSettingsAck(); err != nil {
					return w, err
				}
			}
		case *http2.WindowUpdateFrame:
			if f.StreamID == 0 {
				w.Conn += f.Increment
			}
		}
		if last(f) {
			return w, nil
		}
	}
}

// ListenForClientWindows listens on 127.0.0.1 for one connection, plays
// an HTTP/2 server on it (ClientWindows) and returns the address to dial
// and a function that waits, up to 20 s, for the windows the connecting
// client granted; it fails the test if none arrive. The listener, the
// connection and the goroutine reading it end when the test ends.
func ListenForClientWindows(t testing.TB) (addr string, granted func() Windows) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	type grant struct {
		w   Windows
		err error
	}
	got := make(chan grant, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		conn, err := ln.Accept()
		if err != nil {
			got <- grant{err: err}
			return
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(20 * time.Second))
		w, err := ClientWindows(conn)
		got <- grant{w, err}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
	})
	return ln.Addr().String(), func() Windows {
		t.Helper()
		select {
		case g := <-got:
			if g.err != nil {
				t.Fatalf("read the windows the client granted: %v", g.err)
			}
			return g.w
		case <-time.After(20 * time.Second):
			t.Fatal("no client connected within 20s")
			return Windows{}
		}
	}
}
