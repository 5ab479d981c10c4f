package gossip

import (
	"encoding/binary"
	"log/slog"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/zrpcio/zrpc/internal/warnrate"
)

// Clock offsets. Each ack to a gossip probe carries the acking agent's
// wall clock; the prober compares it with the middle of the probe's round
// trip on its own clock. An agent's leader stamps times into the registry
// (health_since, put leases, request windows): an agent whose clock is
// off by seconds or hours is worth knowing of before it leads. The
// offsets are shown by Members, zrpcctl members, a metric, and a warning
// in the log.

// ClockSkewWarn is the offset past which a member's clock is reported as
// off (logged, and flagged by zrpcctl members).
const ClockSkewWarn = time.Second

// clockWarnEvery is how often the offset of one member is warned of while
// it stays past ClockSkewWarn.
const clockWarnEvery = 10 * time.Minute

const clockWarning = "a member's clock is off from this agent's: times stamped while the one whose clock is wrong leads (health_since, blob put leases) are off by as much; check time sync (NTP) on both"

// ackClockVersion tags the ack payload: one byte, then the acking agent's
// wall clock (Unix nanoseconds, big-endian int64).
const ackClockVersion = 1

const ackClockLen = 9

// maxClockNanos bounds the clock a peer may claim (year 2116), so that no
// subtraction overflows.
const maxClockNanos = int64(1) << 62

// clocks is the table of member clock offsets, memberlist's PingDelegate.
type clocks struct {
	now  func() time.Time
	log  *slog.Logger
	warn *warnrate.Limiter

	mu      sync.Mutex
	offsets map[string]time.Duration // member -> its clock minus this agent's
}

var _ memberlist.PingDelegate = (*clocks)(nil)

func newClocks(log *slog.Logger, now func() time.Time) *clocks {
	return &clocks{now: now, log: log, warn: warnrate.New(clockWarnEvery, 1024, now), offsets: make(map[string]time.Duration)}
}

// AckPayload is this agent's wall clock, sent with every ack.
func (c *clocks) AckPayload() []byte {
	b := make([]byte, ackClockLen)
	b[0] = ackClockVersion
	binary.BigEndian.PutUint64(b[1:], uint64(c.now().UnixNano()))
	return b
}

// NotifyPingComplete records other's clock offset from the payload of its
// ack: its clock minus the middle of the round trip on this agent's
// clock. Acks without a clock (older builds) or with one out of range
// are ignored.
func (c *clocks) NotifyPingComplete(other *memberlist.Node, rtt time.Duration, payload []byte) {
	if other == nil || len(payload) != ackClockLen || payload[0] != ackClockVersion || rtt < 0 {
		return
	}
	theirs := int64(binary.BigEndian.Uint64(payload[1:]))
	if theirs <= 0 || theirs > maxClockNanos {
		return
	}
	mid := c.now().Add(-rtt / 2).UnixNano()
	offset := time.Duration(theirs - mid)
	c.mu.Lock()
	_, known := c.offsets[other.Name]
	if known || len(c.offsets) < maxClockMembers {
		c.offsets[other.Name] = offset
	}
	c.mu.Unlock()
	if offset.Abs() >= ClockSkewWarn {
		if pass, _ := c.warn.Seen(other.Name); pass {
			c.log.Warn(clockWarning, "member", other.Name, "offset", offset.Round(time.Millisecond), "rtt", rtt.Round(time.Microsecond))
		}
	}
}

// maxClockMembers bounds the table; members are forgotten when they go.
const maxClockMembers = 1 << 16

// offset returns name's last measured clock offset.
func (c *clocks) offset(name string) (time.Duration, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	d, ok := c.offsets[name]
	return d, ok
}

// forget drops name's offset (it failed or left: it may come back with
// another clock).
func (c *clocks) forget(name string) {
	c.mu.Lock()
	delete(c.offsets, name)
	c.mu.Unlock()
}

// ClockOffset returns how far the member's wall clock was from this
// agent's at the last direct probe that reached it (positive: ahead), and
// whether one has been measured.
func (g *Gossip) ClockOffset(name string) (time.Duration, bool) {
	return g.clocks.offset(name)
}
