package shardstore

import (
	"os"

	"github.com/zrpcio/zrpc/internal/writeback"
)

// writebackBytes is how many bytes a staged part takes between two starts
// of its writeback. A put's part files are fsynced only at its commit;
// without an early start the disk sees nothing until then, and the commit
// waits for the whole part to be written. Started every few MiB, the
// writing overlaps the receiving and the fsync finds little left to do.
const writebackBytes = writeback.Interval

// startWriteback is writeback.Start, a variable so that tests can count
// the calls.
var startWriteback = func(f *os.File) { writeback.Start(f) }
