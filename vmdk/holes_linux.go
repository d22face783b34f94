package vmdk

import (
	"errors"
	"os"
	"syscall"
)

const (
	seekData = 3 // SEEK_DATA (Linux)
	seekHole = 4 // SEEK_HOLE
)

// nextData returns the offset of the first byte at or after off that the
// filesystem holds as data (past the end when only a hole follows), and
// false when the filesystem cannot tell. It lets a lookup skip grain
// tables that lie in holes, as qemu-img leaves them, and flat extent
// ranges never written, without reading them.
func NextData(f *os.File, off int64) (int64, bool) {
	d, err := f.Seek(off, seekData)
	if errors.Is(err, syscall.ENXIO) {
		return 1<<63 - 1, true
	}
	return d, err == nil
}

// nextHole returns the offset of the first hole at or after off (the
// file's end counts as one), and false when the filesystem cannot tell.
func NextHole(f *os.File, off int64) (int64, bool) {
	h, err := f.Seek(off, seekHole)
	return h, err == nil
}
