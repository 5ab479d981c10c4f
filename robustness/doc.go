// Package robustness drives zrpc clusters with random traffic while random
// faults hit them, and checks what the clients saw against what zrpc
// promises, in the manner of etcd's tests/robustness and hashicorp/raft's
// fuzzy tests.
//
// Each run is generated from one seed, printed at its start: the cluster
// size, the traffic's choices and the schedule of faults (kills and
// restarts, partitions longer than failure detection, one-way packet loss,
// a slow Raft disk, leadership transfer, agents joining and leaving,
// damaged shard files) all come from it, so ROBUSTNESS_SEED=N replays a run
// (timing differs; the schedule does not). The checks: the registry history
// is linearizable with consistent reads and stays within the documented
// bounds with default and stale reads; watches deliver every event once in
// revision order and end at the registry's state; every acknowledged blob
// reads back byte-exact or fails loudly; after healing, all agents converge
// and no live agent has been reaped.
//
// The package holds only tests. The cluster runs skip unless ROBUSTNESS=1
// (set by `make robustness`); the tests of the checks themselves, on
// made-up histories, always run. docs/robustness.md says how to run them
// and lists the defects they found.
package robustness
