package grpcapi

import (
	"context"
	"errors"

	"github.com/zrpcio/zrpc/api/apierr"
	pb "github.com/zrpcio/zrpc/api/zrpcpb"
)

// A watch that asks for it (WatchRequest.require_leader) is refused while
// the agent is cut off from the Raft leader and ended when the agent
// becomes so (raftstore's LeaderContact), with UNAVAILABLE and reason
// STALE_READ: a client with other agents resumes it on one of them.

// leaderContact returns a context that ends when the agent loses contact
// with a leader, or why it has lost it now. Without
// RegistryConfig.LeaderContact the agent is always in contact.
func (s *Registry) leaderContact() (context.Context, error) {
	if s.cfg.LeaderContact == nil {
		return context.Background(), nil
	}
	return s.cfg.LeaderContact()
}

// cutOff reports whether err is the end of a watch that required a
// leader the agent lost contact with.
func cutOff(err error) bool { return errors.Is(err, apierr.ErrStaleRead) }

// armContact makes contact the one whose end ends the stream's watches
// that require a leader, after ending those of the contact it replaces
// if that one has ended. The caller holds m.mu.
func (m *watchMux) armContact(contact context.Context) {
	m.endCutOff()
	m.contact = contact
}

// contactLost returns a channel closed when the stream's contact ends
// (nil, never closed, when no watch requires a leader).
func (m *watchMux) contactLost() <-chan struct{} {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.contact == nil {
		return nil
	}
	return m.contact.Done()
}

// endCutOff ends, once the stream's contact has ended, the watches that
// required it, and queues the end of each for the client. The caller
// holds m.mu.
func (m *watchMux) endCutOff() {
	if m.contact == nil || m.contact.Err() == nil {
		return
	}
	cause := context.Cause(m.contact)
	m.contact = nil
	if !cutOff(cause) {
		return // the agent is closing, which ends the stream
	}
	n := 0
	for id, mw := range m.open {
		if !mw.requireLeader {
			continue
		}
		delete(m.open, id)
		mw.end()
		m.ends = append(m.ends, &pb.WatchManyResponse{WatchId: id, Ended: errorDetail(cause)})
		n++
	}
	if n > 0 {
		m.reg.log.Debug("ended watches that require a leader", "watches", n, "err", cause)
	}
}
