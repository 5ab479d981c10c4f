package ui

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"time"

	"github.com/zrpcio/zrpc/acl"
	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/raftstore"
)

// registryChange is the data of a "registry" event of the live stream:
// the services whose instances changed up to revision, or reset when the
// watch started over from a snapshot (every view may have changed).
type registryChange struct {
	Revision uint64   `json:"revision"`
	Services []string `json:"services"`
	Reset    bool     `json:"reset"`
}

// serveEvents is the live stream (Server-Sent Events, text/event-stream):
// a "hello" event with the revision it starts after, then a "registry"
// event whenever the registry changes, naming the services that changed
// and that the token may read (a watch of every service, filtered as the
// gRPC Watch is). It follows the local replica's watch, so it costs the
// agent one watcher and holds one of its Watch stream slots (TakeWatch);
// at most Config.MaxStreams are served at once. It ends when the client
// goes, when a write to it takes longer than the write timeout (a reader
// that stopped reading), when its token is deleted or no longer grants it
// (at the next event or keep-alive), or when the UI closes.
func (u *UI) serveEvents(w http.ResponseWriter, r *http.Request) {
	if _, ok := u.allow(w, r, pb.Registry_Watch_FullMethodName, &pb.WatchRequest{}); !ok {
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	if r.Method == http.MethodHead {
		return // a HEAD has no body to stream
	}
	u.mu.Lock()
	if u.closed {
		u.mu.Unlock()
		writeError(w, http.StatusServiceUnavailable, "the agent is shutting down")
		return
	}
	if u.open >= u.cfg.MaxStreams {
		u.mu.Unlock()
		writeError(w, http.StatusServiceUnavailable, fmt.Sprintf(
			"this agent serves at most %d live streams of its web UI at once and all are open: close UI pages left open, or use another agent", u.cfg.MaxStreams))
		return
	}
	u.open++
	u.streams.Add(1)
	u.mu.Unlock()
	defer func() {
		u.mu.Lock()
		u.open--
		u.mu.Unlock()
		u.streams.Done()
	}()
	if u.cfg.TakeWatch != nil {
		release, err := u.cfg.TakeWatch()
		if err != nil {
			writeError(w, http.StatusServiceUnavailable, "live stream refused: "+err.Error())
			return
		}
		defer release()
	}

	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	stop := context.AfterFunc(u.ctx, cancel)
	defer stop()

	rev := u.cfg.Replica.Revision()
	watcher := u.cfg.Replica.Watch("", rev)
	defer watcher.Close()
	s := &eventStream{w: w, rc: http.NewResponseController(w), timeout: u.cfg.WriteTimeout}
	w.WriteHeader(http.StatusOK)
	if err := s.event("hello", registryChange{Revision: rev, Services: []string{}}); err != nil {
		return
	}
	u.follow(ctx, s, watcher, rev, func() (acl.Authorizer, bool) {
		// The headers are sent: a refusal ends the stream, and the page,
		// asking again, reads the refusal.
		return u.allow(discardResponse{header: http.Header{}}, r, pb.Registry_Watch_FullMethodName, &pb.WatchRequest{})
	})
}

// follow sends a "registry" event for every change watcher yields after
// revision rev that the stream's token may read, until ctx ends or a
// write fails. The token is resolved again (authorize) before each
// write, as the gRPC Watch's is before each message: a stream whose
// token was deleted, or no longer grants the stream, ends, and one whose
// token was narrowed shows what it grants now.
func (u *UI) follow(ctx context.Context, s *eventStream, watcher *raftstore.Watcher, rev uint64, authorize func() (acl.Authorizer, bool)) {
	// A snapshot (the watcher starts at revision 0, or fell behind the
	// ring) is one reset; its further parts (More) add nothing to say.
	inSnapshot := false
	for {
		resp, err := u.next(ctx, watcher)
		if err != nil {
			return // the client went, or the UI closed
		}
		a, ok := authorize()
		if !ok {
			return
		}
		if resp == nil { // quiet for a while: a comment finds a dead connection
			if err := s.write(": keep-alive\n\n"); err != nil {
				return
			}
			continue
		}
		if inSnapshot || resp.Snapshot {
			inSnapshot = resp.More
			if !resp.Snapshot || resp.GetHeader().GetRevision() <= rev {
				continue // the rest of a snapshot, or one of the state hello named
			}
		}
		change, send := changeOf(filter(a, pb.Registry_Watch_FullMethodName, resp).(*pb.WatchResponse))
		if !send {
			continue
		}
		rev = max(rev, change.Revision)
		if err := s.event("registry", change); err != nil {
			return
		}
	}
}

// discardResponse takes the refusal of a check made once a stream's
// headers are sent, where it can no longer be answered.
type discardResponse struct{ header http.Header }

func (d discardResponse) Header() http.Header       { return d.header }
func (discardResponse) Write(b []byte) (int, error) { return len(b), nil }
func (discardResponse) WriteHeader(int)             {}

// eventStream writes Server-Sent Events, each flushed at once and within
// a deadline.
type eventStream struct {
	w       http.ResponseWriter
	rc      *http.ResponseController
	timeout time.Duration
}

// write sends text and flushes it, failing once the timeout passes.
func (s *eventStream) write(text string) error {
	if err := s.rc.SetWriteDeadline(time.Now().Add(s.timeout)); err != nil && !errors.Is(err, http.ErrNotSupported) {
		return err
	}
	if _, err := io.WriteString(s.w, text); err != nil {
		return err
	}
	return s.rc.Flush()
}

// event sends one event whose data is v as JSON (one line:
// encoding/json escapes newlines in strings).
func (s *eventStream) event(name string, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return s.write(fmt.Sprintf("event: %s\ndata: %s\n\n", name, data))
}

// Defaults of Config.KeepAlive, Config.WriteTimeout and
// Config.MaxStreams.
const (
	defaultKeepAlive    = 25 * time.Second
	defaultWriteTimeout = 10 * time.Second
	defaultMaxStreams   = 256
)

// next returns the watcher's next response, or nil once the keep-alive
// interval has passed without one.
func (u *UI) next(ctx context.Context, w *raftstore.Watcher) (*pb.WatchResponse, error) {
	wait, cancel := context.WithTimeout(ctx, u.cfg.KeepAlive)
	defer cancel()
	resp, err := w.Next(wait)
	if err != nil && ctx.Err() == nil && wait.Err() != nil {
		return nil, nil
	}
	return resp, err
}

// changeOf names the services a watch response changed; send is false
// when there is nothing this reader may see (a snapshot always counts: it
// replaces everything).
func changeOf(resp *pb.WatchResponse) (change registryChange, send bool) {
	change = registryChange{Revision: resp.GetHeader().GetRevision(), Reset: resp.Snapshot, Services: []string{}}
	seen := map[string]bool{}
	for _, ev := range resp.Events {
		name := ev.GetInstance().GetService()
		if !seen[name] {
			seen[name] = true
			change.Services = append(change.Services, name)
		}
		change.Revision = max(change.Revision, ev.Revision)
	}
	sort.Strings(change.Services)
	return change, resp.Snapshot || len(change.Services) > 0
}
