//go:build !linux

package security

import (
	"errors"
	"syscall"
	"time"
)

// childAttr: only Linux can tie a child's life to its parent's; elsewhere
// the load tool's own cleanup stops the children.
func childAttr() *syscall.SysProcAttr { return nil }

var errNoCPUTime = errors.New("CPU time of a process: only measured on Linux")

func (p *process) cpuTime() (time.Duration, error) { return 0, errNoCPUTime }

func selfCPUTime() (time.Duration, error) { return 0, errNoCPUTime }
