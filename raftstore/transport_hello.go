package raftstore

import (
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

// Raft's messages say nothing of the cluster they belong to, and a
// follower takes entries from any leader whose term is not behind its own:
// a leader whose configuration still names an address that now belongs to
// an agent of another cluster (an agent re-created on a reused IP, a data
// dir that founded a cluster of its own) would overwrite that agent's log
// with its own. So each new Raft connection opens with a hello that names
// the dialer's cluster, answered by the acceptor's; either side hangs up
// on an agent of another cluster, and says so. An agent that does not
// know its cluster yet (it is joining, or replaying its log) accepts any.
//
// Agents of older builds do not read hellos: Config.PeerHello says which
// peers do (gossip meta), and an acceptor takes connections without one
// as before, so a rolling upgrade goes on replicating.

// helloMagic opens a hello. Raft's transport starts a connection with an
// RPC type (0 to 4), never this byte.
const helloMagic byte = 0xf7

// helloVersion is the hello's format; a hello of another version is
// refused.
const helloVersion byte = 1

// maxHelloID bounds the cluster id a hello carries (zrpc's are 32 hex
// digits).
const maxHelloID = 64

// helloWait bounds the wait for the acceptor's answer to a hello.
const helloWait = 5 * time.Second

// errOtherCluster is why a hello is refused.
var errOtherCluster = errors.New("the Raft peer belongs to another cluster")

// writeHello sends a hello carrying cluster ("" when unknown).
func writeHello(w io.Writer, cluster string) error {
	if len(cluster) > maxHelloID {
		return fmt.Errorf("cluster id of %d bytes is over %d", len(cluster), maxHelloID)
	}
	b := append([]byte{helloMagic, helloVersion, byte(len(cluster))}, cluster...)
	_, err := w.Write(b)
	return err
}

// readHelloAfterMagic reads the rest of a hello whose magic byte was read.
func readHelloAfterMagic(r io.Reader) (string, error) {
	var hdr [2]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return "", fmt.Errorf("read Raft hello: %w", err)
	}
	if hdr[0] != helloVersion {
		return "", fmt.Errorf("raft hello version %d, this agent reads %d", hdr[0], helloVersion)
	}
	if hdr[1] > maxHelloID {
		return "", fmt.Errorf("raft hello names a cluster id of %d bytes, over %d", hdr[1], maxHelloID)
	}
	id := make([]byte, hdr[1])
	if _, err := io.ReadFull(r, id); err != nil {
		return "", fmt.Errorf("read Raft hello: %w", err)
	}
	return string(id), nil
}

// sameCluster reports whether agents of clusters a and b may talk: the
// same cluster, or one of them does not know its own yet.
func sameCluster(a, b string) bool { return a == "" || b == "" || a == b }

// hello is what the guard needs to greet peers: this agent's cluster id
// and which peers read hellos.
type hello struct {
	cluster func() string
	speaks  func(addr string) bool
}

// greets reports whether a connection to addr opens with a hello.
func (h *hello) greets(addr string) bool { return h != nil && h.speaks != nil && h.speaks(addr) }

// clusterID is this agent's cluster id, "" when unknown (or without a
// hello).
func (h *hello) clusterID() string {
	if h == nil || h.cluster == nil {
		return ""
	}
	return h.cluster()
}

// exchange sends a new connection's hello to the peer at addr and reads
// its answer: a peer of another cluster is an error naming both
// clusters. The caller closes conn when it fails.
func (h *hello) exchange(conn net.Conn, addr string) error {
	mine := h.clusterID()
	_ = conn.SetDeadline(time.Now().Add(helloWait))
	if err := writeHello(conn, mine); err != nil {
		return fmt.Errorf("send Raft hello to %s: %w", addr, err)
	}
	var magic [1]byte
	if _, err := io.ReadFull(conn, magic[:]); err != nil {
		return fmt.Errorf("raft peer %s did not answer the hello (an agent of another cluster hangs up): %w", addr, err)
	}
	if magic[0] != helloMagic {
		return fmt.Errorf("raft peer %s answered the hello with byte %#x", addr, magic[0])
	}
	theirs, err := readHelloAfterMagic(conn)
	if err != nil {
		return fmt.Errorf("raft peer %s: %w", addr, err)
	}
	if !sameCluster(mine, theirs) {
		return fmt.Errorf("%w: %s is in cluster %s, this agent in cluster %s; not replicating to it (its address may have been reused: `zrpcctl raft remove-peer` removes a server that is gone)",
			errOtherCluster, addr, theirs, mine)
	}
	_ = conn.SetDeadline(time.Time{})
	return nil
}
