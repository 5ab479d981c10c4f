package raftstore

import pb "github.com/zrpcio/zrpc/api/zrpcpb"

// Session returns the session with id, or nil.
func (f *FSM) Session(id string) *pb.Session {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.sessions[id]
}
