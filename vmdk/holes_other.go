//go:build !linux

package vmdk

import "os"

// nextData: without SEEK_DATA every byte counts as data.
func NextData(f *os.File, off int64) (int64, bool) { return off, false }

// nextHole: without SEEK_HOLE no hole is known.
func NextHole(f *os.File, off int64) (int64, bool) { return 0, false }
