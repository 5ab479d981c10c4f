package gossip

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"

	"github.com/hashicorp/memberlist"
)

// Meta is what an agent tells its peers about itself. It travels in
// memberlist's node meta, so its encoding must fit in
// memberlist.MetaMaxSize (512) bytes.
type Meta struct {
	// Name is the agent's name, equal to its memberlist node name.
	Name string
	// GRPCAddr is the host:port of the agent's gRPC API.
	GRPCAddr string
	// RaftAddr is the host:port of the agent's Raft transport.
	RaftAddr string
	// Role is "server" for zrpcd agents.
	Role string
	// Build is the agent's build version.
	Build string
	// Zone is the failure domain (rack, availability zone) the agent runs in.
	Zone string
	// ClusterID names the cluster the agent belongs to; empty for an agent
	// that has not joined one yet. Members with different non-empty ids
	// refuse each other.
	ClusterID string
	// RecoveredFrom is the id the agent's cluster had before its last
	// outage recovery (`zrpcd agent recover`), if it had one: an agent
	// still in that cluster learns from it why it is refused.
	RecoveredFrom string
	// RaftHello says the agent's Raft transport reads the cluster hello
	// (raftstore, transport_hello.go); agents of older builds leave it
	// false.
	RaftHello bool
	// ShardsFull says the agent's shard store has no room for another
	// block's shard (its disk, or its shard_max_bytes): new shards go to
	// other agents.
	ShardsFull bool
	// ShardRoom is the room left in the agent's shard store in bytes,
	// rounded down to a power of two (so that it changes, and is
	// announced, seldom); 0 when the agent does not say (older builds).
	// A put of known size places no part on an agent without room for it.
	ShardRoom int64
	// Leaving says the agent is leaving the cluster for good and hands its
	// blob shards to the others first: it takes no new shard.
	Leaving bool
	// FSMVersion is the newest registry command semantics the agent's
	// build applies (raftstore.FSMVersion); 0 from builds before it was
	// announced, which apply version 1.
	FSMVersion int
	// NonVoter says the agent is never to be a Raft voter (its non_voter
	// setting): it keeps a replica, and the leader neither counts it to
	// bootstrap nor promotes it when a voter is lost.
	NonVoter bool
}

// ErrMetaTooLarge is returned (wrapped) when a Meta does not fit in
// memberlist's node meta.
var ErrMetaTooLarge = errors.New("meta too large")

// metaVersion is the version of the wire encoding below. A change that old
// agents cannot read bumps it; adding a field does not (decoders ignore
// unknown fields).
const metaVersion = 1

// wireMeta is Meta as sent: JSON with short keys.
type wireMeta struct {
	V        int    `json:"v"`
	Name     string `json:"name"`
	GRPCAddr string `json:"grpc,omitempty"`
	RaftAddr string `json:"raft,omitempty"`
	Role     string `json:"role,omitempty"`
	Build    string `json:"build,omitempty"`
	Zone     string `json:"zone,omitempty"`
	Cluster  string `json:"cluster,omitempty"`
	Former   string `json:"rf,omitempty"`
	Hello    bool   `json:"rh,omitempty"`
	Full     bool   `json:"sf,omitempty"`
	Room     int64  `json:"sr,omitempty"`
	FSM      int    `json:"fv,omitempty"`
	Leaving  bool   `json:"lv,omitempty"`
	NonVoter bool   `json:"nv,omitempty"`
	// Run is the agent's run id (Gossip.run), not part of Meta.
	Run string `json:"run,omitempty"`
}

// validate checks the fields both when encoding and after decoding.
func (m Meta) validate() error {
	if m.Name == "" {
		return errors.New("name is empty")
	}
	for _, a := range []struct{ field, addr string }{{"grpc address", m.GRPCAddr}, {"raft address", m.RaftAddr}} {
		if a.addr == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(a.addr); err != nil {
			return fmt.Errorf("%s %q is not host:port", a.field, a.addr)
		}
	}
	for _, id := range []struct{ field, id string }{{"cluster id", m.ClusterID}, {"recovered-from cluster id", m.RecoveredFrom}} {
		if len(id.id) > maxClusterID {
			return fmt.Errorf("%s is %d bytes, over %d", id.field, len(id.id), maxClusterID)
		}
		if _, err := hex.DecodeString(id.id); err != nil {
			return fmt.Errorf("%s %q is not hex", id.field, id.id)
		}
	}
	if m.ShardRoom < 0 {
		return fmt.Errorf("shard room %d is negative", m.ShardRoom)
	}
	if m.FSMVersion < 0 {
		return fmt.Errorf("fsm version %d is negative", m.FSMVersion)
	}
	return nil
}

// maxClusterID bounds a cluster id in meta (zrpc's are 32 hex digits).
const maxClusterID = 64

// runIDLen is the length of a run id (newRunID), and maxRunID the most
// a peer's meta may carry.
const (
	runIDLen = 16
	maxRunID = 64
)

// newRunID returns a random id for this run of the agent: peers tell a
// restarted agent from the run before it by it, also when it comes back
// at the same address with the same meta (memberlist's incarnation, which
// grows, is not shown to delegates).
func newRunID() string {
	var b [runIDLen / 2]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
	return hex.EncodeToString(b[:])
}

// encode returns m's wire form without a run id, checking memberlist's
// size limit.
func (m Meta) encode() ([]byte, error) {
	return m.encodeRun("")
}

// encodeRun returns m's wire form with the run id run, checking
// memberlist's size limit.
func (m Meta) encodeRun(run string) ([]byte, error) {
	if err := m.validate(); err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	w := wireMeta{V: metaVersion, Name: m.Name, GRPCAddr: m.GRPCAddr, RaftAddr: m.RaftAddr,
		Role: m.Role, Build: m.Build, Zone: m.Zone, Cluster: m.ClusterID, Former: m.RecoveredFrom, Hello: m.RaftHello, Full: m.ShardsFull, Room: m.ShardRoom, FSM: m.FSMVersion, Leaving: m.Leaving, NonVoter: m.NonVoter, Run: run}
	if err := enc.Encode(w); err != nil {
		return nil, fmt.Errorf("encode meta: %w", err)
	}
	b := bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
	if len(b) > memberlist.MetaMaxSize {
		return nil, fmt.Errorf("meta encodes to %d bytes, over memberlist's limit of %d: %w", len(b), memberlist.MetaMaxSize, ErrMetaTooLarge)
	}
	return b, nil
}

// decodeMeta parses and validates a peer's node meta. It never panics:
// anything it cannot read is an error.
func decodeMeta(b []byte) (Meta, error) {
	m, _, err := decodeMetaRun(b)
	return m, err
}

// decodeMetaRun is decodeMeta that also returns the peer's run id (""
// from builds that send none).
func decodeMetaRun(b []byte) (Meta, string, error) {
	if len(b) == 0 {
		return Meta{}, "", errors.New("decode meta: empty")
	}
	if len(b) > memberlist.MetaMaxSize {
		return Meta{}, "", fmt.Errorf("decode meta: %d bytes, over the limit of %d", len(b), memberlist.MetaMaxSize)
	}
	var w wireMeta
	if err := json.Unmarshal(b, &w); err != nil {
		return Meta{}, "", fmt.Errorf("decode meta: %w", err)
	}
	if w.V != metaVersion {
		return Meta{}, "", fmt.Errorf("decode meta: unsupported version %d (this build reads %d)", w.V, metaVersion)
	}
	if len(w.Run) > maxRunID {
		return Meta{}, "", fmt.Errorf("decode meta: run id is %d bytes, over %d", len(w.Run), maxRunID)
	}
	m := Meta{Name: w.Name, GRPCAddr: w.GRPCAddr, RaftAddr: w.RaftAddr, Role: w.Role, Build: w.Build, Zone: w.Zone, ClusterID: w.Cluster, RecoveredFrom: w.Former,
		RaftHello: w.Hello, ShardsFull: w.Full, ShardRoom: w.Room, FSMVersion: w.FSM, Leaving: w.Leaving, NonVoter: w.NonVoter}
	if err := m.validate(); err != nil {
		return Meta{}, "", fmt.Errorf("decode meta: %w", err)
	}
	return m, w.Run, nil
}
