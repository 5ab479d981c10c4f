package raftstore

import (
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// noiseWindow is how often a repeated warning about one peer is summarised
// while it goes on, and noiseQuiet how long it must not recur to count as
// over.
const (
	noiseWindow = 30 * time.Second
	noiseQuiet  = 30 * time.Second
)

// peerArgs are the keys under which raft names the peer a line is about.
var peerArgs = map[string]bool{"peer": true, "server-id": true, "target": true, "candidate": true, "from": true}

// peerNoise collapses raft's repeated warnings and errors about one peer
// (a dead peer makes raft log "failed to heartbeat to" and "failed to
// appendEntries to" several times a second): the first line passes;
// while the same message about the same peer goes on, one summary line at
// most every noiseWindow says how often it came; and one line says when
// it stopped, if it came more than once: when a line below warning names
// the peer again (raft replicates to it), or when it has not recurred for
// noiseQuiet. Lines that name no peer pass unchanged.
type peerNoise struct {
	mu       sync.Mutex
	now      func() time.Time
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
	peerKey, peer := peerOf(args)
	n.mu.Lock()
	defer n.mu.Unlock()
	now := n.now()
	for k, ep := range n.episodes {
		if now.Sub(ep.last) >= noiseQuiet || (peer != "" && k.peer == peer && level < slog.LevelWarn) {
			if ep.total > 1 { // a line that came once was written in full
				extra = append(extra, ep.ended(k))
			}
			delete(n.episodes, k)
		}
	}
	if peer == "" || level < slog.LevelWarn {
		return true, extra
	}
	k := noiseKey{component, msg, peer}
	ep := n.episodes[k]
	if ep == nil {
		n.episodes[k] = &noiseEpisode{level: level, peerKey: peerKey, start: now, window: now, last: now, total: 1}
		return true, extra
	}
	ep.last = now
	ep.total++
	ep.inWindow++
	n.suppressed++
	if now.Sub(ep.window) >= noiseWindow {
		line := noiseLine{level: level, msg: fmt.Sprintf("%s (repeated %d times in the last %s)", msg, ep.inWindow, now.Sub(ep.window).Round(time.Second)), args: args}
		extra = append(extra, line)
		ep.window, ep.inWindow = now, 0
	}
	return false, extra
}

// ended is the line that says the episode of k is over.
func (ep *noiseEpisode) ended(k noiseKey) noiseLine {
	msg := fmt.Sprintf("%s: stopped after %d times in %s", k.msg, ep.total, ep.last.Sub(ep.start).Round(time.Second))
	args := []any{ep.peerKey, k.peer}
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

// peerOf returns the key and value of the first argument that names a
// peer, or "" when none does.
func peerOf(args []any) (key, peer string) {
	for i := 0; i+1 < len(args); i += 2 {
		if k, ok := args[i].(string); ok && peerArgs[k] {
			return k, fmt.Sprint(args[i+1])
		}
	}
	return "", ""
}
