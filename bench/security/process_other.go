//go:build !linux

package security

import "syscall"

// childAttr: only Linux can tie a child's life to its parent's; elsewhere
// the load tool's own cleanup stops the children.
func childAttr() *syscall.SysProcAttr { return nil }
