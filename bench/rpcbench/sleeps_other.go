//go:build !linux

package rpcbench

import "errors"

var errNoSleeps = errors.New("thread sleeps are counted on Linux only")

func threadSleeps(int) (int64, error) { return 0, errNoSleeps }

func selfThreadSleeps() (int64, error) { return 0, errNoSleeps }
