package health

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/zrpcio/zrpc/api/apierr"
	pb "github.com/zrpcio/zrpc/api/zrpcpb"
)

// liveSessions are the sessions whose streams this agent is serving now.
type liveSessions struct {
	mu  sync.Mutex
	ids map[string]*ServedSession
}

// ServedSession is one session whose stream this agent serves, from
// ServeSession until End.
type ServedSession struct {
	id  string
	set *liveSessions
	// created is the revision of its SessionCreate entry (0 until it is
	// known); removed is closed when the session has disappeared from this
	// replica after it was created: the cluster removed it (its agent was
	// reaped while unreachable).
	created atomic.Uint64
	removed chan struct{}
	once    sync.Once
}

func newLiveSessions() *liveSessions { return &liveSessions{ids: make(map[string]*ServedSession)} }

// ServeSession records that this agent serves session id's stream, so that
// the scan neither destroys it as an orphan nor misses its removal.
func (k *Keeper) ServeSession(id string) *ServedSession {
	s := &ServedSession{id: id, set: k.sessions, removed: make(chan struct{})}
	k.sessions.mu.Lock()
	k.sessions.ids[id] = s
	k.sessions.mu.Unlock()
	return s
}

// Created records the revision of the session's SessionCreate entry.
func (s *ServedSession) Created(rev uint64) { s.created.Store(rev) }

// Removed is closed when the cluster has removed the session although this
// agent still serves its stream.
func (s *ServedSession) Removed() <-chan struct{} { return s.removed }

// End records that this agent no longer serves the session's stream.
func (s *ServedSession) End() {
	s.set.mu.Lock()
	delete(s.set.ids, s.id)
	s.set.mu.Unlock()
}

func (l *liveSessions) has(id string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.ids[id] != nil
}

// markRemoved closes removed for every served session that was created at
// or before rev and is not in exists.
func (l *liveSessions) markRemoved(rev uint64, exists map[string]bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for id, s := range l.ids {
		if c := s.created.Load(); c != 0 && c <= rev && !exists[id] {
			s.once.Do(func() { close(s.removed) })
		}
	}
}

// sessionDestroyWait is how long DestroySessions tries: the agent may be
// between leaders.
const sessionDestroyWait = 10 * time.Second

// DestroySessions removes sessions and their instances through Raft,
// retrying for a while (sessionDestroyWait): the agent may be between
// leaders. Sessions it could not remove are this agent's and no longer
// served, so the session scan removes them once a leader answers.
func (k *Keeper) DestroySessions(ids ...string) {
	if k.cfg.Silenced() {
		return // a crashed agent says nothing; the cluster cleans up
	}
	ctx, cancel := context.WithTimeout(context.Background(), k.destroyWait)
	defer cancel()
	cmd := &pb.Command{Kind: &pb.Command_SessionDestroy{SessionDestroy: &pb.SessionDestroy{Ids: ids}}}
	for {
		_, err := k.cfg.Writer.Propose(ctx, cmd)
		if err == nil {
			k.log.Debug("sessions closed", "sessions", ids)
			return
		}
		if errors.Is(err, apierr.ErrShuttingDown) {
			k.log.Warn("could not close sessions: this agent is shutting down; they are closed when it starts again, or when the leader reaps it", "sessions", ids, "err", err)
			return
		}
		if ctx.Err() != nil {
			k.log.Warn("could not close sessions: no leader took the write; this agent's session scan closes them once one does", "sessions", ids, "for", k.destroyWait, "err", err)
			return
		}
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// RunSessionScan removes, every SessionScan until ctx ends, sessions this
// agent owns but does not serve: their streams died with an earlier
// process of this agent (crash, kill -9, restart). It also ends the streams
// of served sessions that the cluster removed.
func (k *Keeper) RunSessionScan(ctx context.Context) {
	t := time.NewTicker(k.cfg.SessionScan)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		k.scanSessions()
	}
}

// scanSessions is one look of RunSessionScan.
func (k *Keeper) scanSessions() {
	k.endRemovedSessions()
	if k.cfg.ReadReady() != nil {
		return
	}
	var orphans []string
	for _, s := range k.cfg.Replica.Sessions() {
		if s.Node == k.cfg.Agent && !k.sessions.has(s.Id) {
			orphans = append(orphans, s.Id)
		}
	}
	if len(orphans) > 0 {
		k.log.Info("closing sessions whose streams ended with an earlier run of this agent", "count", len(orphans))
		k.DestroySessions(orphans...)
	}
}

// endRemovedSessions ends the streams of served sessions that this replica
// no longer has although it applied their creation. A removal is a
// committed fact, so a replica that lags the leader may act on it.
func (k *Keeper) endRemovedSessions() {
	rev := k.cfg.Replica.Revision() // read first: a session created later is not judged
	exists := make(map[string]bool)
	for _, s := range k.cfg.Replica.Sessions() {
		exists[s.Id] = true
	}
	k.sessions.markRemoved(rev, exists)
}
