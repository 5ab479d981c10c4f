// Package teststack finds goroutines by what their stacks hold, for tests
// that check a goroutine ended (or started, or waits where it should).
package teststack

import (
	"runtime"
	"slices"
	"strings"
)

// Goroutines returns the stacks of this process's goroutines that hold
// every one of funcs (as they appear in a stack: "pkg.(*T).method(") and,
// when state is not empty, whose status starts with state ("select",
// "chan receive").
func Goroutines(state string, funcs ...string) []string {
	buf := make([]byte, 1<<16)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	var out []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		header, _, _ := strings.Cut(g, "\n")
		if state != "" && !strings.Contains(header, "["+state) {
			continue
		}
		if !slices.ContainsFunc(funcs, func(fn string) bool { return !strings.Contains(g, fn) }) {
			out = append(out, g)
		}
	}
	return out
}
