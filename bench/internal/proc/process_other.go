//go:build !linux

package proc

import (
	"errors"
	"syscall"
	"time"
)

// childAttr: only Linux can tie a child's life to its parent's; elsewhere
// the benchmark's own cleanup stops the children.
func childAttr() *syscall.SysProcAttr { return nil }

var errNoProc = errors.New("process CPU time, memory and load: only measured on Linux")

// CPUTime is only measured on Linux.
func (p *Process) CPUTime() (time.Duration, error) { return 0, errNoProc }

// RSS is only measured on Linux.
func (p *Process) RSS() (int64, error) { return 0, errNoProc }

// CPUTimeOf is only measured on Linux.
func CPUTimeOf(pid int) (time.Duration, error) { return 0, errNoProc }

// RSSOf is only measured on Linux.
func RSSOf(pid int) (int64, error) { return 0, errNoProc }

// SelfCPUTime is only measured on Linux.
func SelfCPUTime() (time.Duration, error) { return 0, errNoProc }

// LoadAverage is only measured on Linux.
func LoadAverage() (float64, error) { return 0, errNoProc }
