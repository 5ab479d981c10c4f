package security

import "github.com/zrpcio/zrpc/bench/internal/proc"

// cpuMeter reads the CPU time of the processes a step loads, named, and
// of the load tool itself ("load"). CPU per call does not depend on how
// busy the machine is the way calls per second do.
type cpuMeter map[string]*proc.Process

// read returns each process's CPU time so far, in seconds; processes
// whose time cannot be read are left out.
func (m cpuMeter) read() map[string]float64 {
	out := map[string]float64{}
	for name, p := range m {
		if d, err := p.CPUTime(); err == nil {
			out[name] = d.Seconds()
		}
	}
	if d, err := proc.SelfCPUTime(); err == nil {
		out["load"] = d.Seconds()
	}
	return out
}

// perOp returns the CPU microseconds per call of each process between
// before and after.
func perOp(before, after map[string]float64, ops int) map[string]float64 {
	out := map[string]float64{}
	if ops == 0 {
		return out
	}
	for name, b := range before {
		if a, ok := after[name]; ok {
			out[name] = (a - b) * 1e6 / float64(ops)
		}
	}
	return out
}
