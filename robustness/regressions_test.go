package robustness

import (
	"fmt"
	"testing"
)

// regressions are seeds that once failed, kept so that every `make
// robustness` replays them. A seed replays its fault schedule and its
// clients' choices, not its exact timing, so a seed that found a defect may
// pass before the defect is fixed: it stays here all the same.
// docs/robustness.md tells what each one found.
var regressions = []struct {
	seed  uint64
	found string
}{
	{1, "a deleted shard file was never rebuilt; losing a second agent's shards then lost a block"},
	{2, "an agent healed from a partition was reaped; default reads after a restart saw revision 0 and after a heal a replica seconds behind"},
	{885059786, "the first leader, partitioned away and healed, was reaped while running"},
	{106595178, "default reads after one-way packet loss ended answered from a replica seconds behind, and after restarts revision 0"},
	{6, "writes through an agent reaped and healed, before it was back in the registry, were refused as InvalidArgument (instance.node is not an agent of this cluster)"},
	{135428438, "a session closed by its client under one-way packet loss stayed in the registry with its instances: the agent's handler waited forever"},
	{12, "closing the cluster hung: the leader's pipelined replication to a follower that rejected an entry deadlocked in hashicorp/raft's netPipeline"},
	{297587114, "the blob traffic took a length of 2^64-1 at offset 0 for a valid range (only from offset 2 on did it expect a refusal); the API refuses every length above 2^63-1"},
	{72137793, "a gRPC-checked instance whose server does not serve read 'awaiting first gRPC health check', then passing once its agent was alive again"},
	{136990113, "repair status read as idle while a failed shard rebuild waited for the next scan; losing a second agent's shards then left a block with 1 of 3 shards"},
	{872364585, "an agent whose disk was replaced, killed again before any leader sent it the log, restarted without --join and bootstrapped a cluster of its own"},
	{438010691, "a graceful leave took its blob shards away before repair rebuilt them; a disk replaced 0.5 s later left 2+1 blobs with 1 of 3 shards"},
	{411701270, "the blob check lost a second agent's shards while a flipped shard of the first was still undiscovered (its agent restarted mid-scrub): 1 of 3 shards; the check now runs a scrub pass on every agent first"},
	{36063962, "a gRPC-checked instance read 'agent failed: no gossip contact' for good after healing: its agent, marked failed, led next and recorded itself passing without its instances"},
	{453407841, "a 5-agent cluster never formed: a new agent was made a voter before it had the log, the leader stepped down under load, and the new voter refused every vote"},
	{745985658, "a restart could not bind its gRPC port: while the agent was down, the port (the kernel's pick at the first start) was the local port of an outgoing connection"},
	{761192877, "porcupine ran past its minute on one instance's history: writes on a cut-off agent failed at once, all of unknown outcome, ten times as fast as before"},
	{299858592, "a killed leader could not come back on its gRPC port: while it was down, another seed's agent had been given the same port (testport handed it out twice)"},
	{853733220, "a follower answered a default read from a replica older than stale_read_bound after a partition healed: the first request to reach it had been sent during the partition"},
	{148550434, "the same, on an agent that had led until the partition and so had never received a commit index before the delayed one"},
	{591110405, "the same refusal as seed 6 once the partition had outlasted gossip's memory of the reaped agent: the leader's gossip had forgotten it, not only marked it failed"},
}

func TestRegressions(t *testing.T) {
	skipUnlessEnabled(t)
	t.Parallel()
	if len(regressions) == 0 {
		t.Skip("no regression seeds recorded")
	}
	for _, reg := range regressions {
		t.Run(fmt.Sprintf("seed=%d", reg.seed), func(t *testing.T) {
			t.Parallel()
			t.Logf("robustness: regression: %s", reg.found)
			runSeed(t, reg.seed)
		})
	}
}
