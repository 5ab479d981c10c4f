// Package e2e holds end-to-end tests: they build the real zrpcd and zrpcctl
// binaries, run agents as processes on loopback, and drive them through the
// CLI as an operator would, including kill -9 and restart.
package e2e
