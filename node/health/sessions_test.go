package health

import (
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/internal/testlog"
)

// TestSessionScanDestroysOrphansOfThisAgentOnly: a session this agent owns
// but does not serve (its stream died with an earlier run) is destroyed;
// a served one and another agent's are left alone.
func TestSessionScanDestroysOrphansOfThisAgentOnly(t *testing.T) {
	reg := newFakeRegistry()
	k := newTestKeeper(t, reg, &fakeClock{now: time.Unix(1000, 0)})
	reg.addSession("orphan", "a1")
	k.ServeSession("served").Created(reg.addSession("served", "a1"))
	reg.addSession("other", "a2")

	k.scanSessions()
	w := reg.written()
	if len(w) != 1 {
		t.Fatalf("scan wrote %v, want one SessionDestroy", w)
	}
	if ids := w[0].GetSessionDestroy().GetIds(); len(ids) != 1 || ids[0] != "orphan" {
		t.Fatalf("scan destroyed %v, want [orphan]", ids)
	}
}

// TestSessionScanWaitsUntilTheReplicaMayBeRead: while the replica may not
// answer a default read (it is replaying its log), no session is judged an
// orphan.
func TestSessionScanWaitsUntilTheReplicaMayBeRead(t *testing.T) {
	reg := newFakeRegistry()
	k := New(Config{Agent: "a1", Replica: reg, Writer: reg, ReadReady: func() error { return errReplaying }})
	reg.addSession("orphan", "a1")
	k.scanSessions()
	if w := reg.written(); len(w) != 0 {
		t.Fatalf("scan of a replaying replica wrote %v", w)
	}
}

var errReplaying = errors.New("replaying its log")

// TestSessionRemovedByTheClusterIsEnded: a served session that the replica
// no longer has although it applied its creation is ended (Removed
// closes) and not destroyed again; one created after the revision the scan
// read is not judged.
func TestSessionRemovedByTheClusterIsEnded(t *testing.T) {
	reg := newFakeRegistry()
	k := newTestKeeper(t, reg, &fakeClock{now: time.Unix(1000, 0)})
	removed := k.ServeSession("removed")
	removed.Created(reg.addSession("removed", "a1"))
	kept := k.ServeSession("kept")
	kept.Created(reg.addSession("kept", "a1"))
	late := k.ServeSession("late")
	late.Created(reg.Revision() + 5) // its creation is not applied here yet
	// The cluster removes the session (its agent was reaped).
	if _, err := reg.apply(&pb.Command{Kind: &pb.Command_SessionDestroy{SessionDestroy: &pb.SessionDestroy{Ids: []string{"removed"}}}}); err != nil {
		t.Fatal(err)
	}
	reg.written()

	k.scanSessions()
	select {
	case <-removed.Removed():
	default:
		t.Fatal("a session the cluster removed was not ended")
	}
	for _, s := range []*ServedSession{kept, late} {
		select {
		case <-s.Removed():
			t.Fatalf("session %s was ended", s.id)
		default:
		}
	}
	if w := reg.written(); len(w) != 0 {
		t.Fatalf("scan wrote %v, want nothing", w)
	}
	// Once its stream ends, an ended session is no longer served.
	removed.End()
	if k.sessions.has("removed") {
		t.Fatal("an ended session is still served")
	}
}

// TestSessionsNotClosedForWantOfALeaderAreLeftToTheScan: sessions whose
// SessionDestroy no leader took are closed by this agent's session scan
// once a leader answers; the warning says so, not that the agent must
// restart (which would end every session it serves).
func TestSessionsNotClosedForWantOfALeaderAreLeftToTheScan(t *testing.T) {
	reg := newFakeRegistry()
	var logs testlog.Buffer
	k := New(Config{Agent: "a1", Replica: reg, Writer: &refusingWriter{}, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	k.destroyWait = 50 * time.Millisecond
	reg.addSession("s1", "a1")
	k.DestroySessions("s1")
	if out := logs.String(); !strings.Contains(out, "session scan closes them") || strings.Contains(out, "restart") {
		t.Fatalf("warning about sessions no leader closed:\n%s\nwant it to say the session scan closes them", out)
	}

	// The session is this agent's and no longer served: the next scan
	// closes it, once a leader takes writes.
	k.cfg.Writer = reg
	k.scanSessions()
	if ids := reg.written(); len(ids) != 1 || ids[0].GetSessionDestroy().GetIds()[0] != "s1" {
		t.Fatalf("scan wrote %v, want a SessionDestroy of s1", ids)
	}
}
