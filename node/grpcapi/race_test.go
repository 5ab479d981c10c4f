//go:build race

package grpcapi

// raceAllocFactor is how many times more a code path allocates under the
// race detector, which instruments allocations, than without it.
const raceAllocFactor = 8
