//go:build !linux

package shardstore

import (
	"errors"
	"os"
)

// openDirectFile refuses: O_DIRECT is Linux's; parts are written buffered.
func openDirectFile(string) (*os.File, error) {
	return nil, errors.New("shardstore: direct writes are Linux only")
}

// adviseWillNeed does nothing: parts are written buffered here, so their
// pages are in the page cache already.
func adviseWillNeed(*os.File, int64, int64) {}
