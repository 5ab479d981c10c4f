package grpcapi

import (
	"fmt"
	"time"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
)

// Progress notifications (WatchManyRequest.progress_notify_ms), as etcd's
// progress_notify: a client that asks for them gets, once the stream has
// sent nothing for the interval it asked, a response of the stream
// (watch id 0) with no events and the revision the replica is at. They
// come from the stream's sender, the goroutine that sends its watches'
// events, so a client that hears neither events nor progress for several
// intervals, from an agent that answers its health checks, knows the
// stream's watches are stuck (a sender waiting on a lock) and resumes
// them on another agent. The first request that asks is answered at once,
// so the client knows this agent sends them; a client that never asks
// (one from before them) never gets one. Cost: one timer per stream
// (not per watch), armed only once the client asked, and one small
// message per interval while the stream is idle.

// minProgressInterval is the shortest interval of progress notifications
// an agent agrees to: a client asking for less gets one this often.
const minProgressInterval = 100 * time.Millisecond

// askProgress records the interval of progress notifications a request
// asks for, in milliseconds; zero leaves the stream's as it was. It is
// called by the receiver, and wakes the sender when the interval changed.
func (m *watchMux) askProgress(ms uint32) {
	if ms == 0 {
		return
	}
	every := max(time.Duration(ms)*time.Millisecond, minProgressInterval)
	if time.Duration(m.progressEvery.Swap(int64(every))) != every {
		m.signal()
	}
}

// progressInterval returns the interval of progress notifications the
// client asked for, 0 when it asked for none.
func (m *watchMux) progressInterval() time.Duration {
	return time.Duration(m.progressEvery.Load())
}

// sendProgress sends a progress notification of the stream: no events,
// the revision the replica is at.
func (m *watchMux) sendProgress(p *progressTimer) error {
	resp := &pb.WatchManyResponse{
		ProgressNotifyMs: uint32(p.every / time.Millisecond),
		Response: &pb.WatchResponse{Header: &pb.ResponseHeader{
			Revision: m.reg.cfg.Replica.Revision(), ServedBy: m.reg.cfg.Agent}},
	}
	if err := m.stream.Send(resp); err != nil {
		return fmt.Errorf("send watch progress: %w", err)
	}
	p.sent()
	return nil
}

// progressTimer is the sender's timer of progress notifications: one per
// stream, unarmed until the client asks for them. Used by the sender
// alone.
type progressTimer struct {
	every time.Duration // 0: the client asked for none
	t     *time.Timer
	last  time.Time // when the stream last sent (monotonic)
}

// agree takes every, the interval the client asks for, and reports
// whether it differs from the one in use (which is then to be answered
// with a notification at once).
func (p *progressTimer) agree(every time.Duration) bool {
	if every == p.every {
		return false
	}
	p.every = every
	if p.t == nil {
		p.t = time.NewTimer(every)
	} else {
		p.t.Reset(every)
	}
	return true
}

// due returns the timer's channel; nil (never ready) while unarmed.
func (p *progressTimer) due() <-chan time.Time {
	if p.t == nil {
		return nil
	}
	return p.t.C
}

// sent records that the stream sent a message.
func (p *progressTimer) sent() { p.last = time.Now() }

// idle, once the timer fired, reports whether the stream has sent nothing
// for an interval, and arms the timer for the next check.
func (p *progressTimer) idle() bool {
	if quiet := time.Since(p.last); quiet < p.every {
		p.t.Reset(p.every - quiet)
		return false
	}
	p.t.Reset(p.every)
	return true
}

func (p *progressTimer) stop() {
	if p.t != nil {
		p.t.Stop()
	}
}
