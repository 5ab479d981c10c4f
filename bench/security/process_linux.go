package security

import "syscall"

// childAttr makes the kernel kill a child when the load tool's thread that
// started it exits, so no agent outlives a crashed or killed load tool.
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
