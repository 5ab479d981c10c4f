package raftstore

import (
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
)

// noiseWindow is how often a repeated warning about one peer is summarised
// while it goes on, and noiseQuiet how long it must not recur to count as
// over.
const (
	noiseWindow = 30 * time.Second
	noiseQuiet  = 30 * time.Second
	// maxNoisyPeers bounds the peers whose lines are collapsed apart:
	// the refused connections of the Raft port name their sender, and a
	// stranger with many addresses (an IPv6 prefix) would otherwise grow
	// the table, and the walk of it each line costs, without bound.
	// Past it, such lines collapse into one run about other peers.
	maxNoisyPeers = 1024
	// otherPeers names the run of lines about peers past maxNoisyPeers.
	otherPeers = "(other peers)"
)

// peerArgs are the keys under which raft names the peer a line is about.
var peerArgs = map[string]bool{"peer": true, "server-id": true, "target": true, "candidate": true, "from": true, "id": true}

// electionLines are what raft logs on every round of an election that
// finds no leader (twice or more a second while too few voters are
// reachable); after the first round they are collapsed into one run,
// counted by its rounds (electionRound), which the first line naming a
// leader or follower state ends (electionEnds).
var (
	electionLines = map[string]bool{
		electionRound: true,
		"pre-vote campaign failed, waiting for election timeout":                                                         true,
		"Election timeout reached, restarting election":                                                                  true,
		"heartbeat timeout reached, starting election":                                                                   true,
		"heartbeat timeout reached, not part of a stable configuration or a non-voter, not triggering a leader election": true,
	}
	electionEnds = map[string]bool{"entering leader state": true, "entering follower state": true}
)

const (
	electionRound = "entering candidate state"
	// electionRun is the message of the election run's summaries.
	electionRun = "elections without a leader"
)

// peerNoise collapses raft's repeated warnings and errors about one peer
// (a dead peer makes raft log "failed to heartbeat to" and "failed to
// appendEntries to" several times a second): the first line passes;
// while the same message about the same peer goes on, one summary line at
// most every noiseWindow says how often it came; and one line says when
// it stopped, if it came more than once: when a line below warning names
// the peer again (raft replicates to it, or back says it answers), or
// when it has not recurred for noiseQuiet. A peer is known by its server
// id, however a line names it. The rounds of an election without a leader
// collapse the same way (electionLines). Other lines that name no peer
// pass unchanged.
type peerNoise struct {
	mu       sync.Mutex
	now      func() time.Time
	resolve  atomic.Pointer[func(addr string) (id string, ok bool)] // a Raft address's server id
	episodes map[noiseKey]*noiseEpisode
	// suppressed counts the lines not written.
	suppressed uint64
}

type noiseKey struct{ component, msg, peer string }

// noiseEpisode is one run of a repeated line.
type noiseEpisode struct {
	level               slog.Level
	peerKey             string
	start, window, last time.Time
	total, inWindow     uint64
}

// noiseLine is a line peerNoise writes of its own.
type noiseLine struct {
	level slog.Level
	msg   string
	args  []any
}

func newPeerNoise(now func() time.Time) *peerNoise {
	return &peerNoise{now: now, episodes: make(map[noiseKey]*noiseEpisode)}
}

// filter judges one line (args as key, value pairs): pass says whether to
// write it, extra are lines to write before it (summaries, ends).
func (n *peerNoise) filter(level slog.Level, component, msg string, args []any) (pass bool, extra []noiseLine) {
	peerKey, peer := n.peerOf(args)
	election := electionLines[msg]
	n.mu.Lock()
	defer n.mu.Unlock()
	now := n.now()
	for k, ep := range n.episodes {
		peerBack := peer != "" && k.peer == peer && level < slog.LevelWarn
		if now.Sub(ep.last) >= noiseQuiet || peerBack || (k.msg == electionRun && electionEnds[msg]) {
			if ep.total > 1 { // a line that came once was written in full
				extra = append(extra, ep.ended(k))
			}
			delete(n.episodes, k)
		}
	}
	var k noiseKey
	switch {
	case election:
		k = noiseKey{component, electionRun, ""}
	case peer != "" && level >= slog.LevelWarn:
		k = noiseKey{component, msg, peer}
		if _, known := n.episodes[k]; !known && len(n.episodes) >= maxNoisyPeers {
			k.peer, peerKey = otherPeers, "peers"
		}
	default:
		return true, extra
	}
	ep := n.episodes[k]
	if ep == nil {
		ep = &noiseEpisode{level: level, peerKey: peerKey, start: now, window: now, last: now}
		n.episodes[k] = ep
		if !election {
			ep.total = 1
			return true, extra
		}
	}
	if election {
		// Counted by rounds; the first round is written in full, as an
		// election that finds a leader is.
		if msg == electionRound {
			ep.last = now
			ep.total++
			ep.inWindow++
		}
		if ep.total <= 1 {
			return true, extra
		}
		n.suppressed++
		if msg != electionRound {
			return false, extra
		}
	} else {
		ep.last = now
		ep.total++
		ep.inWindow++
		n.suppressed++
	}
	if now.Sub(ep.window) >= noiseWindow {
		line := noiseLine{level: max(level, ep.level), msg: fmt.Sprintf("%s (repeated %d times in the last %s)", k.msg, ep.inWindow, now.Sub(ep.window).Round(time.Second)), args: args}
		extra = append(extra, line)
		ep.window, ep.inWindow = now, 0
	}
	return false, extra
}

// ended is the line that says the episode of k is over.
func (ep *noiseEpisode) ended(k noiseKey) noiseLine {
	msg := fmt.Sprintf("%s: stopped after %d times in %s", k.msg, ep.total, ep.last.Sub(ep.start).Round(time.Second))
	var args []any
	if k.peer != "" {
		args = []any{ep.peerKey, k.peer}
	}
	if k.component != "" {
		args = append([]any{"component", k.component}, args...)
	}
	return noiseLine{level: slog.LevelInfo, msg: msg, args: args}
}

// suppressedLines returns how many lines were not written.
func (n *peerNoise) suppressedLines() uint64 {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.suppressed
}

// peerOf returns the key and the server id of the first argument that
// names a peer (raft names one by its Server, its ServerID or its
// ServerAddress, which resolve turns into its id when it knows it), or ""
// when none does.
func (n *peerNoise) peerOf(args []any) (key, peer string) {
	for i := 0; i+1 < len(args); i += 2 {
		if k, ok := args[i].(string); ok && peerArgs[k] {
			return k, n.peerName(args[i+1])
		}
	}
	return "", ""
}

func (n *peerNoise) peerName(v any) string {
	switch p := v.(type) {
	case raft.Server:
		return string(p.ID)
	case *raft.Server:
		if p != nil {
			return string(p.ID)
		}
	case raft.ServerID:
		return string(p)
	case raft.ServerAddress:
		if resolve := n.resolve.Load(); resolve != nil {
			if id, ok := (*resolve)(string(p)); ok {
				return id
			}
		}
		return string(p)
	}
	return fmt.Sprint(v)
}

// withPeerIDs appends, for each argument that names a peer by a Raft
// address resolve knows, the peer's server id under the argument's key
// plus "_id" (peer=10.0.0.3:8401 peer_id=n3), so the line names the agent.
func (n *peerNoise) withPeerIDs(args []any) []any {
	resolve := n.resolve.Load()
	if resolve == nil {
		return args
	}
	for i := 0; i+1 < len(args); i += 2 {
		k, ok := args[i].(string)
		addr, isAddr := args[i+1].(raft.ServerAddress)
		if !ok || !isAddr || !peerArgs[k] {
			continue
		}
		if id, ok := (*resolve)(string(addr)); ok {
			args = append(args, k+"_id", id)
		}
	}
	return args
}

// setResolve makes lines naming a peer by its Raft address count as lines
// about the server id resolve returns for it.
func (n *peerNoise) setResolve(resolve func(addr string) (id string, ok bool)) {
	n.resolve.Store(&resolve)
}
