package storage

import (
	"time"

	"github.com/zrpcio/zrpc/internal/fielderr"
)

// Config tunes the blob store. Zero fields take the defaults of
// DefaultConfig.
type Config struct {
	// BlockSize is the size of the blocks a blob is cut into.
	BlockSize int
	// InlineMax: blobs up to this size are stored in the metadata itself.
	InlineMax int
	// MaxBlobSize bounds one blob.
	MaxBlobSize int64
	// MaxMetadataBytes bounds one blob's metadata (one Raft entry); a put
	// that would need more is refused before it starts.
	MaxMetadataBytes int
	// PutInflight is how many blocks of one put may be in flight to agents
	// at once (memory per put ≈ PutInflight × BlockSize × (k+m)/k).
	PutInflight int
	// ShardTimeout bounds one shard transfer to or from an agent.
	ShardTimeout time.Duration
	// HolderLag is how long a read of a block waits for a holder that
	// sends nothing once the block's other shards asked for are in,
	// before it reads parity from other agents in place of that holder's
	// shards (when they have enough), and reads the rest of the blob
	// without it: a stopped agent (SIGSTOP, a paused VM) holds the read
	// that long instead of ShardTimeout.
	HolderLag time.Duration
	// RepairInterval is how often the leader scans for shards to repair.
	RepairInterval time.Duration
	// RepairDelay is how long an agent must have been failed before its
	// shards are rebuilt elsewhere (it may just be restarting).
	RepairDelay time.Duration
	// RepairWorkers rebuild shards concurrently.
	RepairWorkers int
	// PutTimeout: a put pending longer than this is aborted by the leader.
	PutTimeout time.Duration
	// PutLease is the lease of a client-striped put: the leader aborts it
	// unless the client renews it within this time (it renews at a third).
	PutLease time.Duration
	// OrphanGrace: a shard file no blob or pending put refers to is deleted
	// once it is this old (it may belong to a put this replica has not seen).
	OrphanGrace time.Duration
	// GCInterval is how often an agent looks for orphan shards.
	GCInterval time.Duration
	// ScrubRate is how many bytes per second the scrubber re-reads to find
	// bit rot; 0 turns scrubbing off.
	ScrubRate int64
	// ScrubInterval is the pause between two full scrub passes.
	ScrubInterval time.Duration
	// Now is the wall clock this agent stamps on the puts it begins and
	// reads put leases by (the leader's, stamped on the commands, is
	// another machine's); nil means time.Now. Tests shift it. File ages
	// (orphan collection) are read on the system clock that stamps them.
	Now func() time.Time
	// Lost, when set, returns the time this agent has not run since it
	// started (internal/stall): the leader moves its put leases' and
	// failed agents' clocks by it (repair's catchUp).
	Lost func() time.Duration
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{
		BlockSize:        1 << 20,
		InlineMax:        64 << 10,
		MaxBlobSize:      64 << 30,
		MaxMetadataBytes: MaxMetadataBytes,
		PutInflight:      4,
		ShardTimeout:     30 * time.Second,
		HolderLag:        time.Second,
		RepairInterval:   10 * time.Second,
		RepairDelay:      2 * time.Minute,
		RepairWorkers:    2,
		PutTimeout:       time.Hour,
		PutLease:         30 * time.Second,
		OrphanGrace:      10 * time.Minute,
		GCInterval:       time.Minute,
		ScrubRate:        8 << 20,
		ScrubInterval:    time.Hour,
	}
}

// Bounds of Config.BlockSize.
const (
	// MinBlockSize keeps a blob's metadata (16 bytes per block) and its
	// per-block work small next to the data.
	MinBlockSize = 4096
	// MaxBlockSize: a shard travels in one gRPC message.
	MaxBlockSize = 8 << 20
)

// Bounds of Config.PutLease. A client renews at a third of the lease, so
// a lease shorter than a second would be renewed all the time; one longer
// than ten minutes keeps a dead client's put, and its shards, that long.
const (
	MinPutLease = time.Second
	MaxPutLease = 10 * time.Minute
)

// withDefaults fills zero fields.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	fill := func(v *time.Duration, def time.Duration) {
		if *v == 0 {
			*v = def
		}
	}
	if c.BlockSize == 0 {
		c.BlockSize = d.BlockSize
	}
	if c.InlineMax == 0 {
		c.InlineMax = d.InlineMax
	}
	if c.MaxBlobSize == 0 {
		c.MaxBlobSize = d.MaxBlobSize
	}
	if c.MaxMetadataBytes == 0 {
		c.MaxMetadataBytes = d.MaxMetadataBytes
	}
	if c.PutInflight == 0 {
		c.PutInflight = d.PutInflight
	}
	if c.RepairWorkers == 0 {
		c.RepairWorkers = d.RepairWorkers
	}
	fill(&c.ShardTimeout, d.ShardTimeout)
	fill(&c.HolderLag, d.HolderLag)
	fill(&c.RepairInterval, d.RepairInterval)
	fill(&c.RepairDelay, d.RepairDelay)
	fill(&c.PutTimeout, d.PutTimeout)
	fill(&c.PutLease, d.PutLease)
	fill(&c.OrphanGrace, d.OrphanGrace)
	fill(&c.GCInterval, d.GCInterval)
	fill(&c.ScrubInterval, d.ScrubInterval)
	return c
}

// Validate reports every field of c out of bounds, all at once, each a
// *fielderr.Error naming the field. It checks c as given, so check a
// configuration built from DefaultConfig: New fills zero fields with
// defaults, Validate refuses the zero sizes and durations.
func (c Config) Validate() error {
	var l fielderr.List
	if c.BlockSize < MinBlockSize || c.BlockSize > MaxBlockSize {
		l.Addf("BlockSize", "%d must be between %d and %d bytes", c.BlockSize, MinBlockSize, MaxBlockSize)
	}
	if c.InlineMax < 0 || c.InlineMax > 1<<20 {
		l.Addf("InlineMax", "%d must be between 0 and 1 MiB", c.InlineMax)
	}
	if c.MaxMetadataBytes < 1 || c.MaxMetadataBytes > MaxMetadataBytes {
		l.Addf("MaxMetadataBytes", "%d must be between 1 and %d", c.MaxMetadataBytes, MaxMetadataBytes)
	}
	if c.MaxBlobSize <= 0 {
		l.Addf("MaxBlobSize", "%d must be positive", c.MaxBlobSize)
	}
	if c.PutInflight < 1 {
		l.Addf("PutInflight", "%d must be at least 1", c.PutInflight)
	}
	if c.RepairWorkers < 1 {
		l.Addf("RepairWorkers", "%d must be at least 1", c.RepairWorkers)
	}
	if c.ScrubRate < 0 {
		l.Addf("ScrubRate", "%d must not be negative (0 turns scrubbing off)", c.ScrubRate)
	}
	l.Positive("ShardTimeout", c.ShardTimeout)
	l.Positive("HolderLag", c.HolderLag)
	l.Positive("RepairInterval", c.RepairInterval)
	l.Positive("RepairDelay", c.RepairDelay)
	l.Positive("PutTimeout", c.PutTimeout)
	if c.PutLease < MinPutLease || c.PutLease > MaxPutLease {
		l.Addf("PutLease", "%v must be between %v and %v", c.PutLease, MinPutLease, MaxPutLease)
	}
	l.Positive("OrphanGrace", c.OrphanGrace)
	l.Positive("GCInterval", c.GCInterval)
	l.Positive("ScrubInterval", c.ScrubInterval)
	return l.Err()
}
