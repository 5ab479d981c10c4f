package ctlcmd

import (
	"cmp"
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/client"
)

// shardOK is the state of a readable shard in a BlobStatResponse.
const shardOK = "ok"

func newBlobStatCommand(o *options) *cobra.Command {
	var consistency string
	cmd := &cobra.Command{
		Use:   "stat NAME",
		Short: "Show a blob's metadata, health and where its shards are",
		Long: `Show the blob NAME: size, erasure coding (k+m), block size and count, SHA-256
digest, when it was stored, its health, and how many of its shards each
agent holds. Health is healthy, degraded (readable, some shards missing:
repair will rebuild them) or unreadable (a block has fewer than k readable
shards). A table then lists the shards that are not ok by the agent named
as their holder and their state, with how many there are and their blocks
(-o json lists each shard and its index in its block, 0 to k+m-1). States:
missing (never stored), node-failed (its agent is down), node-gone (its
agent left the cluster), corrupt (a read or the scrubber found its agent's
copy corrupt or gone, and repair has not rewritten it yet). Health is judged
from the registry, the agents' liveness and those reports, not by reading
the shards. A blob whose put has not finished is reported as not found,
saying so.

An agent whose copy of the registry lacks the blob says "not found" only
once it has caught up with the leader, or, with no leader, while its copy
is recent (as --consistency default reads of services); --consistency
stale answers from its copy whatever its age.`,
		Example: `  zrpcctl blob stat models/v3.bin
  zrpcctl blob stat models/v3.bin -o json | jq '.shards[] | select(.state != "ok")'`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			opts, err := readOptions(consistency)
			if err != nil {
				return err
			}
			return o.run(cmd, false, func(ctx context.Context, c *client.Client, p *printer) error {
				st, err := c.StatBlob(ctx, name, opts...)
				if err != nil {
					return blobExplain(fmt.Errorf("stat %s: %w", name, err), hintBlobNotFound)
				}
				return printStat(p, st)
			})
		},
	}
	cmd.Flags().StringVar(&consistency, "consistency", "default", consistencyUsage)
	return cmd
}

// printStat prints the blob's fields, then the shards that are not ok.
func printStat(p *printer, st *zrpcpb.BlobStatResponse) error {
	b := st.GetBlob()
	inline := len(b.GetBlocks()) == 0
	blocks := strconv.Itoa(len(b.GetBlocks()))
	if !inline {
		blocks += " of " + formatSize(uint64(b.GetBlockSize()))
	}
	err := p.fields(st, []field{
		{"Name", b.GetName()},
		{"ID", b.GetId()},
		{"Size", formatSizeExact(b.GetSize())},
		{"K+M", formatScheme(b.GetDataShards(), b.GetParityShards(), inline)},
		{"Blocks", blocks},
		{"SHA-256", hex.EncodeToString(b.GetSha256())},
		{"Created", formatTime(b.GetCreated())},
		{"Revision", fmt.Sprintf("%d (created at %d)", b.GetModRevision(), b.GetCreateRevision())},
		{"Health", st.GetHealth()},
		{"Shards per agent", shardsPerAgent(st.GetShards())},
	})
	if err != nil || p.json {
		return err
	}
	rows := notOKRows(st.GetShards())
	if len(rows) == 0 {
		return nil
	}
	if _, err := io.WriteString(p.w, "\nShards not ok:\n"); err != nil {
		return err
	}
	return p.table(nil, []string{"agent", "state", "shards", "blocks"}, rows)
}

// maxBlockRanges is the most block ranges a row of the shards not ok
// lists before it says how many more there are.
const maxBlockRanges = 8

// notOKRows groups the shards that are not ok by agent and state: how
// many there are, and their blocks as ranges ("0-19", "3, 7-9"). A row
// per shard made a table as long as the blob has blocks for each failed
// agent; -o json lists every shard, with its index in its block.
func notOKRows(shards []*zrpcpb.ShardState) [][]string {
	type group struct{ agent, state string }
	blocks := make(map[group][]uint32)
	count := make(map[group]int)
	for _, s := range shards {
		if s.GetState() == shardOK {
			continue
		}
		g := group{s.GetNode(), s.GetState()}
		blocks[g] = append(blocks[g], s.GetBlock())
		count[g]++
	}
	groups := make([]group, 0, len(blocks))
	for g := range blocks {
		groups = append(groups, g)
	}
	slices.SortFunc(groups, func(a, b group) int {
		return cmp.Or(strings.Compare(a.agent, b.agent), strings.Compare(a.state, b.state))
	})
	rows := make([][]string, len(groups))
	for i, g := range groups {
		rows[i] = []string{g.agent, g.state, strconv.Itoa(count[g]), blockRanges(blocks[g], maxBlockRanges)}
	}
	return rows
}

// blockRanges writes the distinct blocks as ranges of consecutive ones,
// at most max of them, then how many blocks the rest hold.
func blockRanges(blocks []uint32, max int) string {
	slices.Sort(blocks)
	blocks = slices.Compact(blocks)
	var parts []string
	for i := 0; i < len(blocks); {
		j := i
		for j+1 < len(blocks) && blocks[j+1] == blocks[j]+1 {
			j++
		}
		if len(parts) == max {
			parts = append(parts, fmt.Sprintf("... (%d more)", len(blocks)-i))
			break
		}
		if j == i {
			parts = append(parts, strconv.FormatUint(uint64(blocks[i]), 10))
		} else {
			parts = append(parts, fmt.Sprintf("%d-%d", blocks[i], blocks[j]))
		}
		i = j + 1
	}
	return strings.Join(parts, ", ")
}

// shardsPerAgent counts the shards each agent is named for, "n1 3, n2 3"
// sorted by agent; shards with no agent (missing) are not counted.
func shardsPerAgent(shards []*zrpcpb.ShardState) string {
	count := make(map[string]int)
	for _, s := range shards {
		if s.GetNode() != "" {
			count[s.GetNode()]++
		}
	}
	agents := make([]string, 0, len(count))
	for a := range count {
		agents = append(agents, a)
	}
	slices.Sort(agents)
	parts := make([]string, len(agents))
	for i, a := range agents {
		parts[i] = a + " " + strconv.Itoa(count[a])
	}
	return strings.Join(parts, ", ")
}
