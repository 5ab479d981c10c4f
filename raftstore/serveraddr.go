package raftstore

import (
	"fmt"
	"sync/atomic"

	"github.com/hashicorp/raft"
)

// serverAddrs is the transport's raft.ServerAddressProvider: the address
// Config.ServerAddr gives for a server (gossip's current view), else the
// one in the Raft configuration. Raft calls it before every RPC it sends,
// on its replication and election goroutines.
type serverAddrs struct {
	lookup func(id string) (string, bool)
	raft   atomic.Pointer[raft.Raft] // set once raft exists
}

func (p *serverAddrs) ServerAddr(id raft.ServerID) (raft.ServerAddress, error) {
	if addr, ok := p.lookup(string(id)); ok && addr != "" {
		return raft.ServerAddress(addr), nil
	}
	// The configuration's address is what raft falls back to anyway;
	// answering it spares a warning per RPC to a server gossip does not
	// know alive.
	if r := p.raft.Load(); r != nil {
		for _, s := range r.GetConfiguration().Configuration().Servers {
			if s.ID == id {
				return s.Address, nil
			}
		}
	}
	return "", fmt.Errorf("no address known for Raft server %s", id)
}
