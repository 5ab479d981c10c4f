package rpcbench

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
)

// threadSleeps returns how many times the threads of process pid have
// blocked in the kernel so far (the sum of voluntary_ctxt_switches over
// /proc/<pid>/task/*/status). Each time a call is handed from one
// goroutine to another on a thread that then has nothing to run (a wake-up
// through a channel, the network poller or a futex), a thread sleeps, so
// the count per call tells extra hand-offs apart from work done on one
// thread. Threads that have exited are not counted; Go's rarely exit.
func threadSleeps(pid int) (int64, error) {
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/status", pid))
	if err != nil {
		return 0, err
	}
	if len(tasks) == 0 {
		return 0, fmt.Errorf("no threads of process %d in /proc", pid)
	}
	var total int64
	for _, path := range tasks {
		data, err := os.ReadFile(path)
		if err != nil {
			continue // the thread exited since the glob
		}
		n, err := voluntarySwitches(data)
		if err != nil {
			return 0, fmt.Errorf("%s: %w", path, err)
		}
		total += n
	}
	return total, nil
}

// voluntarySwitches reads the voluntary_ctxt_switches line of a
// /proc/<pid>/task/<tid>/status file.
func voluntarySwitches(status []byte) (int64, error) {
	lines := bufio.NewScanner(bytes.NewReader(status))
	for lines.Scan() {
		v, ok := bytes.CutPrefix(lines.Bytes(), []byte("voluntary_ctxt_switches:"))
		if ok {
			return strconv.ParseInt(string(bytes.TrimSpace(v)), 10, 64)
		}
	}
	return 0, fmt.Errorf("no voluntary_ctxt_switches line")
}

// selfThreadSleeps is threadSleeps of this process, from getrusage.
func selfThreadSleeps() (int64, error) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, fmt.Errorf("getrusage: %w", err)
	}
	return ru.Nvcsw, nil
}
