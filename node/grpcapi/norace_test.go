//go:build !race

package grpcapi

// raceAllocFactor is how many times more a code path allocates under the
// race detector than without it: 1 without it.
const raceAllocFactor = 1
