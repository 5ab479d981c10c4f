// Package fsmtest drives a registry replica in tests the way Raft does,
// without a Raft node: commands applied in batches at rising log indexes.
package fsmtest

import (
	"testing"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/raftstore"
)

// Writer applies registrations to a registry replica as Raft would.
type Writer struct {
	tb    testing.TB
	fsm   *raftstore.FSM
	index uint64
}

// NewWriter is a Writer of fsm whose failures fail tb.
func NewWriter(tb testing.TB, fsm *raftstore.FSM) *Writer {
	return &Writer{tb: tb, fsm: fsm}
}

// Register applies one batch registering insts, at the next log indexes.
func (w *Writer) Register(insts ...*pb.Instance) {
	w.tb.Helper()
	var logs []*raft.Log
	for _, inst := range insts {
		data, err := proto.Marshal(&pb.Command{Kind: &pb.Command_Register{Register: inst}})
		if err != nil {
			w.tb.Fatal(err)
		}
		w.index++
		logs = append(logs, &raft.Log{Index: w.index, Type: raft.LogCommand, Data: data})
	}
	for i, r := range w.fsm.ApplyBatch(logs) {
		if r != nil {
			w.tb.Fatalf("apply %d: %v", i, r)
		}
	}
}

// Index is the log index of the last command applied.
func (w *Writer) Index() uint64 { return w.index }
