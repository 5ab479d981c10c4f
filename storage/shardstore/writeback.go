package shardstore

import "os"

// writebackBytes is how many bytes a staged part takes between two starts
// of its writeback. A put's part files are fsynced only at its commit;
// without an early start the disk sees nothing until then, and the commit
// waits for the whole part to be written. Started every few MiB, the
// writing overlaps the receiving and the fsync finds little left to do.
const writebackBytes = 8 << 20

// startWriteback asks the kernel to begin writing f's dirty pages, without
// waiting for them (sync_file_range with SYNC_FILE_RANGE_WRITE on Linux;
// nothing elsewhere). It is advice: the commit's fsync is what makes the
// part durable and reports a failed write. A variable, so that tests can
// count the calls.
var startWriteback = func(f *os.File) { writeback(f) }
